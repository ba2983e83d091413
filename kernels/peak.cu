// The device's ceilings, measured rather than taken from a datasheet: f32 FMA throughput, TF32
// and bf16 tensor-core throughput and memory bandwidth. benches/cuda_kernels.rs times these first and reports every kernel as a
// percentage of them. Not used by any op, so there is no CPU reference.
//
// Tiling: none. peak_fma_f32 and the peak_mma kernels are one thread per output element, launched
// with enough blocks to fill every SM several times over; peak_copy_f32 is a grid-stride loop.
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

// Independent mma chains per warp in peak_mma_tf32 and peak_mma_bf16 (enough to hide the
// tensor cores' latency); the benchmark counts 2·16·8·8 flops per TF32 mma and 2·16·8·16 per
// bf16 one (PEAK_MMA_CHAINS in benches/cuda_kernels.rs).
#define PEAK_MMA_CHAINS 8

// Each warp runs PEAK_MMA_CHAINS chains D ← A·B + D of one mma for `iterations` steps, A and B
// the same for every chain, every D starting at chain/16 in all four registers; then each
// lane writes the sum of its accumulators to out[thread]. peak_mma_tf32: mma.m16n8k8 in TF32,
// lane l holding A's registers j = 0..3 as ((l + j) % 8)/64 and B's j = 0..1 as
// ((l + 2j) % 4)/64. peak_mma_bf16: mma.m16n8k16 with bf16 inputs, each register's two halves
// holding the same value as TF32's register. Every value is a multiple of 1/4096 below 2^11,
// so the results are exact and the emulator test checks them against D = A·B on the CPU.
template <bool BF16>
__device__ __forceinline__ void peak_mma(float* out, int iterations) {
    long long thread = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x % 32;
    unsigned a[4], b[2];
    for (int j = 0; j < 4; j++) {
        float value = (float)((lane + j) % 8) * (1.0f / 64.0f);
        a[j] = BF16 ? ((unsigned)ember_f32_to_bf16(value) * 0x10001u) : ember_f32_to_tf32(value);
    }
    for (int j = 0; j < 2; j++) {
        float value = (float)((lane + 2 * j) % 4) * (1.0f / 64.0f);
        b[j] = BF16 ? ((unsigned)ember_f32_to_bf16(value) * 0x10001u) : ember_f32_to_tf32(value);
    }
    float d[PEAK_MMA_CHAINS][4];
    for (int c = 0; c < PEAK_MMA_CHAINS; c++)
        for (int r = 0; r < 4; r++) d[c][r] = (float)c * 0.0625f;
    PEAK_UNROLL_4
    for (int i = 0; i < iterations; i++) {
        for (int c = 0; c < PEAK_MMA_CHAINS; c++) {
            if (BF16) ember_mma_m16n8k16_bf16(d[c], a, b, d[c]);
            else ember_mma_m16n8k8_tf32(d[c], a, b, d[c]);
        }
    }
    float sum = 0.0f;
    for (int c = 0; c < PEAK_MMA_CHAINS; c++)
        for (int r = 0; r < 4; r++) sum += d[c][r];
    out[thread] = sum;
}

extern "C" __global__ void peak_mma_tf32(float* __restrict__ out, int iterations) { peak_mma<false>(out, iterations); }
extern "C" __global__ void peak_mma_bf16(float* __restrict__ out, int iterations) { peak_mma<true>(out, iterations); }

// y[i] = x[i] for the n elements: each thread copies every (blockDim.x · gridDim.x)-th
// element, so consecutive threads touch consecutive floats (coalesced 128-byte lines).
extern "C" __global__ void peak_copy_f32(const float* __restrict__ x, float* __restrict__ y, long long n) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = x[i];
}
