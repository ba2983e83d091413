// The one header every kernel includes. It gives the kernels a small vocabulary that means
// the same on a GPU (NVRTC) and in the CPU emulator (emu/cuda_emu.h):
//
//   EMBER_SHARED(float[32][33], tile);   a block's static shared array (16-byte aligned)
//   EMBER_DYNAMIC_SHARED(float, smem);   the launch's dynamic shared memory, as float*
//   ember_f16_to_f32 / ember_f32_to_f16  half precision (IEEE binary16), round to nearest even
//   ember_bf16_to_f32 / ember_f32_to_bf16
//
// The kernels include no CUDA header, so NVRTC needs no include directory.
#pragma once

// A strided view of up to 8 axes, passed to kernels by value: element number i (row-major in
// `sizes`) sits at sum over k of index_k * strides[k] from the view's start. The host side
// is `cuda::Strides` (src/cuda/backend.rs), with the same layout.
struct EmberStrides {
    int rank;
    int unused;
    long long sizes[8];
    long long strides[8];
};

// The sizes of a 2-D convolution (NCHW), by value: x [n, c_in, h, w], weight
// [c_out, c_in, kh, kw], y [n, c_out, ho, wo]. The host side is `cuda::ConvShape`.
struct EmberConv {
    int n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, ho, wo;
};

#if defined(EMBER_CUDA_EMULATOR)
#include "emu/cuda_emu.h"
#else

// ---- On a GPU ----

template <class T> using ember_type = T;
#define EMBER_SHARED(type, name) __shared__ __align__(16) ember_type<type> name
#define EMBER_DYNAMIC_SHARED(type, name)                                                 \
    extern __shared__ __align__(16) unsigned char ember_dynamic_shared_bytes[];          \
    type* name = reinterpret_cast<type*>(ember_dynamic_shared_bytes)

__device__ __forceinline__ float ember_f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short ember_f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float ember_bf16_to_f32(unsigned short h) {
    return __uint_as_float(static_cast<unsigned>(h) << 16);
}
__device__ __forceinline__ unsigned short ember_f32_to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// ---- Tensor cores and asynchronous copies (sm_80+), as small functions of ours ----
// Each wraps one PTX instruction; the emulator (emu/cuda_emu.h) gives the same functions an
// emulated body that follows the PTX ISA's fragment layouts, so kernels built on them are
// tested on the CPU too.

// The shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ unsigned ember_shared_address(const void* pointer) {
    unsigned address;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(pointer));
    return address;
}

// D = A·B + C for one 16×8×16 tile held by the warp: A 16×16 (row), B 16×8 (col) as f16 pairs,
// C and D 16×8 in f32 (mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32).
__device__ __forceinline__ void ember_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
// The same with bf16 inputs.
__device__ __forceinline__ void ember_mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// Four 8×8 matrices of 16-bit elements from shared memory into the warp (ldmatrix .x4):
// lane l gives the address of row l % 8 of matrix l / 8; r[j] receives row l / 4, columns
// 2·(l % 4) and +1 of matrix j.
__device__ __forceinline__ void ember_ldmatrix_x4(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(ember_shared_address(row)));
}
// Two 8×8 matrices, transposed (ldmatrix .x2.trans): lanes 0-15 give the row addresses;
// r[j] receives rows 2·(l % 4) and +1 of matrix j at column l / 4.
__device__ __forceinline__ void ember_ldmatrix_x2_trans(unsigned r[2], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(ember_shared_address(row)));
}

// 16 bytes from global to shared memory, asynchronously (cp.async.cg); visible to this
// thread after ember_cp_async_wait_all, to the block after that and a barrier.
__device__ __forceinline__ void ember_cp_async_16(void* shared_destination, const void* global_source) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(ember_shared_address(shared_destination)), "l"(global_source));
}
__device__ __forceinline__ void ember_cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void ember_cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

#endif

// ---- Both ----

// Ceiling of a / b for positive b.
__device__ __forceinline__ int ember_ceil_div(int a, int b) { return (a + b - 1) / b; }

__device__ __forceinline__ float ember_negative_infinity() { return __int_as_float(static_cast<int>(0xff800000u)); }

// σ(x) = 1/(1 + e^−x), by two branches so that the exponential never overflows.
__device__ __forceinline__ float ember_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

// The offset of element number `i` (row-major) of the view `s`.
__device__ __forceinline__ long long ember_offset(const EmberStrides& s, long long i) {
    long long offset = 0;
    for (int axis = s.rank - 1; axis >= 0; axis--) {
        long long size = s.sizes[axis];
        offset += (i % size) * s.strides[axis];
        i /= size;
    }
    return offset;
}

// The sum of `value` over the 32 lanes of a full warp, in every lane.
__device__ __forceinline__ float ember_warp_sum(float value) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

