// The normalizations, forward and backward: group norm and layer norm. Each standardizes
// blocks of x, x̂ = (x − μ)·rstd with rstd = 1/√(σ² + eps) (biased variance), then applies an
// affine, and keeps μ and rstd for its backward. The statistics take two passes over x (mean,
// then Σ(x − μ)²), as the CPU does, not the one-pass E[x²] − μ².
//
// Group norm (CPU reference: ops/norm/cpu.rs): x is viewed as [n, channels, positions] with the
// channels in `groups` groups; a (sample, group) block is channels/groups · positions
// contiguous elements.
//   forward   h = x̂·w[c] + b[c], y = h, or with `silu` (the UNet's GroupNorm → SiLU, fused)
//             y = h·σ(h)
//   backward  dh = dy, or with `silu` dh = dy·σ(h)·(1 + h·(1 − σ(h))) (h recomputed from x);
//             with g = dh·w[c]: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (means over the block);
//             per (sample, channel) Σ dh·x̂ and Σ dh, which the host sums over the samples
//             into dw and db.
// Tiling: one block of 256 threads per (sample, group). Each thread walks every 256th element
// of the group's run; block reductions (ember_block_sum) give the sums.
//
// Layer norm (CPU reference: the same file): x is [rows, cols], a block is a row.
//   forward   y = x̂·w[j] + b[j]
//   backward  with g = dy·w[j]: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (means over the row);
//             dw[j] = Σ dy·x̂ and db[j] = Σ dy over the rows.
// Tiling: forward and dx one warp per row (8 rows per block of 256), each lane walking every
// 32nd element, warp shuffles (ember_warp_sum) for the sums, no shared memory and no barrier.
// dw and db in two stages, without atomics so that the result does not hang on the order in
// which blocks run: blocks of 32 columns × 8 row lanes sum a chunk of rows (a warp reads 32
// consecutive columns of one row), then one thread per column adds the chunks' partials in
// order.
#include "ember_cuda.h"

extern "C" __global__ void group_norm_forward_f32(const float* __restrict__ x, const float* __restrict__ w,
                                                  const float* __restrict__ b, float* __restrict__ y,
                                                  float* __restrict__ mean, float* __restrict__ rstd, int channels,
                                                  int groups, int positions, float eps, int silu) {
    EMBER_SHARED(float[32], scratch);
    int block = blockIdx.x, group = block % groups;
    int per_group = channels / groups;
    long long len = (long long)per_group * positions;
    const float* xs = x + block * len;
    float* ys = y + block * len;

    float sum = 0.0f;
    for (long long j = threadIdx.x; j < len; j += blockDim.x) sum += xs[j];
    float mu = ember_block_sum(sum, scratch) / (float)len;
    float squares = 0.0f;
    for (long long j = threadIdx.x; j < len; j += blockDim.x) {
        float d = xs[j] - mu;
        squares += d * d;
    }
    float r = rsqrtf(ember_block_sum(squares, scratch) / (float)len + eps);
    if (threadIdx.x == 0) {
        mean[block] = mu;
        rstd[block] = r;
    }
    for (long long j = threadIdx.x; j < len; j += blockDim.x) {
        int c = group * per_group + (int)(j / positions);
        // (x − μ)·(r·w) + b: x·(r·w) + (b − μ·r·w) would cancel large terms when a group
        // varies little around a large mean (one element per group: x̂ = 0, y = b)
        float h = (xs[j] - mu) * (r * w[c]) + b[c];
        ys[j] = silu ? h * ember_sigmoid(h) : h;
    }
}

// dh for one element: dy, or through the fused SiLU, dy·σ'(h)·… with h = x̂·w + b.
__device__ __forceinline__ float pre_activation_grad(float dy, float xhat, float w, float b, int silu) {
    if (!silu) return dy;
    float h = xhat * w + b, s = ember_sigmoid(h);
    return dy * s * (1.0f + h * (1.0f - s));
}

// dx, and per (sample, channel) the pair (Σ dh·x̂, Σ dh) in sums[(sample·channels + c)·2 + 0|1].
extern "C" __global__ void group_norm_backward_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                                   const float* __restrict__ w, const float* __restrict__ b,
                                                   const float* __restrict__ mean, const float* __restrict__ rstd,
                                                   float* __restrict__ dx, float* __restrict__ sums, int channels,
                                                   int groups, int positions, int silu) {
    EMBER_SHARED(float[32], scratch);
    int block = blockIdx.x, sample = block / groups, group = block % groups;
    int per_group = channels / groups;
    long long len = (long long)per_group * positions;
    const float* xs = x + block * len;
    const float* dys = dy + block * len;
    float* dxs = dx + block * len;
    float mu = mean[block], r = rstd[block];

    float sum_g = 0.0f, sum_g_xhat = 0.0f;  // Σ dh·w and Σ dh·w·x̂ over the block
    for (int k = 0; k < per_group; k++) {
        int c = group * per_group + k;
        float dy_sum = 0.0f, dy_xhat_sum = 0.0f;
        for (int p = threadIdx.x; p < positions; p += blockDim.x) {
            long long j = (long long)k * positions + p;
            float xhat = (xs[j] - mu) * r;
            float d = pre_activation_grad(dys[j], xhat, w[c], b[c], silu);
            dy_sum += d;
            dy_xhat_sum += d * xhat;
        }
        dy_sum = ember_block_sum(dy_sum, scratch);
        dy_xhat_sum = ember_block_sum(dy_xhat_sum, scratch);
        if (threadIdx.x == 0) {
            sums[((long long)sample * channels + c) * 2] = dy_xhat_sum;
            sums[((long long)sample * channels + c) * 2 + 1] = dy_sum;
        }
        sum_g += dy_sum * w[c];
        sum_g_xhat += dy_xhat_sum * w[c];
    }
    float mean_g = sum_g / (float)len, mean_g_xhat = sum_g_xhat / (float)len;
    for (long long j = threadIdx.x; j < len; j += blockDim.x) {
        int c = group * per_group + (int)(j / positions);
        float xhat = (xs[j] - mu) * r;
        float d = pre_activation_grad(dys[j], xhat, w[c], b[c], silu);
        // g = dh·w rounded on its own (__fmul_rn is never fused into a multiply-add), as in
        // sum_g: with one element per group, g − mean(g) is then exactly 0, as it should be
        dxs[j] = r * (__fmul_rn(d, w[c]) - mean_g - xhat * mean_g_xhat);
    }
}

