// 2-D convolution (NCHW, groups = 1) as implicit GEMM: the im2col matrix is never built; the
// tile loaders of ember_tile_gemm (ember_cuda.h) compute each element's input position on the
// fly, from a part per output position and a part per kernel tap, each computed once. The CPU reference is ops/conv/cpu/, where the same three products are explicit:
//
//   forward          y[n]  = W · col(x[n])          M = c_out, N = n·ho·wo, K = c_in·kh·kw
//   backward data    dx    = Wᵀ ⋆ dy                 M = c_in,  N = n·h·w,   K = c_out·kh·kw
//   backward weight  dW    = Σₙ dy[n] · col(x[n])ᵀ   M = c_out, N = c_in·kh·kw, K = n·ho·wo
//
// Backward data is a gather, not col2im's scatter: each dx element sums the dy elements whose
// window covers it (oh = (ih + p − ki·d) / s when that divides exactly), so no atomics.
// Backward weight has a long K and few tiles, so blockIdx.z splits K and each split writes
// its partial dW; the host sums the partials (a deterministic reduction, no atomics).
//
// Tiling: ember_tile_gemm (ember_cuda.h): blocks of 256 threads on 128×128 tiles, 8×8 outputs
// per thread (the `_t128` kernels), or on 64×64 tiles, 4×4 per thread (`_t64`, for outputs
// with few tiles); 8-deep panels.
#include "ember_cuda.h"

// The im2col element col(x)[(ci, ki, kj), (image, oh, ow)], split as ember_tile_gemm wants
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
template <int TILE>
__device__ __forceinline__ void conv2d_forward(const float* x, const float* w, const float* bias, float* y, const EmberConv& g) {
    ForwardOperands operands{x, w, g};
    int m = g.c_out, n = g.n * g.ho * g.wo, k = g.c_in * g.kh * g.kw;
    int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
    float acc[TILE / 16][TILE / 16];
    ember_tile_gemm<TILE>(operands, m, n, 0, k, row0, col0, acc);
    ember_tile_store<TILE>(m, n, row0, col0, acc, [&](int co, int col, float value) {
        int image = col / (g.ho * g.wo), q = col % (g.ho * g.wo);
        y[((long long)image * g.c_out + co) * (g.ho * g.wo) + q] = bias ? value + bias[co] : value;
    });
}

extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 1)
conv2d_forward_f32_t128(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                        float* __restrict__ y, EmberConv g) {
    conv2d_forward<128>(x, w, bias, y, g);
}

extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS)
conv2d_forward_f32_t64(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                       float* __restrict__ y, EmberConv g) {
    conv2d_forward<64>(x, w, bias, y, g);
}

// Backward data: A = Wᵀ [c_in, (co, ki, kj)], B = dy gathered [(co, ki, kj), (n, ih, iw)]:
// dy[image, co, oh, ow] with oh = (ih + p − ki·d) / s when that divides exactly and lands
// inside, else 0.
struct BackwardDataOperands {
    struct Row {
        int offset;  // ci·kh·kw
    };
    struct Col {
        int base;    // image·c_out·ho·wo
        int ih, iw;
    };
    struct Depth {
        int w_offset;   // co·c_in·kh·kw + ki·kw + kj
        int dy_offset;  // co·ho·wo
        int dh, dw;     // p − ki·d, p − kj·d
    };
    const float* dy;
    const float* w;
    EmberConv g;
    __device__ Row row(int ci) const { return {ci * g.kh * g.kw}; }
    __device__ Col col(int col) const {
        int image = col / (g.h * g.w), q = col % (g.h * g.w);
        return {image * g.c_out * g.ho * g.wo, q / g.w, q % g.w};
    }
    __device__ Depth depth(int kk) const {
        int co = kk / (g.kh * g.kw), r = kk % (g.kh * g.kw);
        return {co * g.c_in * g.kh * g.kw + r, co * g.ho * g.wo, g.pad_h - r / g.kw * g.dilation_h,
                g.pad_w - r % g.kw * g.dilation_w};
    }
    __device__ float a(const Row& row, const Depth& depth) const { return w[depth.w_offset + row.offset]; }
    __device__ float b(const Depth& depth, const Col& col) const {
        int oh = col.ih + depth.dh, ow = col.iw + depth.dw;
        if (g.stride_h != 1 || g.stride_w != 1) {
            if (oh < 0 || ow < 0 || oh % g.stride_h != 0 || ow % g.stride_w != 0) return 0.0f;
            oh /= g.stride_h;
            ow /= g.stride_w;
        }
        if ((unsigned)oh >= (unsigned)g.ho || (unsigned)ow >= (unsigned)g.wo) return 0.0f;
        return dy[col.base + depth.dy_offset + oh * g.wo + ow];
    }
};

// dx = the gradient of conv(x, w) with respect to x, given dy (also conv_transpose2d's forward).
template <int TILE>
__device__ __forceinline__ void conv2d_backward_input(const float* dy, const float* w, float* dx, const EmberConv& g) {
    BackwardDataOperands operands{dy, w, g};
    int m = g.c_in, n = g.n * g.h * g.w, k = g.c_out * g.kh * g.kw;
    int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
    float acc[TILE / 16][TILE / 16];
    ember_tile_gemm<TILE>(operands, m, n, 0, k, row0, col0, acc);
    ember_tile_store<TILE>(m, n, row0, col0, acc, [&](int ci, int col, float value) {
        int image = col / (g.h * g.w), q = col % (g.h * g.w);
        dx[((long long)image * g.c_in + ci) * (g.h * g.w) + q] = value;
    });
}

extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 1)
conv2d_backward_input_f32_t128(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
                               EmberConv g) {
    conv2d_backward_input<128>(dy, w, dx, g);
}

extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS)
conv2d_backward_input_f32_t64(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
                              EmberConv g) {
    conv2d_backward_input<64>(dy, w, dx, g);
}

// Backward weight: A = dy [c_out, (n, oh, ow)], B = col(x)ᵀ [(n, oh, ow), (ci, ki, kj)]: the
// forward's im2col with the roles of depth and column exchanged.
struct BackwardWeightOperands {
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
template <int TILE>
__device__ __forceinline__ void conv2d_backward_weight(const float* x, const float* dy, float* partial, const EmberConv& g,
                                                       int split_len) {
    BackwardWeightOperands operands{x, dy, g};
    int m = g.c_out, n = g.c_in * g.kh * g.kw, k = g.n * g.ho * g.wo;
    int k_begin = blockIdx.z * split_len, k_end = min(k, k_begin + split_len);
    int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
    float acc[TILE / 16][TILE / 16];
    ember_tile_gemm<TILE>(operands, m, n, k_begin, k_end, row0, col0, acc);
    float* out = partial + (long long)blockIdx.z * m * n;
    ember_tile_store<TILE>(m, n, row0, col0, acc, [&](int co, int col, float value) { out[(long long)co * n + col] = value; });
}

extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 1)
conv2d_backward_weight_f32_t128(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partial,
                                EmberConv g, int split_len) {
    conv2d_backward_weight<128>(x, dy, partial, g, split_len);
}

extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS)
conv2d_backward_weight_f32_t64(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partial,
                               EmberConv g, int split_len) {
    conv2d_backward_weight<64>(x, dy, partial, g, split_len);
}
