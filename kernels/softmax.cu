// Softmax and log-softmax over the rows of a contiguous [rows, row_len] matrix, forward and
// backward. The CPU reference is ops/softmax/cpu.rs.
//
// Tiling: one block of 256 threads per row. Each thread walks every 256th element; block
// reductions (warp shuffles, then one value per warp through shared memory) give the row's
// maximum and sums.
#include "ember_cuda.h"

// y = softmax(x) = exp(x - max) / sum(exp(x - max)), or with `log`,
// y = x - max - log(sum(exp(x - max))).
extern "C" __global__ void softmax_rows_f32(const float* __restrict__ x, float* __restrict__ y,
                                            int row_len, int log) {
    EMBER_SHARED(float[32], scratch);
    const float* row = x + (long long)blockIdx.x * row_len;
    float* out = y + (long long)blockIdx.x * row_len;
    float max = ember_negative_infinity();
    for (int j = threadIdx.x; j < row_len; j += blockDim.x) max = fmaxf(max, row[j]);
    max = ember_block_max(max, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < row_len; j += blockDim.x) sum += expf(row[j] - max);
    sum = ember_block_sum(sum, scratch);
    if (log) {
        float log_sum = logf(sum);
        for (int j = threadIdx.x; j < row_len; j += blockDim.x) out[j] = row[j] - max - log_sum;
    } else {
        float inverse = 1.0f / sum;
        for (int j = threadIdx.x; j < row_len; j += blockDim.x) out[j] = expf(row[j] - max) * inverse;
    }
}

// dx from the forward's output y and dy: softmax: dx = y * (dy - sum(dy * y));
// log-softmax: dx = dy - exp(y) * sum(dy).
extern "C" __global__ void softmax_backward_rows_f32(const float* __restrict__ y, const float* __restrict__ dy,
                                                     float* __restrict__ dx, int row_len, int log) {
    EMBER_SHARED(float[32], scratch);
    long long start = (long long)blockIdx.x * row_len;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < row_len; j += blockDim.x)
        dot += log ? dy[start + j] : dy[start + j] * y[start + j];
    dot = ember_block_sum(dot, scratch);
    for (int j = threadIdx.x; j < row_len; j += blockDim.x) {
        float yj = y[start + j], dyj = dy[start + j];
        dx[start + j] = log ? dyj - expf(yj) * dot : yj * (dyj - dot);
    }
}
