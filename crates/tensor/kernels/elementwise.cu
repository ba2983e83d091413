// Elementwise kernels.
#include "ember_cuda.h"

// y[i] = alpha * x[i] + beta, for i < n. One thread per element, grid-stride loop.
extern "C" __global__ void affine_f32(const float* __restrict__ x, float* __restrict__ y,
                                      float alpha, float beta, long long n) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] = alpha * x[i] + beta;
    }
}
