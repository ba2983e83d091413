// Elementwise kernels: unary maps (forward and backward) and binary ops with broadcasting,
// over strided inputs (EmberStrides), writing contiguous outputs. The host side is in
// src/cuda/kernels.rs; the CPU reference is ops/unary.rs (UnaryOp) and ops/binary.rs.
//
// Tiling: none. One thread per output element, in a grid-stride loop.
#include "ember_cuda.h"

// The op codes of UnaryOp (ops/unary.rs, `UnaryOp::code`). p and q are its constants:
// Powf(p), Affine { mul: p, add: q }, Clamp { min: p, max: q }.
enum UnaryCode {
    U_NEG = 0, U_EXP, U_LOG, U_SQRT, U_SQR, U_ABS, U_RELU, U_SILU, U_GELU, U_SIGMOID, U_TANH,
    U_SIN, U_COS, U_POWF, U_AFFINE, U_CLAMP
};

__device__ __forceinline__ float normal_cdf(float x) { return 0.5f * (1.0f + erff(x * 0.70710678118654752f)); }

__device__ float unary_forward(int op, float x, float p, float q) {
    switch (op) {
        case U_NEG: return -x;
        case U_EXP: return expf(x);
        case U_LOG: return logf(x);
        case U_SQRT: return sqrtf(x);
        case U_SQR: return x * x;
        case U_ABS: return fabsf(x);
        case U_RELU: return fmaxf(x, 0.0f);
        case U_SILU: return x * ember_sigmoid(x);
        case U_GELU: return x * normal_cdf(x);
        case U_SIGMOID: return ember_sigmoid(x);
        case U_TANH: return tanhf(x);
        case U_SIN: return sinf(x);
        case U_COS: return cosf(x);
        case U_POWF: return powf(x, p);
        case U_AFFINE: return x * p + q;
        case U_CLAMP: return fminf(fmaxf(x, p), q);
        default: return __int_as_float(0x7fc00000);
    }
}

// dy/dx given x and y = f(x) (the same rules as UnaryOp::derivative).
__device__ float unary_derivative(int op, float x, float y, float p, float q) {
    switch (op) {
        case U_NEG: return -1.0f;
        case U_EXP: return y;
        case U_LOG: return 1.0f / x;
        case U_SQRT: return 0.5f / y;
        case U_SQR: return 2.0f * x;
        case U_ABS: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
        case U_RELU: return x > 0.0f ? 1.0f : 0.0f;
        case U_SILU: {
            float s = ember_sigmoid(x);
            return s * (1.0f + x * (1.0f - s));
        }
        case U_GELU: return normal_cdf(x) + x * expf(-0.5f * x * x) * 0.39894228040143268f;
        case U_SIGMOID: return y * (1.0f - y);
        case U_TANH: return 1.0f - y * y;
        case U_SIN: return cosf(x);
        case U_COS: return -sinf(x);
        case U_POWF: return p * powf(x, p - 1.0f);
        case U_AFFINE: return p;
        case U_CLAMP: return (x > p && x < q) ? 1.0f : 0.0f;
        default: return __int_as_float(0x7fc00000);
    }
}

// y[i] = f(x[view i]) for the n elements of the view.
extern "C" __global__ void unary_forward_f32(const float* __restrict__ x, EmberStrides x_view,
                                             float* __restrict__ y, long long n, int op, float p,
                                             float q) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = unary_forward(op, x[ember_offset(x_view, i)], p, q);
}

// dx[i] = dy[i] * f'(x[i]) with y[i] = f(x[i]); x, y, dy, dx contiguous (x or y may be
// unused by the op's rule, and then may be any pointer).
extern "C" __global__ void unary_backward_f32(const float* __restrict__ x, const float* __restrict__ y,
                                              const float* __restrict__ dy, float* __restrict__ dx,
                                              long long n, int op, float p, float q) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float xi = x ? x[i] : 0.0f, yi = y ? y[i] : 0.0f;
        dx[i] = dy[i] * unary_derivative(op, xi, yi, p, q);
    }
}

// The op codes of BinaryOp (ops/binary.rs, `BinaryOp::code`).
enum BinaryCode { B_ADD = 0, B_SUB, B_MUL, B_DIV, B_EQUAL };

// out[i] = a[view i] op b[view i]; both views have the output's sizes (broadcast axes have
// stride 0).
extern "C" __global__ void binary_f32(const float* __restrict__ a, EmberStrides a_view,
                                      const float* __restrict__ b, EmberStrides b_view,
                                      float* __restrict__ out, long long n, int op) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float u = a[ember_offset(a_view, i)], v = b[ember_offset(b_view, i)];
        float r;
        switch (op) {
            case B_ADD: r = u + v; break;
            case B_SUB: r = u - v; break;
            case B_MUL: r = u * v; break;
            case B_DIV: r = u / v; break;
            case B_EQUAL: r = u == v ? 1.0f : 0.0f; break;
            default: r = __int_as_float(0x7fc00000);
        }
        out[i] = r;
    }
}

// y[y_view i] = x[x_view i]: copies between two views of the same sizes (making a view
// contiguous, writing into part of a tensor for cat, pad and assign).
extern "C" __global__ void copy_f32(const float* __restrict__ x, EmberStrides x_view, float* __restrict__ y,
                                    EmberStrides y_view, long long n) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[ember_offset(y_view, i)] = x[ember_offset(x_view, i)];
}

// y[i] = value for i < n.
extern "C" __global__ void fill_f32(float* __restrict__ y, float value, long long n) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = value;
}

// Rows along an axis, x viewed as [outer, axis_len, inner] (contiguous):
// out[o, i, r] = x[o, indices[i], r] for i < count. One thread per output element.
extern "C" __global__ void index_select_f32(const float* __restrict__ x, const long long* __restrict__ indices,
                                            float* __restrict__ out, long long outer, long long axis_len,
                                            long long inner, long long count) {
    long long n = outer * count * inner, stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        long long r = e % inner, i = (e / inner) % count, o = e / (inner * count);
        out[e] = x[(o * axis_len + indices[i]) * inner + r];
    }
}

// Its adjoint: dx[o, a, r] = Σ over i with indices[i] = a of g[o, i, r]. One thread per dx
// element, walking the index list (a gather, so repeated indices need no atomics and the sum
// has one order on every run).
extern "C" __global__ void index_add_f32(const float* __restrict__ g, const long long* __restrict__ indices,
                                         float* __restrict__ dx, long long outer, long long axis_len, long long inner,
                                         long long count) {
    long long n = outer * axis_len * inner, stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        long long r = e % inner, a = (e / inner) % axis_len, o = e / (inner * axis_len);
        float sum = 0.0f;
        for (long long i = 0; i < count; i++)
            if (indices[i] == a) sum += g[(o * count + i) * inner + r];
        dx[e] = sum;
    }
}
