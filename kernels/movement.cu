// The movement ops' kernels: copies between strided views (contiguous, cat, pad, assign) and
// fills. The host side is crates/tensor/src/ops/movement/cuda.rs; the CPU reference is
// cpu/copy.rs.
//
// Tiling: none. One thread per output element, in a grid-stride loop.
#include "ember_cuda.h"

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
