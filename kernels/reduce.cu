// Reductions (sum, max) of a strided view over any set of axes. The CPU reference is
// ops/reduce/cpu.rs; the host side (ops/reduce/cuda.rs) splits the view into the kept axes
// (`kept`, one output per element, row-major) and the reduced ones (`run`, each output's
// elements).
//
// Tiling: one warp per output, 8 warps (256 threads) per block. Each lane walks every 32nd
// element of the output's run, then the warp combines its lanes by shuffles.
#include "ember_cuda.h"

enum ReduceCode { R_SUM = 0, R_MAX = 1 };

extern "C" __global__ void reduce_f32(const float* __restrict__ x, EmberStrides kept, EmberStrides run,
                                      float* __restrict__ y, long long outputs, long long run_len, int kind) {
    long long output = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    // Every lane of a warp reaches the shuffles, so the warp's range check comes after them.
    long long base = output < outputs ? ember_offset(kept, output) : 0;
    long long len = output < outputs ? run_len : 0;
    float acc = kind == R_SUM ? 0.0f : ember_negative_infinity();
    for (long long j = lane; j < len; j += 32) {
        float v = x[base + ember_offset(run, j)];
        if (kind == R_SUM) acc += v;
        else acc = (v > acc || v != v) ? v : acc;
    }
    acc = kind == R_SUM ? ember_warp_sum(acc) : ember_warp_max(acc);
    if (lane == 0 && output < outputs) y[output] = acc;
}
