// 2-D convolution (NCHW, groups = 1) as implicit GEMM: the im2col matrix is never built; the
// tile loaders of ember_tile_gemm (ember_cuda.h) compute each element's input position on the
// fly. The CPU reference is cpu/conv.rs, where the same three products are explicit:
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

// The im2col element col(x)[(ci, ki, kj), (image, oh, ow)]: the input pixel under kernel tap
// (ki, kj) of output position (oh, ow), or 0 in the padding. `kk` = (ci, ki, kj) flattened.
__device__ __forceinline__ float im2col_value(const float* x, const EmberConv& g, int kk, int image, int oh, int ow) {
    int ci = kk / (g.kh * g.kw), r = kk % (g.kh * g.kw), ki = r / g.kw, kj = r % g.kw;
    int ih = oh * g.stride_h - g.pad_h + ki * g.dilation_h;
    int iw = ow * g.stride_w - g.pad_w + kj * g.dilation_w;
    if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) return 0.0f;
    return x[(((long long)image * g.c_in + ci) * g.h + ih) * g.w + iw];
}

// Forward: A = W [c_out, c_in·kh·kw], B = col(x) [(ci, ki, kj), (n, oh, ow)].
struct ForwardOperands {
    static constexpr bool b_depth_fast = false;  // consecutive columns are consecutive pixels
    const float* x;
    const float* w;
    EmberConv g;
    __device__ float a(int co, int kk) const { return w[(long long)co * (g.c_in * g.kh * g.kw) + kk]; }
    __device__ float b(int kk, int col) const {
        int image = col / (g.ho * g.wo), q = col % (g.ho * g.wo);
        return im2col_value(x, g, kk, image, q / g.wo, q % g.wo);
    }
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

// Backward data: A = Wᵀ [c_in, (co, ki, kj)], B = dy gathered [(co, ki, kj), (n, ih, iw)].
struct BackwardDataOperands {
    static constexpr bool b_depth_fast = false;  // consecutive columns are consecutive pixels
    const float* dy;
    const float* w;
    EmberConv g;
    __device__ float a(int ci, int kk) const {
        int co = kk / (g.kh * g.kw), r = kk % (g.kh * g.kw);
        return w[((long long)co * g.c_in + ci) * (g.kh * g.kw) + r];
    }
    __device__ float b(int kk, int col) const {
        int co = kk / (g.kh * g.kw), r = kk % (g.kh * g.kw), ki = r / g.kw, kj = r % g.kw;
        int image = col / (g.h * g.w), q = col % (g.h * g.w), ih = q / g.w, iw = q % g.w;
        int oh_scaled = ih + g.pad_h - ki * g.dilation_h, ow_scaled = iw + g.pad_w - kj * g.dilation_w;
        if (oh_scaled < 0 || ow_scaled < 0 || oh_scaled % g.stride_h != 0 || ow_scaled % g.stride_w != 0) return 0.0f;
        int oh = oh_scaled / g.stride_h, ow = ow_scaled / g.stride_w;
        if (oh >= g.ho || ow >= g.wo) return 0.0f;
        return dy[(((long long)image * g.c_out + co) * g.ho + oh) * g.wo + ow];
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

// Backward weight: A = dy [c_out, (n, oh, ow)], B = col(x)ᵀ [(n, oh, ow), (ci, ki, kj)].
struct BackwardWeightOperands {
    // B by columns, as the other products: a column's (ci, ki, kj) is then computed once per
    // thread (by depth, consecutive pixels, the reads would coalesce better but each would
    // decompose both indices)
    static constexpr bool b_depth_fast = false;
    const float* x;
    const float* dy;
    EmberConv g;
    __device__ float a(int co, int kk) const {
        int image = kk / (g.ho * g.wo), q = kk % (g.ho * g.wo);
        return dy[((long long)image * g.c_out + co) * (g.ho * g.wo) + q];
    }
    __device__ float b(int kk, int col) const {
        int image = kk / (g.ho * g.wo), q = kk % (g.ho * g.wo);
        return im2col_value(x, g, col, image, q / g.wo, q % g.wo);
    }
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