// ---- Layer norm ----

extern "C" __global__ void layer_norm_forward_f32(const float* __restrict__ x, const float* __restrict__ w,
                                                  const float* __restrict__ b, float* __restrict__ y,
                                                  float* __restrict__ mean, float* __restrict__ rstd, int rows, int cols,
                                                  float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;  // the whole warp: no shuffle waits for it
    const float* xs = x + (long long)row * cols;
    float* ys = y + (long long)row * cols;

    float sum = 0.0f;
    for (int j = lane; j < cols; j += 32) sum += xs[j];
    float mu = ember_warp_sum(sum) / (float)cols;
    float squares = 0.0f;
    for (int j = lane; j < cols; j += 32) {
        float d = xs[j] - mu;
        squares += d * d;
    }
    float r = rsqrtf(ember_warp_sum(squares) / (float)cols + eps);
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
    // (x − μ)·r·w + b: with one element per row, x̂ = 0 and y = b exactly
    for (int j = lane; j < cols; j += 32) ys[j] = (xs[j] - mu) * r * w[j] + b[j];
}

// dx, a warp per row.
extern "C" __global__ void layer_norm_backward_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                                   const float* __restrict__ w, const float* __restrict__ mean,
                                                   const float* __restrict__ rstd, float* __restrict__ dx, int rows,
                                                   int cols) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    long long start = (long long)row * cols;
    const float* xs = x + start;
    const float* dys = dy + start;
    float* dxs = dx + start;
    float mu = mean[row], r = rstd[row];

    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int j = lane; j < cols; j += 32) {
        float g = __fmul_rn(dys[j], w[j]);
        sum_g += g;
        sum_g_xhat += g * ((xs[j] - mu) * r);
    }
    float mean_g = ember_warp_sum(sum_g) / (float)cols, mean_g_xhat = ember_warp_sum(sum_g_xhat) / (float)cols;
    for (int j = lane; j < cols; j += 32) {
        float xhat = (xs[j] - mu) * r;
        // g rounded on its own (__fmul_rn is never fused into a multiply-add), as in sum_g:
        // with one element per row, g − mean(g) is then exactly 0, as it should be
        dxs[j] = r * (__fmul_rn(dys[j], w[j]) - mean_g - xhat * mean_g_xhat);
    }
}

#define LAYER_NORM_ROW_LANES 8  // launched with 32 × 8 threads

// Per chunk of `chunk_rows` rows (blockIdx.y) and 32 columns (blockIdx.x): Σ dy·x̂ and Σ dy of
// each column into partials[(chunk·2 + 0|1)·cols + column]. Thread (column t % 32, lane t / 32)
// adds rows lane, lane + 8, … of the chunk; the 8 lanes are then added in order.
extern "C" __global__ void layer_norm_parameter_partials_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                                             const float* __restrict__ mean,
                                                             const float* __restrict__ rstd,
                                                             float* __restrict__ partials, int rows, int cols,
                                                             int chunk_rows) {
    EMBER_SHARED(float[LAYER_NORM_ROW_LANES][32], dw_lanes);
    EMBER_SHARED(float[LAYER_NORM_ROW_LANES][32], db_lanes);
    int tile_column = threadIdx.x % 32, lane = threadIdx.x / 32;
    int column = blockIdx.x * 32 + tile_column, chunk = blockIdx.y;
    int first = chunk * chunk_rows, end = min(first + chunk_rows, rows);
    float dw = 0.0f, db = 0.0f;
    if (column < cols) {
        for (int row = first + lane; row < end; row += LAYER_NORM_ROW_LANES) {
            long long i = (long long)row * cols + column;
            float d = dy[i];
            dw += d * ((x[i] - mean[row]) * rstd[row]);
            db += d;
        }
    }
    dw_lanes[lane][tile_column] = dw;
    db_lanes[lane][tile_column] = db;
    __syncthreads();
    if (lane == 0 && column < cols) {
        for (int l = 1; l < LAYER_NORM_ROW_LANES; l++) {
            dw += dw_lanes[l][tile_column];
            db += db_lanes[l][tile_column];
        }
        partials[(2LL * chunk) * cols + column] = dw;
        partials[(2LL * chunk + 1) * cols + column] = db;
    }
}

// dw and db: each column's partials added in chunk order (a grid-stride loop over columns).
extern "C" __global__ void layer_norm_parameter_totals_f32(const float* __restrict__ partials, float* __restrict__ dw,
                                                           float* __restrict__ db, int chunks, int cols) {
    for (int column = blockIdx.x * blockDim.x + threadIdx.x; column < cols; column += gridDim.x * blockDim.x) {
        float w_total = 0.0f, b_total = 0.0f;
        for (int chunk = 0; chunk < chunks; chunk++) {
            w_total += partials[(2LL * chunk) * cols + column];
            b_total += partials[(2LL * chunk + 1) * cols + column];
        }
        dw[column] = w_total;
        db[column] = b_total;
    }
}
