// The unary ops: y = f(x) over a strided input (EmberStrides), contiguous out, and the one
// backward dx = dy · f'(x). The host side is crates/tensor/src/ops/unary/cuda.rs; the CPU
// reference is UnaryOp's table of rules in ops/unary/mod.rs.
//
// Tiling: none. One thread per output element, in a grid-stride loop.
#include "ember_cuda.h"

// The op numbers of UnaryOp (enum UnaryCode: U_NEG, U_EXP, …), generated from
// crates/tensor/src/ops/op_codes.rs. p and q are the op's constants:
// Powf(p), Affine { mul: p, add: q }, Clamp { min: p, max: q }.
#include "ember_op_codes.h"

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
