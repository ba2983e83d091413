// Tensor-core GEMM for f16 or bf16 inputs with f32 accumulation, C = A·B: A [m, k] and B [k, n]
// row-major 16-bit elements, C [m, n] row-major f32. Built on the building blocks of
// ember_cuda.h (mma.sync m16n8k16, ldmatrix, cp.async), which the emulator runs after the PTX
// ISA's fragment layouts. The two *_check kernels below prove those building blocks: they
// load fragments by the documented formulas, so the GPU run checks the formulas against the
// hardware and the emulator run checks the emulation against the formulas.
//
// Tiling: a block of 128 threads (4 warps, 2×2) computes a 64×64 tile of C. For each 16-deep
// slice of k, each thread copies one 16-byte chunk of A's 64×16 panel and one of B's 16×64
// panel to shared memory (cp.async when the chunk is whole and aligned, else element by
// element with zeros past the edges). Warp (wm, wn) owns the 32×32 sub-tile at rows 32·wm,
// columns 32·wn: 2×4 mma tiles of 16×8, A fragments by ldmatrix.x4, B fragments by
// ldmatrix.x2.trans, accumulators in 32 registers per thread. Shared rows are padded by 8
// elements (16 bytes), so the eight rows one ldmatrix phase reads fall in different banks.
#include "ember_cuda.h"

#define TC_TILE 64
#define TC_DEPTH 16
#define TC_THREADS 128
#define TC_A_LD (TC_DEPTH + 8)
#define TC_B_LD (TC_TILE + 8)

__device__ __forceinline__ void mma_tile(float d[4], const unsigned a[4], const unsigned b[2], int bf16) {
    if (bf16) ember_mma_m16n8k16_bf16(d, a, b, d);
    else ember_mma_m16n8k16_f16(d, a, b, d);
}

// Copies 8 consecutive 16-bit elements of a row (the first at `column`) to shared memory:
// one cp.async when all 8 are inside the row and the source is 16-byte aligned, else one by
// one with zeros past the end (rows past `rows` are all zeros).
__device__ __forceinline__ void load_chunk(unsigned short* destination, const unsigned short* matrix, int row, int rows,
                                           int column, int columns) {
    const unsigned short* source = matrix + (long long)row * columns + column;
    bool whole = row < rows && column + 8 <= columns && ((unsigned long long)source & 15) == 0;
    if (whole) {
        ember_cp_async_16(destination, source);
    } else {
        for (int e = 0; e < 8; e++)
            destination[e] = (row < rows && column + e < columns) ? source[e] : (unsigned short)0;
    }
}

extern "C" __global__ void __launch_bounds__(TC_THREADS)
gemm_f16_f32(const unsigned short* __restrict__ a, const unsigned short* __restrict__ b, float* __restrict__ c, int m,
             int n, int k, int bf16) {
    EMBER_SHARED(unsigned short[TC_TILE][TC_A_LD], a_panel);
    EMBER_SHARED(unsigned short[TC_DEPTH][TC_B_LD], b_panel);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int wm = warp / 2, wn = warp % 2;
    int row0 = blockIdx.y * TC_TILE, col0 = blockIdx.x * TC_TILE;

    float acc[2][4][4];
    for (int mi = 0; mi < 2; mi++)
        for (int ni = 0; ni < 4; ni++)
            for (int i = 0; i < 4; i++) acc[mi][ni][i] = 0.0f;

    for (int p0 = 0; p0 < k; p0 += TC_DEPTH) {
        {
            int i = threadIdx.x / 2, p = (threadIdx.x % 2) * 8;  // A: 64 rows × 2 chunks
            load_chunk(&a_panel[i][p], a, row0 + i, m, p0 + p, k);
            int q = threadIdx.x / 8, j = (threadIdx.x % 8) * 8;  // B: 16 rows × 8 chunks
            // B's rows are its k; columns past n and rows past k are zeros.
            load_chunk(&b_panel[q][j], b, p0 + q, k, col0 + j, n);
        }
        ember_cp_async_commit();
        ember_cp_async_wait_all();
        __syncthreads();
        for (int mi = 0; mi < 2; mi++) {
            unsigned a_fragment[4];
            ember_ldmatrix_x4(a_fragment, &a_panel[wm * 32 + mi * 16 + lane % 16][(lane / 16) * 8]);
            for (int ni = 0; ni < 4; ni++) {
                unsigned b_fragment[2];
                ember_ldmatrix_x2_trans(b_fragment, &b_panel[lane % 16][wn * 32 + ni * 8]);
                mma_tile(acc[mi][ni], a_fragment, b_fragment, bf16);
            }
        }
        __syncthreads();
    }
    int g = lane / 4, t = lane % 4;
    for (int mi = 0; mi < 2; mi++)
        for (int ni = 0; ni < 4; ni++)
            for (int i = 0; i < 4; i++) {
                int row = row0 + wm * 32 + mi * 16 + g + (i >= 2 ? 8 : 0);
                int col = col0 + wn * 32 + ni * 8 + 2 * t + (i & 1);
                if (row < m && col < n) c[(long long)row * n + col] = acc[mi][ni][i];
            }
}

