// General matrix multiply in f32: C[z] (+)= A[z] · B[z] for a batch of z matrices, A m×k and
// B k×n with any row, column and batch strides (so transposed operands cost nothing), C with
// unit column stride. The CPU reference is cpu/gemm.rs; matmul runs on it.
//
// Tiling: ember_tile_gemm (ember_cuda.h): a block of 256 threads per 64×64 tile of C, 16-deep
// panels of A and B in shared memory, 4×4 outputs per thread; blockIdx.z is the matrix.
#include "ember_cuda.h"

// A and B as strided matrices.
struct StridedOperands {
    const float* a_data;
    const float* b_data;
    long long a_row, a_col, b_row, b_col;
    __device__ float a(int i, int p) const { return a_data[i * a_row + p * a_col]; }
    __device__ float b(int p, int j) const { return b_data[p * b_row + j * b_col]; }
};

extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS)
gemm_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c, int m, int n, int k,
         long long a_row, long long a_col, long long a_batch, long long b_row, long long b_col,
         long long b_batch, long long c_row, long long c_batch, int accumulate) {
    StridedOperands operands{a + blockIdx.z * a_batch, b + blockIdx.z * b_batch, a_row, a_col, b_row, b_col};
    int row0 = blockIdx.y * EMBER_TILE, col0 = blockIdx.x * EMBER_TILE;
    float acc[4][4];
    ember_tile_gemm(operands, m, n, 0, k, row0, col0, acc);
    float* out = c + blockIdx.z * c_batch;
    ember_tile_store(m, n, row0, col0, acc, [&](int row, int col, float value) {
        float* at = out + row * c_row + col;
        *at = accumulate ? *at + value : value;
    });
}
