// Scaled dot-product attention, FlashAttention-2 style: q [bh, sq, d], k [bh, sk, d],
// v [bh, sk, dv] contiguous; out [bh, sq, dv] and the row log-sum-exp lse [bh, sq]. The score
// matrix S = scale·QKᵀ and P = softmax(S) never reach global memory: they exist one 32×32
// tile at a time in shared memory. The CPU reference is ops/attention/cpu.rs.
//
// The optional key-padding mask key_mask [bh / heads, sk] (null: none) sets S = −inf where it
// holds 0; slice bh reads its row bh / heads. A row whose keys are all masked has out = 0 and
// lse = +inf (so that the backward's P = exp(S − lse) is 0 there, as on the CPU).
//
// With causal (nonzero), query i attends only to keys j ≤ i (top-left aligned, any sq and sk):
// S = −inf for j > i as well. Query and key tiles both start at multiples of 32, so a key tile
// from key0 lies wholly right of the diagonal of a query tile from row0 (every key after every
// query) iff key0 > row0: the forward and dQ kernels end their walk over keys at row0 + 32,
// and the dK/dV kernel starts its walk over queries at key0. A skipped tile would only add
// zeros (P = 0, dS = 0), so the results are those of the full walk.
//
// Forward (grid: query tiles × bh; 256 threads): the block keeps its 32 query rows, their
// output accumulator and the online-softmax state (running max m, running sum l) in shared
// memory, and walks the keys 32 at a time: S tile (each thread 4 dot products), then warp w
// takes rows w, w+8, w+16, w+24 with lane j holding key j: the new max and sum by warp
// shuffles, P = exp(S − m_new), the accumulator rescaled by exp(m_old − m_new) and P·V added
// (each thread a strided set of (row, column) entries). At the end out = acc / l and
// lse = m + ln l. While a row has seen no key that is not masked, its running max is −inf; it
// then subtracts 0 instead, so that p = exp(−inf) = 0 rather than exp(−inf − (−inf)) = NaN.
//
// Backward recomputes P = exp(S − lse) from the saved lse (no P stored). With
// delta_i = Σ_c dO_ic·O_ic (attention_delta_f32) and dS = scale·P ⊙ (dO·Vᵀ − delta):
// dV = Pᵀ·dO and dK = dSᵀ·Q per key tile (attention_backward_dkdv_f32, which walks the query
// tiles), dQ = dS·K per query tile (attention_backward_dq_f32, which walks the key tiles).
// Each output has one writer, so no atomics and the same result on every run.
//
// Every product (S = Q·Kᵀ, dP = dO·Vᵀ, P·V, dV = Pᵀ·dO, dK = dSᵀ·Q, dQ = dS·K) is one
// tile_product between 32-row tiles in shared memory: in f32 each thread runs FMAs over
// entries of the result (the `_f32` kernels); in TF32 or bf16 each warp runs mma.m16n8k8 or
// mma.m16n8k16 over 16×8 tiles of it (the `_tf32` and `_bf16` kernels, picked by the
// thread's precision; softmax and its statistics stay in f32).
//
// Shared rows of Q, K and dO are padded to d + 1 (dv + 1) floats, so the 32 lanes of a warp
// reading row j = lane at one column hit 32 different banks.
#include "ember_cuda.h"

#define ATT_TILE 32
#define ATT_THREADS 256
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_LD (ATT_TILE + 1)

// Loads rows [row0, row0 + 32) of a [rows, cols] matrix into a tile with row stride ld
// (zeros past the last row).
__device__ __forceinline__ void load_rows(float* tile, int ld, const float* source, int row0, int rows, int cols) {
    for (int e = threadIdx.x; e < ATT_TILE * cols; e += ATT_THREADS) {
        int i = e / cols, c = e % cols;
        tile[i * ld + c] = row0 + i < rows ? source[(long long)(row0 + i) * cols + c] : 0.0f;
    }
}

// Whether query `row` attends to key `key`: the mask row `mask_row` (null: no mask) allows it,
// and, if causal, key ≤ row.
__device__ __forceinline__ bool pair_attended(const float* mask_row, int causal, int row, int key) {
    return (mask_row == nullptr || mask_row[key] != 0.0f) && (!causal || key <= row);
}