// The maximum of `value` over the 32 lanes of a full warp, in every lane (NaN wins).
__device__ __forceinline__ float ember_warp_max(float value) {
    for (int offset = 16; offset > 0; offset /= 2) {
        float other = __shfl_xor_sync(0xffffffffu, value, offset);
        value = (other > value || other != other) ? other : value;
    }
    return value;
}

// The sum of `value` over a block of `blockDim.x` threads (a multiple of 32, at most 1024),
// in every thread. `scratch` holds 32 floats of shared memory; it is free again on return.
__device__ __forceinline__ float ember_block_sum(float value, float* scratch) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    value = ember_warp_sum(value);
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    value = lane < warps ? scratch[lane] : 0.0f;
    value = ember_warp_sum(value);
    __syncthreads();
    return value;
}

// The maximum of `value` over a block, as ember_block_sum.
__device__ __forceinline__ float ember_block_max(float value, float* scratch) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    value = ember_warp_max(value);
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    value = lane < warps ? scratch[lane] : ember_negative_infinity();
    value = ember_warp_max(value);
    __syncthreads();
    return value;
}

// ---- The tiled matrix multiply that GEMM and the implicit-GEMM convolutions share ----
//
// A block of 256 threads computes a 64×64 tile of C = A·B, A m×k and B k×n, over the depth
// range [k_begin, k_end). A and B are not arrays but `operands.a(row, depth)` and
// `operands.b(depth, col)`: a strided matrix for GEMM, an on-the-fly im2col for convolutions
// (so no im2col buffer exists). For each 16-deep slice, the block stages A's 64×16 and B's
// 16×64 panels in shared memory (zero past the edges, so the inner loop never branches), then
// thread (tx, ty) of the 16×16 grid accumulates the 4×4 outputs at rows ty + 16·r, columns
// tx + 16·s of the tile into acc[r][s]. The stride-16 spread makes a warp's reads of the B
// panel hit 32 consecutive banks.

#define EMBER_TILE 64
#define EMBER_TILE_DEPTH 16
#define EMBER_TILE_THREADS 256

template <class Operands>
__device__ __forceinline__ void ember_tile_gemm(const Operands& operands, int m, int n, int k_begin, int k_end,
                                                int row0, int col0, float acc[4][4]) {
    EMBER_SHARED(float[EMBER_TILE_DEPTH][EMBER_TILE + 4], a_panel);  // a_panel[p][i] = A(row0 + i, p0 + p)
    EMBER_SHARED(float[EMBER_TILE_DEPTH][EMBER_TILE + 4], b_panel);  // b_panel[p][j] = B(p0 + p, col0 + j)
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int r = 0; r < 4; r++)
        for (int s = 0; s < 4; s++) acc[r][s] = 0.0f;

    for (int p0 = k_begin; p0 < k_end; p0 += EMBER_TILE_DEPTH) {
        for (int e = threadIdx.x; e < EMBER_TILE * EMBER_TILE_DEPTH; e += EMBER_TILE_THREADS) {
            int i = e / EMBER_TILE_DEPTH, p = e % EMBER_TILE_DEPTH;
            int row = row0 + i, depth = p0 + p;
            a_panel[p][i] = (row < m && depth < k_end) ? operands.a(row, depth) : 0.0f;
        }
        for (int e = threadIdx.x; e < EMBER_TILE_DEPTH * EMBER_TILE; e += EMBER_TILE_THREADS) {
            int p = e / EMBER_TILE, j = e % EMBER_TILE;
            int depth = p0 + p, col = col0 + j;
            b_panel[p][j] = (depth < k_end && col < n) ? operands.b(depth, col) : 0.0f;
        }
        __syncthreads();
        for (int p = 0; p < EMBER_TILE_DEPTH; p++) {
            float a_values[4], b_values[4];
            for (int r = 0; r < 4; r++) a_values[r] = a_panel[p][ty + 16 * r];
            for (int s = 0; s < 4; s++) b_values[s] = b_panel[p][tx + 16 * s];
            for (int r = 0; r < 4; r++)
                for (int s = 0; s < 4; s++) acc[r][s] = fmaf(a_values[r], b_values[s], acc[r][s]);
        }
        __syncthreads();
    }
}

// Calls store(row, col, value) for each in-range output of the tile ember_tile_gemm computed.
template <class Store>
__device__ __forceinline__ void ember_tile_store(int m, int n, int row0, int col0, const float acc[4][4], const Store& store) {
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int r = 0; r < 4; r++) {
        int row = row0 + ty + 16 * r;
        if (row >= m) continue;
        for (int s = 0; s < 4; s++) {
            int col = col0 + tx + 16 * s;
            if (col < n) store(row, col, acc[r][s]);
        }
    }
}
