// 2-D convolution (NCHW, groups = 1) as implicit GEMM: the im2col matrix is never built; the
// tile loaders of ember_tile_gemm (ember_cuda.h) compute each element's input position on the
// fly, from a part per output position and a part per kernel tap, each computed once. The CPU reference is ops/conv/cpu/, where the same three products are explicit:
//
//   forward          y[n]  = W · col(x[n])          M = c_out, N = n·ho·wo, K = c_in·kh·kw
//   backward data    dx    = Wᵀ ⋆ dy                 M = c_in,  N = n·h·w,   K = c_out·kh·kw
//   backward weight  dW    = Σₙ dy[n] · col(x[n])ᵀ   M = c_out, N = c_in·kh·kw, K = n·ho·wo
//
// Backward data is a gather, not col2im's scatter: each dx element sums the dy elements whose
// window covers it (oh = (ih + p − ki·d) / s when that divides exactly), so no atomics; with
// stride s > 1 it runs per sub-pixel class of input positions over that class's taps only
// (no zero taps).
// Backward weight has a long K and few tiles, so blockIdx.z splits K and each split writes
// its partial dW; the host sums the partials (a deterministic reduction, no atomics).
//
// Tiling: the products of ember_cuda.h, blocks of 256 threads on 128×128 tiles (the `_t128`
// kernels) or on 64×64 tiles (`_t64`, for outputs with few tiles), each in exact f32 on FMA
// units (`_f32_`, ember_tile_gemm) and on tensor cores in TF32 or with bf16 inputs (`_tf32_`,
// `_bf16_`: ember_tile_gemm_tf32, ember_tile_gemm_bf16, by the thread's precision):
// EMBER_TILED_KERNELS.
#include "ember_cuda.h"

// The im2col element col(x)[(ci, ki, kj), (image, oh, ow)], split as the tiles want
// (ember_cuda.h): the input pixel under kernel tap (ki, kj) of output position (oh, ow) is
// x[image, ci, oh·s + ki·d − p, ow·s + kj·d − p], or 0 in the padding; its address is a
// part that depends on the output position (ConvPixel) plus one that depends on the tap
// (ConvTap).
struct ConvPixel {
    int base;        // image·c_in·h·w + oh·s·w + ow·s
    int oh_s, ow_s;  // oh·s, ow·s
};
struct ConvTap {
    int offset;  // ci·h·w + dh·w + dw
    int dh, dw;  // ki·d − p, kj·d − p
};

// Position `col` = (image, oh, ow) of the output.
__device__ __forceinline__ ConvPixel conv_pixel(const EmberConv& g, int col) {
    int image = col / (g.ho * g.wo), q = col % (g.ho * g.wo);
    int oh_s = q / g.wo * g.stride_h, ow_s = q % g.wo * g.stride_w;
    return {image * g.c_in * g.h * g.w + oh_s * g.w + ow_s, oh_s, ow_s};
}

// Tap `kk` = (ci, ki, kj) of the kernel.
__device__ __forceinline__ ConvTap conv_tap(const EmberConv& g, int kk) {
    int ci = kk / (g.kh * g.kw), r = kk % (g.kh * g.kw);
    int dh = r / g.kw * g.dilation_h - g.pad_h, dw = r % g.kw * g.dilation_w - g.pad_w;
    return {ci * g.h * g.w + dh * g.w + dw, dh, dw};
}

__device__ __forceinline__ float im2col_value(const float* x, const EmberConv& g, const ConvPixel& pixel, const ConvTap& tap) {
    int ih = pixel.oh_s + tap.dh, iw = pixel.ow_s + tap.dw;
    return ((unsigned)ih < (unsigned)g.h && (unsigned)iw < (unsigned)g.w) ? x[pixel.base + tap.offset] : 0.0f;
}

// Forward: A = W [c_out, c_in·kh·kw], B = col(x) [(ci, ki, kj), (n, oh, ow)].
struct ForwardOperands {
    static constexpr bool a_depth_fast = true;   // W's rows are contiguous
    static constexpr bool b_depth_fast = false;  // B's columns (output pixels) are contiguous
    struct Row {
        int offset;  // co·c_in·kh·kw
    };
    using Col = ConvPixel;
    struct Depth {
        ConvTap tap;
        int kk;
    };
    const float* x;
    const float* w;
    EmberConv g;
    __device__ Row row(int co) const { return {co * g.c_in * g.kh * g.kw}; }
    __device__ Col col(int col) const { return conv_pixel(g, col); }
    __device__ Depth depth(int kk) const { return {conv_tap(g, kk), kk}; }
    __device__ float a(const Row& row, const Depth& depth) const { return w[row.offset + depth.kk]; }
    __device__ float b(const Depth& depth, const Col& pixel) const { return im2col_value(x, g, pixel, depth.tap); }
};

