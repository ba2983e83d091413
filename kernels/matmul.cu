// General matrix multiply in f32: C[z] (+)= A[z] · B[z] for a batch of z matrices, A m×k and
// B k×n with any row, column and batch strides (so transposed operands cost nothing), C with
// unit column stride. The CPU reference is cpu/gemm.rs; matmul runs on it.
//
// Tiling: the products of ember_cuda.h, blocks of 256 threads: ember_tile_gemm (exact f32) on
// 128×128 tiles, 8×8 outputs per thread (`_f32_t128`), or on 64×64 tiles, 4×4 per thread
// (`_f32_t64`, for outputs with few tiles); ember_tile_gemm_tf32 and ember_tile_gemm_bf16
// (tensor cores, when the thread's precision is TF32 or bf16) on the same tiles (`_tf32_t128`,
// `_tf32_t64`, `_bf16_t128`, `_bf16_t64`); each for the four
// storage orders of A and B (gemm_nn, gemm_tn, gemm_nt, gemm_tt: StridedOperands below).
// blockIdx.z is (matrix, split): a product with few output tiles and a long depth k (a
// linear layer's input gradient at batch 128: 2×8 tiles, k = 2048) would leave most of a GPU
// idle, so the host splits k into `splits` ranges of `k_chunk`; split s computes its range's
// product into its own slice of a partial buffer [matrix][split][m][n], and
// gemm_sum_splits_f32 adds the slices in split order into C (deterministic). With one split,
// the tile writes C directly.
#include "ember_cuda.h"

// A and B as strided matrices (the tiles' operands: offsets by row, column and depth), read
// along A's depth or its rows and along B's columns or its depth (ember_panel_loop), whichever
// is contiguous: the kernels gemm_nn (A and B row-major), gemm_tn (A column-major, i.e.
// transposed), gemm_nt (B column-major) and gemm_tt; the host picks by the strides.
template <bool A_DEPTH_FAST, bool B_DEPTH_FAST>
struct StridedOperands {
    static constexpr bool a_depth_fast = A_DEPTH_FAST, b_depth_fast = B_DEPTH_FAST;
    struct Row {
        long long offset;
    };
    struct Col {
        long long offset;
    };
    struct Depth {
        long long a_offset, b_offset;
    };
    const float* a_data;
    const float* b_data;
    long long a_row, a_col, b_row, b_col;
    __device__ Row row(int i) const { return {i * a_row}; }
    __device__ Col col(int j) const { return {j * b_col}; }
    __device__ Depth depth(int p) const { return {p * a_col, p * b_row}; }
    __device__ float a(const Row& row, const Depth& depth) const { return a_data[row.offset + depth.a_offset]; }
    __device__ float b(const Depth& depth, const Col& col) const { return b_data[depth.b_offset + col.offset]; }
};

template <class Product, class Operands>
__device__ __forceinline__ void strided_gemm(const float* a, const float* b, float* c, int m, int n, int k, long long a_row,
                                     long long a_col, long long a_batch, long long b_row, long long b_col, long long b_batch,
                                     long long c_row, long long c_batch, int accumulate, int splits, int k_chunk) {
    int matrix = blockIdx.z / splits, split = blockIdx.z % splits;
    Operands operands{a + matrix * a_batch, b + matrix * b_batch, a_row, a_col, b_row, b_col};
    int row0 = blockIdx.y * Product::size, col0 = blockIdx.x * Product::size;
    int k_begin = split * k_chunk, k_end = k_begin + k_chunk < k ? k_begin + k_chunk : k;
    typename Product::Acc acc;
    Product::multiply(operands, m, n, k_begin, k_end, row0, col0, acc);
    // one split: C's matrix; several: this split's slice of the partials (c_batch = m·n)
    float* out = c + blockIdx.z * c_batch;
    Product::store(m, n, row0, col0, acc, [&](int row, int col, float value) {
        float* at = out + row * c_row + col;
        *at = accumulate ? *at + value : value;
    });
}

#define GEMM_PARAMS                                                                                                      \
    const float *__restrict__ a, const float *__restrict__ b, float *__restrict__ c, int m, int n, int k, long long a_row, \
        long long a_col, long long a_batch, long long b_row, long long b_col, long long b_batch, long long c_row,          \
        long long c_batch, int accumulate, int splits, int k_chunk
#define GEMM_ARGS a, b, c, m, n, k, a_row, a_col, a_batch, b_row, b_col, b_batch, c_row, c_batch, accumulate, splits, k_chunk

template <class Product>
__device__ __forceinline__ void gemm_nn(GEMM_PARAMS) { strided_gemm<Product, StridedOperands<true, false>>(GEMM_ARGS); }
template <class Product>
__device__ __forceinline__ void gemm_tn(GEMM_PARAMS) { strided_gemm<Product, StridedOperands<false, false>>(GEMM_ARGS); }
template <class Product>
__device__ __forceinline__ void gemm_nt(GEMM_PARAMS) { strided_gemm<Product, StridedOperands<true, true>>(GEMM_ARGS); }
template <class Product>
__device__ __forceinline__ void gemm_tt(GEMM_PARAMS) { strided_gemm<Product, StridedOperands<false, true>>(GEMM_ARGS); }

EMBER_TILED_KERNELS(gemm_nn, (GEMM_PARAMS), (GEMM_ARGS))
EMBER_TILED_KERNELS(gemm_tn, (GEMM_PARAMS), (GEMM_ARGS))
EMBER_TILED_KERNELS(gemm_nt, (GEMM_PARAMS), (GEMM_ARGS))
EMBER_TILED_KERNELS(gemm_tt, (GEMM_PARAMS), (GEMM_ARGS))

// C[z] (+)= Σ_s partials[z][s] for a batch of m×n matrices, the splits added in order.
extern "C" __global__ void gemm_sum_splits_f32(const float* __restrict__ partials, float* __restrict__ c, int m, int n,
                                               long long batch, int splits, long long c_row, long long c_batch,
                                               int accumulate) {
    long long per_matrix = (long long)m * n, total = batch * per_matrix;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long matrix = i / per_matrix, within = i % per_matrix;
        const float* slices = partials + matrix * splits * per_matrix + within;
        float sum = 0.0f;
        for (int s = 0; s < splits; s++) sum += slices[s * per_matrix];
        float* at = c + matrix * c_batch + (within / n) * c_row + within % n;
        *at = accumulate ? *at + sum : sum;
    }
}
