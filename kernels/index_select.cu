// index_select / embedding: rows gathered along an axis, and the adjoint that adds them back.
// The host side is crates/tensor/src/ops/index_select/cuda.rs; the CPU reference is
// ops/index_select/cpu.rs.
//
// Tiling: none. One thread per output element, in a grid-stride loop.
#include "ember_cuda.h"

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
