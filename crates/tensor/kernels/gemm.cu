// General matrix multiply in f32: C[z] (+)= A[z] · B[z] for a batch of z matrices, A m×k and
// B k×n with any row, column and batch strides (so transposed operands cost nothing), C with
// unit column stride. The CPU reference is cpu/gemm.rs; matmul, and later conv and attention,
// run on it.
//
// Tiling: a block of 256 threads computes a 64×64 tile of C. For each 16-deep slice of k,
// the block stages A's 64×16 and B's 16×64 panels in shared memory (zero-padded past the
// matrix edges, so the inner loop never branches), then each thread (tx, ty) of the 16×16
// grid accumulates the 4×4 outputs at rows ty + 16·r and columns tx + 16·s in registers.
// The stride-16 spread makes a warp's reads of the B panel hit 32 consecutive banks.
#include "ember_cuda.h"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_THREADS 256

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
gemm_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c, int m, int n, int k,
         long long a_row, long long a_col, long long a_batch, long long b_row, long long b_col,
         long long b_batch, long long c_row, long long c_batch, int accumulate) {
    EMBER_SHARED(float[GEMM_BK][GEMM_BM + 4], a_panel);  // a_panel[p][i] = A(row0 + i, p0 + p)
    EMBER_SHARED(float[GEMM_BK][GEMM_BN + 4], b_panel);  // b_panel[p][j] = B(p0 + p, col0 + j)
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int row0 = blockIdx.y * GEMM_BM, col0 = blockIdx.x * GEMM_BN;
    a += blockIdx.z * a_batch;
    b += blockIdx.z * b_batch;
    c += blockIdx.z * c_batch;

    float acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int s = 0; s < 4; s++) acc[r][s] = 0.0f;

    for (int p0 = 0; p0 < k; p0 += GEMM_BK) {
        for (int e = threadIdx.x; e < GEMM_BM * GEMM_BK; e += GEMM_THREADS) {
            int i = e / GEMM_BK, p = e % GEMM_BK;
            int row = row0 + i, depth = p0 + p;
            a_panel[p][i] = (row < m && depth < k) ? a[row * a_row + depth * a_col] : 0.0f;
        }
        for (int e = threadIdx.x; e < GEMM_BK * GEMM_BN; e += GEMM_THREADS) {
            int p = e / GEMM_BN, j = e % GEMM_BN;
            int depth = p0 + p, col = col0 + j;
            b_panel[p][j] = (depth < k && col < n) ? b[depth * b_row + col * b_col] : 0.0f;
        }
        __syncthreads();
        for (int p = 0; p < GEMM_BK; p++) {
            float a_values[4], b_values[4];
            for (int r = 0; r < 4; r++) a_values[r] = a_panel[p][ty + 16 * r];
            for (int s = 0; s < 4; s++) b_values[s] = b_panel[p][tx + 16 * s];
            for (int r = 0; r < 4; r++)
                for (int s = 0; s < 4; s++) acc[r][s] = fmaf(a_values[r], b_values[s], acc[r][s]);
        }
        __syncthreads();
    }

    for (int r = 0; r < 4; r++) {
        int row = row0 + ty + 16 * r;
        if (row >= m) continue;
        for (int s = 0; s < 4; s++) {
            int col = col0 + tx + 16 * s;
            if (col >= n) continue;
            float* out = c + row * c_row + col;
            *out = accumulate ? *out + acc[r][s] : acc[r][s];
        }
    }
}