// The end of the keys that the query tile from row0 can attend to (see the top).
__device__ __forceinline__ int tile_key_end(int row0, int sk, int causal) {
    return causal ? min(sk, row0 + ATT_TILE) : sk;
}

// The mask row of (batch, head) slice bh, or null with no mask.
__device__ __forceinline__ const float* mask_row_of(const float* key_mask, int bh, int heads, int sk) {
    return key_mask == nullptr ? nullptr : key_mask + (long long)(bh / heads) * sk;
}

// The arithmetic of the products: the `_f32`, `_tf32` and `_bf16` kernels.
#define ATT_F32 0
#define ATT_TF32 1
#define ATT_BF16 2

// acc[i][c] ← (accumulate ? acc[i][c]·row_scale[i] : 0) + Σ_p a(i, p)·b(p, c) for the 32
// rows i and the columns c < n of acc (shared memory, row stride acc_ld; row_scale null: 1),
// by the whole block; the caller synchronizes before and after. f32: each thread takes
// entries, FMAs in order of p. TF32 and bf16: each warp takes 16×8 tiles
// (ember_warp_mma_tf32, ember_warp_mma_bf16).
template <int ARITHMETIC, class A, class B>
__device__ __forceinline__ void tile_product(float* acc, int acc_ld, int n, int depth, bool accumulate,
                                             const float* row_scale, const A& a, const B& b) {
    auto start = [&](int i, int c) {
        if (!accumulate) return 0.0f;
        return row_scale ? acc[i * acc_ld + c] * row_scale[i] : acc[i * acc_ld + c];
    };
    if constexpr (ARITHMETIC == ATT_F32) {
        for (int e = threadIdx.x; e < ATT_TILE * n; e += ATT_THREADS) {
            int i = e / n, c = e % n;
            float value = start(i, c);
            for (int p = 0; p < depth; p++) value = fmaf(a(i, p), b(p, c), value);
            acc[i * acc_ld + c] = value;
        }
        return;
    }
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    for (int tile = threadIdx.x / 32; tile < 2 * ember_ceil_div(n, 8); tile += ATT_WARPS) {
        int i0 = (tile % 2) * 16, c0 = (tile / 2) * 8;
        float fragment[4];
        for (int r = 0; r < 4; r++) {
            int i = i0 + g + 8 * (r / 2), c = c0 + 2 * t + r % 2;
            fragment[r] = c < n ? start(i, c) : 0.0f;
        }
        auto a_tile = [&](int i, int p) { return a(i0 + i, p); };
        auto b_tile = [&](int p, int j) { return c0 + j < n ? b(p, c0 + j) : 0.0f; };
        if constexpr (ARITHMETIC == ATT_TF32) ember_warp_mma_tf32(fragment, depth, a_tile, b_tile);
        else ember_warp_mma_bf16(fragment, depth, a_tile, b_tile);
        for (int r = 0; r < 4; r++) {
            int i = i0 + g + 8 * (r / 2), c = c0 + 2 * t + r % 2;
            if (c < n) acc[i * acc_ld + c] = fragment[r];
        }
    }
}

