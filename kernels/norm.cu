// Group normalization, forward and backward. The CPU reference is ops/norm/cpu.rs: x is viewed as
// [n, channels, positions] with the channels in `groups` groups; a (sample, group) block of
// channels/groups · positions contiguous elements gets its own mean μ and
// rstd = 1/√(σ² + eps) (biased variance). With x̂ = (x − μ)·rstd:
//   forward   h = x̂·w[c] + b[c], y = h, or with `silu` (the UNet's GroupNorm → SiLU, fused)
//             y = h·σ(h)
//   backward  dh = dy, or with `silu` dh = dy·σ(h)·(1 + h·(1 − σ(h))) (h recomputed from x);
//             with g = dh·w[c]: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (means over the block);
//             per (sample, channel) Σ dh·x̂ and Σ dh, which the host sums over the samples
//             into dw and db.
//
// Tiling: one block of 256 threads per (sample, group). Each thread walks every 256th element
// of the group's run; block reductions (ember_block_sum) give the sums. The statistics take
// two passes over x (mean, then Σ(x − μ)²), as the CPU does, not the one-pass E[x²] − μ².
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
