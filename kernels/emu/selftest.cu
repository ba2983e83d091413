// Kernels that prove the emulator itself (tests/cuda_emulator.rs): correct ones that use
// every piece of the execution model, and broken ones that the emulator must catch. Built
// only into the emulator, never shipped to a GPU.
#include "ember_cuda.h"

// y = x reversed within each block of blockDim.x elements, through shared memory.
extern "C" __global__ void emu_reverse_in_block(const float* x, float* y) {
    EMBER_SHARED(float[256], tile);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// The same without the barrier: a thread may read a slot no thread has written yet.
extern "C" __global__ void emu_reverse_missing_barrier(const float* x, float* y) {
    EMBER_SHARED(float[256], tile);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = x[i];
    y[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// The same through dynamic shared memory, with a second static array after it.
extern "C" __global__ void emu_reverse_dynamic(const float* x, float* y) {
    EMBER_DYNAMIC_SHARED(float, tile);
    EMBER_SHARED(int[1], count);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x == 0) count[0] = 0;
    tile[threadIdx.x] = x[i];
    __syncthreads();
    atomicAdd(&count[0], 1);
    __syncthreads();
    y[i] = count[0] == (int)blockDim.x ? tile[blockDim.x - 1 - threadIdx.x] : -1.0f;
}

// Reads shared memory nobody wrote: the emulator's poison (NaN) comes out.
extern "C" __global__ void emu_read_uninitialized_shared(float* y) {
    EMBER_SHARED(float[32], tile);
    y[threadIdx.x] = tile[threadIdx.x];
}

// A barrier only half the block reaches.
extern "C" __global__ void emu_barrier_in_branch(float* y) {
    if (threadIdx.x < blockDim.x / 2) __syncthreads();
    y[threadIdx.x] = 1.0f;
}

// Per warp: the sum of x by a butterfly of __shfl_xor_sync, the prefix sum by
// __shfl_up_sync, a neighbor's value by __shfl_down_sync and the ballot of x > 0.
extern "C" __global__ void emu_warp_ops(const float* x, float* sum, float* prefix, float* down,
                                        unsigned* ballot) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned lane = threadIdx.x % 32;
    float v = x[i];
    float total = v;
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
    float running = v;
    for (int offset = 1; offset < 32; offset *= 2) {
        float other = __shfl_up_sync(0xffffffffu, running, offset);
        if (lane >= (unsigned)offset) running += other;
    }
    sum[i] = total;
    prefix[i] = running;
    down[i] = __shfl_down_sync(0xffffffffu, v, 1);
    ballot[i] = __ballot_sync(0xffffffffu, v > 0.0f);
}

// Lanes that disagree on a collective's mask.
extern "C" __global__ void emu_mask_mismatch(float* y) {
    unsigned mask = threadIdx.x == 0 ? 0x1u : 0xffffffffu;
    y[threadIdx.x] = __shfl_sync(mask, 1.0f, 0);
}

// Counts threads of the whole grid with a global atomic.
extern "C" __global__ void emu_count_threads(int* count) { atomicAdd(count, 1); }

// Writes one element past the end of a static shared array (AddressSanitizer must stop it).
extern "C" __global__ void emu_shared_out_of_bounds(float* y) {
    EMBER_SHARED(float[32], tile);
    tile[threadIdx.x + 1] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x];
}

// Writes one element past the end of y (n elements).
extern "C" __global__ void emu_global_out_of_bounds(float* y, int n) {
    y[threadIdx.x + 1] = (float)n;
}
