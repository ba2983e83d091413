// The device's ceilings, measured rather than taken from a datasheet: f32 FMA throughput and
// memory bandwidth. benches/cuda_kernels.rs times these first and reports every kernel as a
// percentage of them. Not used by any op, so there is no CPU reference.
//
// Tiling: none. peak_fma_f32 is one thread per output element, launched with enough blocks to
// fill every SM several times over; peak_copy_f32 is a grid-stride loop.
#include "ember_cuda.h"

// Independent FMA chains per thread: enough to hide the FMA latency (about 4 cycles) within
// one warp, few enough to stay in registers. The benchmark counts 2 · PEAK_CHAINS flops per
// thread per iteration; keep it in step (PEAK_FMA_CHAINS in benches/cuda_kernels.rs).
#define PEAK_CHAINS 16

// NVRTC unrolls the iteration loop by 4, so the loop counter costs about 2% of the issue
// slots; the emulator's compiler does not know the pragma (and -Werror refuses it).
#if defined(EMBER_CUDA_EMULATOR)
#define PEAK_UNROLL_4
#else
#define PEAK_UNROLL_4 _Pragma("unroll 4")
#endif

// Each thread runs PEAK_CHAINS chains a ← a·x + c for `iterations` steps, x and c depending on
// the thread (so nothing folds at compile time; |x| < 1, so nothing overflows), then writes
// the chains' sum to out[thread], so that none of the work is dead. out holds one float per
// thread of the launch.
extern "C" __global__ void peak_fma_f32(float* __restrict__ out, int iterations) {
    long long thread = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    float x = 0.5f + (float)(threadIdx.x & 31) * (1.0f / 128.0f);
    float c = (float)(blockIdx.x & 255) * (1.0f / 256.0f);
    float chain[PEAK_CHAINS];
    for (int j = 0; j < PEAK_CHAINS; j++) chain[j] = (float)j * 0.0625f;
    PEAK_UNROLL_4
    for (int i = 0; i < iterations; i++) {
        for (int j = 0; j < PEAK_CHAINS; j++) chain[j] = fmaf(chain[j], x, c);
    }
    float sum = 0.0f;
    for (int j = 0; j < PEAK_CHAINS; j++) sum += chain[j];
    out[thread] = sum;
}

// y[i] = x[i] for the n elements: each thread copies every (blockDim.x · gridDim.x)-th
// element, so consecutive threads touch consecutive floats (coalesced 128-byte lines).
extern "C" __global__ void peak_copy_f32(const float* __restrict__ x, float* __restrict__ y, long long n) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = x[i];
}
