// Reductions (sum, max) of a strided view over any set of axes. The CPU reference is
// ops/reduce/cpu.rs; the host side (ops/reduce/cuda.rs) splits the view into the kept axes
// (`kept`, one output per element, row-major) and the reduced ones (`run`, each output's
// elements).
//
// Tiling: one warp per (output, chunk), 8 warps (256 threads) per block. A chunk is
// `chunk_len` consecutive elements of the output's run (the last one shorter); each lane walks
// every 32nd element of its chunk, then the warp combines its lanes by shuffles and writes
// y[output · chunks + chunk]. With one chunk (chunk_len ≥ run_len) that is the whole
// reduction. A long run over few outputs (a bias gradient: 128 channels, each summing
// B·H·W = 131,072 elements) gives too few warps to fill a GPU, so the host launches it in two
// stages: many chunks per output into a partial buffer [outputs, chunks], then one chunk over
// each output's partials. The split depends on the shapes only, so results are deterministic.
#include "ember_cuda.h"

enum ReduceCode { R_SUM = 0, R_MAX = 1 };

extern "C" __global__ void reduce_f32(const float* __restrict__ x, EmberStrides kept, EmberStrides run,
                                      float* __restrict__ y, long long outputs, long long run_len,
                                      long long chunks, long long chunk_len, int kind) {
    long long warp = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    long long output = warp / chunks, chunk = warp % chunks;
    // Every lane of a warp reaches the shuffles, so the warp's range check comes after them.
    bool active = output < outputs;
    long long base = active ? ember_offset(kept, output) : 0;
    long long begin = chunk * chunk_len;
    long long end = active ? (begin + chunk_len < run_len ? begin + chunk_len : run_len) : 0;
    float acc = kind == R_SUM ? 0.0f : ember_negative_infinity();
    for (long long j = begin + lane; j < end; j += 32) {
        float v = x[base + ember_offset(run, j)];
        if (kind == R_SUM) acc += v;
        else acc = (v > acc || v != v) ? v : acc;
    }
    acc = kind == R_SUM ? ember_warp_sum(acc) : ember_warp_max(acc);
    if (lane == 0 && active) y[warp] = acc;
}