template <int ARITHMETIC>
__device__ __forceinline__ void attention_forward(const float* q, const float* k, const float* v, const float* key_mask,
                                                  float* out, float* lse, int sq, int sk, int d, int dv, float scale,
                                                  int heads, int causal) {
    EMBER_DYNAMIC_SHARED(float, shared);
    float* q_tile = shared;                        // [32][d + 1]
    float* k_tile = q_tile + ATT_TILE * (d + 1);   // [32][d + 1]
    float* v_tile = k_tile + ATT_TILE * (d + 1);   // [32][dv]
    float* acc = v_tile + ATT_TILE * dv;           // [32][dv]
    float* s_tile = acc + ATT_TILE * dv;           // [32][33]: S, then P
    float* m = s_tile + ATT_TILE * ATT_LD;         // [32] running max
    float* l = m + ATT_TILE;                       // [32] running sum
    float* alpha = l + ATT_TILE;                   // [32] this tile's rescale

    int bh = blockIdx.y, row0 = blockIdx.x * ATT_TILE;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* qb = q + (long long)bh * sq * d;
    const float* kb = k + (long long)bh * sk * d;
    const float* vb = v + (long long)bh * sk * dv;
    const float* mask_row = mask_row_of(key_mask, bh, heads, sk);

    load_rows(q_tile, d + 1, qb, row0, sq, d);
    for (int e = threadIdx.x; e < ATT_TILE * dv; e += ATT_THREADS) acc[e] = 0.0f;
    if (threadIdx.x < ATT_TILE) {
        m[threadIdx.x] = ember_negative_infinity();
        l[threadIdx.x] = 0.0f;
    }
    for (int key0 = 0, key_end = tile_key_end(row0, sk, causal); key0 < key_end; key0 += ATT_TILE) {
        load_rows(k_tile, d + 1, kb, key0, sk, d);
        load_rows(v_tile, dv, vb, key0, sk, dv);
        __syncthreads();
        tile_product<ARITHMETIC>(
            s_tile, ATT_LD, ATT_TILE, d, false, nullptr, [&](int i, int p) { return q_tile[i * (d + 1) + p]; },
            [&](int p, int j) { return k_tile[j * (d + 1) + p]; });
        __syncthreads();
        for (int e = threadIdx.x; e < ATT_TILE * ATT_TILE; e += ATT_THREADS) {
            int i = e / ATT_TILE, j = e % ATT_TILE;
            bool attended = key0 + j < sk && pair_attended(mask_row, causal, row0 + i, key0 + j);
            s_tile[i * ATT_LD + j] = attended ? scale * s_tile[i * ATT_LD + j] : ember_negative_infinity();
        }
        __syncthreads();
        for (int i = warp; i < ATT_TILE; i += ATT_WARPS) {
            float s = s_tile[i * ATT_LD + lane];
            float m_old = m[i];
            float m_new = fmaxf(m_old, ember_warp_max(s));
            float shift = m_new == ember_negative_infinity() ? 0.0f : m_new;  // no key yet: see the top
            float p = expf(s - shift);  // 0 for masked keys (s = −inf)
            float p_sum = ember_warp_sum(p);
            s_tile[i * ATT_LD + lane] = p;
            if (lane == 0) {
                float rescale = expf(m_old - shift);  // 0 until the row's first key (m_old = −inf)
                alpha[i] = rescale;
                l[i] = l[i] * rescale + p_sum;
                m[i] = m_new;
            }
        }
        __syncthreads();
        tile_product<ARITHMETIC>(
            acc, dv, dv, ATT_TILE, true, alpha, [&](int i, int j) { return s_tile[i * ATT_LD + j]; },
            [&](int j, int c) { return v_tile[j * dv + c]; });
        __syncthreads();
    }
    float* ob = out + (long long)bh * sq * dv;
    for (int e = threadIdx.x; e < ATT_TILE * dv; e += ATT_THREADS) {
        int i = e / dv, c = e % dv;
        if (row0 + i < sq) ob[(long long)(row0 + i) * dv + c] = l[i] > 0.0f ? acc[e] / l[i] : 0.0f;
    }
    if (threadIdx.x < ATT_TILE && row0 + (int)threadIdx.x < sq) {
        float row_l = l[threadIdx.x];  // 0: every key masked
        lse[(long long)bh * sq + row0 + threadIdx.x] =
            row_l > 0.0f ? m[threadIdx.x] + logf(row_l) : -ember_negative_infinity();
    }
}

