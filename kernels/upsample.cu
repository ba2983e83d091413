// Nearest-neighbour upsampling of [n, c, h, w] by an integer scale s, and its adjoint. The
// host side is crates/tensor/src/ops/upsample/cuda.rs; the CPU reference is
// ops/upsample/cpu.rs.
//
// Tiling: none. Forward: one thread per output element, reading x[.., oh / s, ow / s].
// Backward: one thread per input element, summing its s×s block of dy (a gather: no
// atomics, one summation order).
#include "ember_cuda.h"

extern "C" __global__ void upsample_nearest2d_f32(const float* __restrict__ x, float* __restrict__ y, long long planes,
                                                  int h, int w, int scale) {
    long long out_w = (long long)w * scale, out_plane = (long long)h * scale * out_w;
    long long n = planes * out_plane, stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        long long plane = e / out_plane, q = e % out_plane, oh = q / out_w, ow = q % out_w;
        y[e] = x[(plane * h + oh / scale) * w + ow / scale];
    }
}

extern "C" __global__ void upsample_nearest2d_backward_f32(const float* __restrict__ dy, float* __restrict__ dx,
                                                           long long planes, int h, int w, int scale) {
    long long out_w = (long long)w * scale;
    long long n = planes * h * w, stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        long long plane = e / ((long long)h * w), q = e % ((long long)h * w), ih = q / w, iw = q % w;
        const float* block = dy + (plane * h * scale + ih * scale) * out_w + iw * scale;
        float sum = 0.0f;
        for (int a = 0; a < scale; a++)
            for (int b = 0; b < scale; b++) sum += block[a * out_w + b];
        dx[e] = sum;
    }
}