// One warp: D = A·B + C for A 16×16, B 16×8 (row-major 16-bit), C, D 16×8 (row-major f32),
// with every fragment loaded and stored by the PTX ISA's formulas (no ldmatrix).
extern "C" __global__ void mma_fragment_check(const unsigned short* a, const unsigned short* b, const float* c,
                                              float* d, int bf16) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    unsigned a_fragment[4], b_fragment[2];
    float c_fragment[4], d_fragment[4];
    for (int j = 0; j < 4; j++) {
        int row = g + 8 * (j & 1), col = 2 * t + 8 * (j / 2);
        a_fragment[j] = a[row * 16 + col] | ((unsigned)a[row * 16 + col + 1] << 16);
    }
    for (int j = 0; j < 2; j++) {
        int k0 = 2 * t + 8 * j;
        b_fragment[j] = b[k0 * 8 + g] | ((unsigned)b[(k0 + 1) * 8 + g] << 16);
    }
    for (int i = 0; i < 4; i++) c_fragment[i] = c[(g + 8 * (i / 2)) * 8 + 2 * t + (i & 1)];
    if (bf16) ember_mma_m16n8k16_bf16(d_fragment, a_fragment, b_fragment, c_fragment);
    else ember_mma_m16n8k16_f16(d_fragment, a_fragment, b_fragment, c_fragment);
    for (int i = 0; i < 4; i++) d[(g + 8 * (i / 2)) * 8 + 2 * t + (i & 1)] = d_fragment[i];
}

// One warp: D = A·B + C in TF32 for A 16×8, B 8×8, C, D 16×8 (row-major f32): A and B rounded
// to TF32 (tf32_a, tf32_b get the bit patterns), fragments loaded by the PTX ISA's formulas.
extern "C" __global__ void mma_tf32_fragment_check(const float* a, const float* b, const float* c, float* d,
                                                   unsigned* tf32_a, unsigned* tf32_b) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    unsigned a_fragment[4], b_fragment[2];
    float c_fragment[4], d_fragment[4];
    for (int j = 0; j < 4; j++) {
        int row = g + 8 * (j & 1), col = t + 4 * (j / 2);
        a_fragment[j] = ember_f32_to_tf32(a[row * 8 + col]);
        tf32_a[row * 8 + col] = a_fragment[j];
    }
    for (int j = 0; j < 2; j++) {
        b_fragment[j] = ember_f32_to_tf32(b[(t + 4 * j) * 8 + g]);
        tf32_b[(t + 4 * j) * 8 + g] = b_fragment[j];
    }
    for (int i = 0; i < 4; i++) c_fragment[i] = c[(g + 8 * (i / 2)) * 8 + 2 * t + (i & 1)];
    ember_mma_m16n8k8_tf32(d_fragment, a_fragment, b_fragment, c_fragment);
    for (int i = 0; i < 4; i++) d[(g + 8 * (i / 2)) * 8 + 2 * t + (i & 1)] = d_fragment[i];
}

// One warp: four 8×8 matrices (m[j·64 + row·8 + col], 16-bit) through shared memory and
// ldmatrix; direct[lane·4 + j] gets register j of ldmatrix.x4, transposed[lane·2 + j]
// register j of ldmatrix.x2.trans (of matrices 0 and 1).
extern "C" __global__ void ldmatrix_check(const unsigned short* m, unsigned* direct, unsigned* transposed) {
    EMBER_SHARED(unsigned short[32][8], rows);
    int lane = threadIdx.x;
    for (int e = 0; e < 8; e++) rows[lane][e] = m[lane * 8 + e];
    __syncthreads();
    unsigned r4[4], r2[2];
    ember_ldmatrix_x4(r4, &rows[lane][0]);
    ember_ldmatrix_x2_trans(r2, &rows[lane % 16][0]);
    for (int j = 0; j < 4; j++) direct[lane * 4 + j] = r4[j];
    for (int j = 0; j < 2; j++) transposed[lane * 2 + j] = r2[j];
}

// bits[i] = bf16 bits of values[i] (ember_f32_to_bf16: cvt.rn.bf16.f32 on a GPU), for the n
// values: the rounding the bf16 tensor-core products apply to their inputs.
extern "C" __global__ void bf16_round_check(const float* values, unsigned short* bits, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) bits[i] = ember_f32_to_bf16(values[i]);
}