#define ATTENTION_FORWARD_PARAMS                                                                                    \
    const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,                         \
        const float *__restrict__ key_mask, float *__restrict__ out, float *__restrict__ lse, int sq, int sk, int d, \
        int dv, float scale, int heads, int causal
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_forward_f32(ATTENTION_FORWARD_PARAMS) {
    attention_forward<ATT_F32>(q, k, v, key_mask, out, lse, sq, sk, d, dv, scale, heads, causal);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_forward_tf32(ATTENTION_FORWARD_PARAMS) {
    attention_forward<ATT_TF32>(q, k, v, key_mask, out, lse, sq, sk, d, dv, scale, heads, causal);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_forward_bf16(ATTENTION_FORWARD_PARAMS) {
    attention_forward<ATT_BF16>(q, k, v, key_mask, out, lse, sq, sk, d, dv, scale, heads, causal);
}

// delta[r] = Σ_c out[r, c]·d_out[r, c] for the `rows` rows of [rows, dv]; one warp per row.
extern "C" __global__ void attention_delta_f32(const float* __restrict__ out, const float* __restrict__ d_out,
                                               float* __restrict__ delta, long long rows, int dv) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    float sum = 0.0f;
    if (row < rows)
        for (int c = lane; c < dv; c += 32) sum += out[row * dv + c] * d_out[row * dv + c];
    sum = ember_warp_sum(sum);
    if (lane == 0 && row < rows) delta[row] = sum;
}

// Recomputes, for query rows [row0, row0 + 32) and key rows [key0, key0 + 32), P (into
// p_tile) and dS = scale·P ⊙ (dO·Vᵀ − delta) (into ds_tile), both [query][key] with row
// stride 33; zero outside the matrices and for masked pairs (mask_row null: no key masked;
// causal: the keys after the query masked). The caller synchronizes after.
template <int ARITHMETIC>
__device__ __forceinline__ void recompute_tiles(const float* q_tile, const float* k_tile, const float* do_tile,
                                                const float* v_tile, const float* lse_rows, const float* delta_rows,
                                                const float* mask_row, int causal, float* p_tile, float* ds_tile,
                                                int row0, int key0, int sq, int sk, int d, int dv, float scale) {
    tile_product<ARITHMETIC>(
        p_tile, ATT_LD, ATT_TILE, d, false, nullptr, [&](int i, int p) { return q_tile[i * (d + 1) + p]; },
        [&](int p, int j) { return k_tile[j * (d + 1) + p]; });
    tile_product<ARITHMETIC>(
        ds_tile, ATT_LD, ATT_TILE, dv, false, nullptr, [&](int i, int c) { return do_tile[i * (dv + 1) + c]; },
        [&](int c, int j) { return v_tile[j * (dv + 1) + c]; });
    __syncthreads();
    for (int e = threadIdx.x; e < ATT_TILE * ATT_TILE; e += ATT_THREADS) {
        int i = e / ATT_TILE, j = e % ATT_TILE;
        float p = 0.0f, ds = 0.0f;
        if (row0 + i < sq && key0 + j < sk && pair_attended(mask_row, causal, row0 + i, key0 + j)) {
            p = expf(scale * p_tile[i * ATT_LD + j] - lse_rows[i]);
            ds = scale * p * (ds_tile[i * ATT_LD + j] - delta_rows[i]);
        }
        p_tile[i * ATT_LD + j] = p;
        ds_tile[i * ATT_LD + j] = ds;
    }
}

// Copies lse and delta of query rows [row0, row0 + 32) to shared memory (0 past the end).
__device__ __forceinline__ void load_row_stats(float* lse_rows, float* delta_rows, const float* lse, const float* delta,
                                               int row0, int sq) {
    if (threadIdx.x < ATT_TILE) {
        bool valid = row0 + (int)threadIdx.x < sq;
        lse_rows[threadIdx.x] = valid ? lse[row0 + threadIdx.x] : 0.0f;
        delta_rows[threadIdx.x] = valid ? delta[row0 + threadIdx.x] : 0.0f;
    }
}

template <int ARITHMETIC>
__device__ __forceinline__ void attention_backward_dkdv(const float* q, const float* k, const float* v,
                                                        const float* key_mask, const float* lse, const float* delta,
                                                        const float* d_out, float* dk, float* dv_out, int sq, int sk,
                                                        int d, int dv, float scale, int heads, int causal) {
    EMBER_DYNAMIC_SHARED(float, shared);
    float* k_tile = shared;                          // [32][d + 1]
    float* v_tile = k_tile + ATT_TILE * (d + 1);     // [32][dv + 1]
    float* q_tile = v_tile + ATT_TILE * (dv + 1);    // [32][d + 1]
    float* do_tile = q_tile + ATT_TILE * (d + 1);    // [32][dv + 1]
    float* dk_acc = do_tile + ATT_TILE * (dv + 1);   // [32][d]
    float* dv_acc = dk_acc + ATT_TILE * d;           // [32][dv]
    float* p_tile = dv_acc + ATT_TILE * dv;          // [32][33]
    float* ds_tile = p_tile + ATT_TILE * ATT_LD;     // [32][33]
    float* lse_rows = ds_tile + ATT_TILE * ATT_LD;   // [32]
    float* delta_rows = lse_rows + ATT_TILE;         // [32]

    int bh = blockIdx.y, key0 = blockIdx.x * ATT_TILE;
    const float* qb = q + (long long)bh * sq * d;
    const float* dob = d_out + (long long)bh * sq * dv;
    const float* mask_row = mask_row_of(key_mask, bh, heads, sk);
    load_rows(k_tile, d + 1, k + (long long)bh * sk * d, key0, sk, d);
    load_rows(v_tile, dv + 1, v + (long long)bh * sk * dv, key0, sk, dv);
    for (int e = threadIdx.x; e < ATT_TILE * d; e += ATT_THREADS) dk_acc[e] = 0.0f;
    for (int e = threadIdx.x; e < ATT_TILE * dv; e += ATT_THREADS) dv_acc[e] = 0.0f;
    for (int row0 = causal ? key0 : 0; row0 < sq; row0 += ATT_TILE) {  // (causal: see the top)
        load_rows(q_tile, d + 1, qb, row0, sq, d);
        load_rows(do_tile, dv + 1, dob, row0, sq, dv);
        load_row_stats(lse_rows, delta_rows, lse + (long long)bh * sq, delta + (long long)bh * sq, row0, sq);
        __syncthreads();
        recompute_tiles<ARITHMETIC>(q_tile, k_tile, do_tile, v_tile, lse_rows, delta_rows, mask_row, causal, p_tile, ds_tile,
                              row0, key0, sq, sk, d, dv, scale);
        __syncthreads();
        // dV[j] += Σ_i P[i][j]·dO[i], dK[j] += Σ_i dS[i][j]·Q[i]
        tile_product<ARITHMETIC>(
            dv_acc, dv, dv, ATT_TILE, true, nullptr, [&](int j, int i) { return p_tile[i * ATT_LD + j]; },
            [&](int i, int c) { return do_tile[i * (dv + 1) + c]; });
        tile_product<ARITHMETIC>(
            dk_acc, d, d, ATT_TILE, true, nullptr, [&](int j, int i) { return ds_tile[i * ATT_LD + j]; },
            [&](int i, int c) { return q_tile[i * (d + 1) + c]; });
        __syncthreads();
    }
    for (int e = threadIdx.x; e < ATT_TILE * d; e += ATT_THREADS) {
        int j = e / d, c = e % d;
        if (key0 + j < sk) dk[((long long)bh * sk + key0 + j) * d + c] = dk_acc[e];
    }
    for (int e = threadIdx.x; e < ATT_TILE * dv; e += ATT_THREADS) {
        int j = e / dv, c = e % dv;
        if (key0 + j < sk) dv_out[((long long)bh * sk + key0 + j) * dv + c] = dv_acc[e];
    }
}

template <int ARITHMETIC>
__device__ __forceinline__ void attention_backward_dq(const float* q, const float* k, const float* v, const float* key_mask,
                                                      const float* lse, const float* delta, const float* d_out, float* dq,
                                                      int sq, int sk, int d, int dv, float scale, int heads, int causal) {
    EMBER_DYNAMIC_SHARED(float, shared);
    float* q_tile = shared;                          // [32][d + 1]
    float* do_tile = q_tile + ATT_TILE * (d + 1);    // [32][dv + 1]
    float* k_tile = do_tile + ATT_TILE * (dv + 1);   // [32][d + 1]
    float* v_tile = k_tile + ATT_TILE * (d + 1);     // [32][dv + 1]
    float* dq_acc = v_tile + ATT_TILE * (dv + 1);    // [32][d]
    float* p_tile = dq_acc + ATT_TILE * d;           // [32][33] (S, then P: only dS is used)
    float* ds_tile = p_tile + ATT_TILE * ATT_LD;     // [32][33]
    float* lse_rows = ds_tile + ATT_TILE * ATT_LD;   // [32]
    float* delta_rows = lse_rows + ATT_TILE;         // [32]

    int bh = blockIdx.y, row0 = blockIdx.x * ATT_TILE;
    const float* kb = k + (long long)bh * sk * d;
    const float* vb = v + (long long)bh * sk * dv;
    const float* mask_row = mask_row_of(key_mask, bh, heads, sk);
    load_rows(q_tile, d + 1, q + (long long)bh * sq * d, row0, sq, d);
    load_rows(do_tile, dv + 1, d_out + (long long)bh * sq * dv, row0, sq, dv);
    load_row_stats(lse_rows, delta_rows, lse + (long long)bh * sq, delta + (long long)bh * sq, row0, sq);
    for (int e = threadIdx.x; e < ATT_TILE * d; e += ATT_THREADS) dq_acc[e] = 0.0f;
    for (int key0 = 0, key_end = tile_key_end(row0, sk, causal); key0 < key_end; key0 += ATT_TILE) {
        load_rows(k_tile, d + 1, kb, key0, sk, d);
        load_rows(v_tile, dv + 1, vb, key0, sk, dv);
        __syncthreads();
        recompute_tiles<ARITHMETIC>(q_tile, k_tile, do_tile, v_tile, lse_rows, delta_rows, mask_row, causal, p_tile, ds_tile,
                              row0, key0, sq, sk, d, dv, scale);
        __syncthreads();
        tile_product<ARITHMETIC>(  // dQ[i] += Σ_j dS[i][j]·K[j]
            dq_acc, d, d, ATT_TILE, true, nullptr, [&](int i, int j) { return ds_tile[i * ATT_LD + j]; },
            [&](int j, int c) { return k_tile[j * (d + 1) + c]; });
        __syncthreads();
    }
    for (int e = threadIdx.x; e < ATT_TILE * d; e += ATT_THREADS) {
        int i = e / d, c = e % d;
        if (row0 + i < sq) dq[((long long)bh * sq + row0 + i) * d + c] = dq_acc[e];
    }
}

#define ATTENTION_BACKWARD_PARAMS                                                                                  \
    const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,                        \
        const float *__restrict__ key_mask, const float *__restrict__ lse, const float *__restrict__ delta,       \
        const float *__restrict__ d_out
#define ATTENTION_DKDV_PARAMS \
    ATTENTION_BACKWARD_PARAMS, float *__restrict__ dk, float *__restrict__ dv_out, int sq, int sk, int d, int dv, float scale, int heads, int causal
#define ATTENTION_DKDV_ARGS q, k, v, key_mask, lse, delta, d_out, dk, dv_out, sq, sk, d, dv, scale, heads, causal
#define ATTENTION_DQ_PARAMS \
    ATTENTION_BACKWARD_PARAMS, float *__restrict__ dq, int sq, int sk, int d, int dv, float scale, int heads, int causal
#define ATTENTION_DQ_ARGS q, k, v, key_mask, lse, delta, d_out, dq, sq, sk, d, dv, scale, heads, causal
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_backward_dkdv_f32(ATTENTION_DKDV_PARAMS) {
    attention_backward_dkdv<ATT_F32>(ATTENTION_DKDV_ARGS);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_backward_dkdv_tf32(ATTENTION_DKDV_PARAMS) {
    attention_backward_dkdv<ATT_TF32>(ATTENTION_DKDV_ARGS);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_backward_dkdv_bf16(ATTENTION_DKDV_PARAMS) {
    attention_backward_dkdv<ATT_BF16>(ATTENTION_DKDV_ARGS);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_backward_dq_f32(ATTENTION_DQ_PARAMS) {
    attention_backward_dq<ATT_F32>(ATTENTION_DQ_ARGS);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_backward_dq_tf32(ATTENTION_DQ_PARAMS) {
    attention_backward_dq<ATT_TF32>(ATTENTION_DQ_ARGS);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_backward_dq_bf16(ATTENTION_DQ_PARAMS) {
    attention_backward_dq<ATT_BF16>(ATTENTION_DQ_ARGS);
}