// y = conv(x, w) (+ bias[c_out] when bias is not null).
template <class Product>
__device__ __forceinline__ void conv2d_forward(const float* x, const float* w, const float* bias, float* y, const EmberConv& g) {
    ForwardOperands operands{x, w, g};
    int m = g.c_out, n = g.n * g.ho * g.wo, k = g.c_in * g.kh * g.kw;
    int row0 = blockIdx.y * Product::size, col0 = blockIdx.x * Product::size;
    typename Product::Acc acc;
    Product::multiply(operands, m, n, 0, k, row0, col0, acc);
    Product::store(m, n, row0, col0, acc, [&](int co, int col, float value) {
        int image = col / (g.ho * g.wo), q = col % (g.ho * g.wo);
        y[((long long)image * g.c_out + co) * (g.ho * g.wo) + q] = bias ? value + bias[co] : value;
    });
}

EMBER_TILED_KERNELS(conv2d_forward,
                    (const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y, EmberConv g),
                    (x, w, bias, y, g))

// Backward data, one sub-pixel class at a time. With stride s, input row ih receives from
// kernel row ki only if ih + p − ki·d is a multiple of s (then oh = (ih + p − ki·d) / s):
// which ki those are depends on ih mod s alone. So the input rows split into s classes
// r = ih mod s, each a GEMM over its own taps only (a 3×3 stride-2 kernel: 1 or 2 taps per
// axis instead of 3 of which 1 or 2 are zeros: a quarter of the products), and likewise
// columns; the host launches one GEMM per class (r_h, r_w). A class's taps on an axis are
// ki = first + step·j for j < taps (step = s / gcd(s, d)), and for input row ih = r + s·i the
// output row is oh = i + base(ki), base(ki) = (r + p − ki·d) / s exactly. Stride 1 is one
// class with every tap: the plain gather.
//
//   A = Wᵀ [c_in, (co, tap)], B = dy gathered [(co, tap), (image, i, j)]: dy[image, co,
//   i + base_h, j + base_w] when that lands inside, else 0. M = c_in, N = n·h_r·w_r,
//   K = c_out·taps_h·taps_w.

// The taps of class r on one axis (kernel size k, padding p, dilation d, stride s).
struct ConvAxisClass {
    int first, step, taps;
    int size;  // input positions in the class: ⌈(extent − r) / s⌉
};

__device__ __forceinline__ ConvAxisClass conv_axis_class(int r, int extent, int k, int p, int d, int s) {
    int a = s, b = d;  // gcd(s, d), for the step between a class's taps
    while (b != 0) {
        int t = a % b;
        a = b;
        b = t;
    }
    ConvAxisClass c{-1, s / a, 0, r < extent ? (extent - r + s - 1) / s : 0};
    for (int ki = 0; ki < c.step && ki < k; ki++)
        if ((r + p - ki * d) % s == 0) {
            c.first = ki;
            break;
        }
    if (c.first >= 0) c.taps = (k - c.first + c.step - 1) / c.step;
    return c;
}

struct BackwardDataOperands {
    static constexpr bool a_depth_fast = true;   // neither axis of Wᵀ is contiguous; its depth varies the tap
    static constexpr bool b_depth_fast = false;  // B's columns (input pixels of the class) are contiguous
    struct Row {
        int offset;  // ci·kh·kw
    };
    struct Col {
        int base;  // image·c_out·ho·wo
        int i, j;  // the position in the class: ih = r_h + s·i, iw = r_w + s·j
    };
    struct Depth {
        int w_offset;    // co·c_in·kh·kw + ki·kw + kj
        int dy_offset;   // co·ho·wo + base_h·wo + base_w
        int base_h, base_w;
    };
    const float* dy;
    const float* w;
    EmberConv g;
    int r_h, r_w;
    ConvAxisClass rows_class, cols_class;
    __device__ BackwardDataOperands(const float* dy, const float* w, const EmberConv& g, int r_h, int r_w)
        : dy(dy), w(w), g(g), r_h(r_h), r_w(r_w),
          rows_class(conv_axis_class(r_h, g.h, g.kh, g.pad_h, g.dilation_h, g.stride_h)),
          cols_class(conv_axis_class(r_w, g.w, g.kw, g.pad_w, g.dilation_w, g.stride_w)) {}
    __device__ int columns() const { return g.n * rows_class.size * cols_class.size; }
    __device__ int depth_length() const { return g.c_out * rows_class.taps * cols_class.taps; }
    __device__ Row row(int ci) const { return {ci * g.kh * g.kw}; }
    __device__ Col col(int col) const {
        int per_image = rows_class.size * cols_class.size;
        int image = col / per_image, q = col % per_image;
        return {image * g.c_out * g.ho * g.wo, q / cols_class.size, q % cols_class.size};
    }
    __device__ Depth depth(int kk) const {
        int taps = rows_class.taps * cols_class.taps;
        int co = kk / taps, tap = kk % taps;
        int ki = rows_class.first + rows_class.step * (tap / cols_class.taps);
        int kj = cols_class.first + cols_class.step * (tap % cols_class.taps);
        int base_h = (r_h + g.pad_h - ki * g.dilation_h) / g.stride_h;
        int base_w = (r_w + g.pad_w - kj * g.dilation_w) / g.stride_w;
        return {co * g.c_in * g.kh * g.kw + ki * g.kw + kj, co * g.ho * g.wo + base_h * g.wo + base_w, base_h, base_w};
    }
    __device__ float a(const Row& row, const Depth& depth) const { return w[depth.w_offset + row.offset]; }
    __device__ float b(const Depth& depth, const Col& col) const {
        int oh = col.i + depth.base_h, ow = col.j + depth.base_w;
        if ((unsigned)oh >= (unsigned)g.ho || (unsigned)ow >= (unsigned)g.wo) return 0.0f;
        return dy[col.base + depth.dy_offset + col.i * g.wo + col.j];
    }
};

// dx at the input positions of class (r_h, r_w) = the gradient of conv(x, w) with respect to
// x there, given dy (also conv_transpose2d's forward). A class with no taps gets zeros.
template <class Product>
__device__ __forceinline__ void conv2d_backward_input(const float* dy, const float* w, float* dx, const EmberConv& g,
                                                      int r_h, int r_w) {
    BackwardDataOperands operands(dy, w, g, r_h, r_w);
    int m = g.c_in, n = operands.columns(), k = operands.depth_length();
    int row0 = blockIdx.y * Product::size, col0 = blockIdx.x * Product::size;
    typename Product::Acc acc;
    Product::multiply(operands, m, n, 0, k, row0, col0, acc);
    Product::store(m, n, row0, col0, acc, [&](int ci, int col, float value) {
        int per_image = operands.rows_class.size * operands.cols_class.size, q = col % per_image;
        int image = col / per_image;
        int ih = r_h + g.stride_h * (q / operands.cols_class.size), iw = r_w + g.stride_w * (q % operands.cols_class.size);
        dx[(((long long)image * g.c_in + ci) * g.h + ih) * g.w + iw] = value;
    });
}

EMBER_TILED_KERNELS(conv2d_backward_input,
                    (const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx, EmberConv g,
                     int r_h, int r_w),
                    (dy, w, dx, g, r_h, r_w))

// Backward weight: A = dy [c_out, (n, oh, ow)], B = col(x)ᵀ [(n, oh, ow), (ci, ki, kj)]: the
// forward's im2col with the roles of depth and column exchanged.
struct BackwardWeightOperands {
    static constexpr bool a_depth_fast = true;  // dy's depth (the pixel) is contiguous
    static constexpr bool b_depth_fast = true;  // B's depth (the pixel) is contiguous in x, its columns (taps) are not
    struct Row {
        int offset;  // co·ho·wo
    };
    using Col = ConvTap;
    struct Depth {
        ConvPixel pixel;
        int dy_offset;  // image·c_out·ho·wo + oh·wo + ow
    };
    const float* x;
    const float* dy;
    EmberConv g;
    __device__ Row row(int co) const { return {co * g.ho * g.wo}; }
    __device__ Col col(int kk) const { return conv_tap(g, kk); }
    __device__ Depth depth(int k) const {
        int image = k / (g.ho * g.wo), q = k % (g.ho * g.wo);
        return {conv_pixel(g, k), image * g.c_out * g.ho * g.wo + q};
    }
    __device__ float a(const Row& row, const Depth& depth) const { return dy[depth.dy_offset + row.offset]; }
    __device__ float b(const Depth& depth, const Col& tap) const { return im2col_value(x, g, depth.pixel, tap); }
};

// partial[z] = the part of dW from depths [z·split_len, (z+1)·split_len) of K = n·ho·wo.
template <class Product>
__device__ __forceinline__ void conv2d_backward_weight(const float* x, const float* dy, float* partial, const EmberConv& g,
                                                       int split_len) {
    BackwardWeightOperands operands{x, dy, g};
    int m = g.c_out, n = g.c_in * g.kh * g.kw, k = g.n * g.ho * g.wo;
    int k_begin = blockIdx.z * split_len, k_end = min(k, k_begin + split_len);
    int row0 = blockIdx.y * Product::size, col0 = blockIdx.x * Product::size;
    typename Product::Acc acc;
    Product::multiply(operands, m, n, k_begin, k_end, row0, col0, acc);
    float* out = partial + (long long)blockIdx.z * m * n;
    Product::store(m, n, row0, col0, acc, [&](int co, int col, float value) { out[(long long)co * n + col] = value; });
}

EMBER_TILED_KERNELS(conv2d_backward_weight,
                    (const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partial, EmberConv g, int split_len),
                    (x, dy, partial, g, split_len))
