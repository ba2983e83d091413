// The one header every kernel includes. It gives the kernels a small vocabulary that means
// the same on a GPU (NVRTC) and in the CPU emulator (emu/cuda_emu.h):
//
//   EMBER_SHARED(float[32][33], tile);   a block's static shared array (16-byte aligned)
//   EMBER_DYNAMIC_SHARED(float, smem);   the launch's dynamic shared memory, as float*
//   ember_f16_to_f32 / ember_f32_to_f16  half precision (IEEE binary16), round to nearest even
//   ember_bf16_to_f32 / ember_f32_to_bf16
//   ember_f32_to_tf32                    TF32 (10 mantissa bits in an f32's bit pattern),
//                                        round to nearest, ties away from zero
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
__device__ __forceinline__ unsigned ember_f32_to_tf32(float f) {
    unsigned t;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(t) : "f"(f));
    return t;
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

// D = A·B + C for one 16×8×8 tile held by the warp in TF32: A 16×8 (row), B 8×8 (col), one
// TF32 bit pattern (ember_f32_to_tf32) per register, C and D 16×8 in f32
// (mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32). Lane l = 4g + t holds A's (g, t),
// (g + 8, t), (g, t + 4), (g + 8, t + 4) and B's (t, g), (t + 4, g); C and D as for m16n8k16.
__device__ __forceinline__ void ember_mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
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
// A block computes a TILE×TILE tile of C = A·B, A m×k and B k×n, over the depth range
// [k_begin, k_end). A and B are not arrays but functions of `operands`: a strided matrix for
// GEMM, an on-the-fly im2col for convolutions (so no im2col buffer exists). So that an
// element costs few instructions, its index is split in three parts, each computed once:
//   Row  row(i)   what A's row i needs        (once per thread: its rows are fixed)
//   Col  col(j)   what B's column j needs     (once per thread: its column is fixed)
//   Depth depth(k) what depth k needs on both sides (once per block and panel, by as many
//                 threads as the panel is deep, into shared memory)
// and the element is a(Row, Depth) or b(Depth, Col); `a_depth_fast` and `b_depth_fast` say
// which way each is best read (ember_panel_loop). TILE is 128 for large outputs and 64
// for small ones (four times the blocks to fill the GPU); the host picks (cuda/launch.rs,
// `Tile`).
//
// - Threads: 256, a 16×16 grid; thread (tx, ty) owns M×M outputs (M = TILE/16: 8 or 4), the
//   rows ty·M/2 + {0..M/2-1} and TILE/2 + the same, likewise the columns with tx, so that its
//   operands in shared memory are two vectors of M/2 floats each side (M² FMAs for 4 loads).
// - Panels: 8 deep, loaded by ember_panel_loop (the half both tiles share): each thread
//   loads TILE/32 elements of A's TILE×8 panel, all at depth tid % 8 (rows tid/8 + 32·i: a
//   warp reads 4 rows × 8 consecutive depths), and as many of B's 8×TILE panel, all in column
//   tid % TILE (a warp reads 32 consecutive columns), the next panel during the products.
// - Shared memory: a_panel[p][i] = A(row0 + i, p0 + p), b_panel[p][j] = B(p0 + p, col0 + j),
//   rows padded by 4 floats so the depth-fast stores of A spread over the 32 banks; the
//   inner loop's vector reads are broadcast (A) or consecutive (B).
// - Zero past the edges of A, B and the depth range, so the inner loop never branches.

#define EMBER_TILE_DEPTH 8
#define EMBER_TILE_THREADS 256

// Unrolls the loop that follows on a GPU, so that arrays indexed by its counter stay in
// registers (the emulator's compiler does not know the pragma, and -Werror refuses it).
#if defined(EMBER_CUDA_EMULATOR)
#define EMBER_UNROLL
#else
#define EMBER_UNROLL _Pragma("unroll")
#endif

// N floats read from shared memory in one access (the vector types of CUDA's headers are
// not included): 16 bytes for the 128-tile, 8 for the 64-tile.
template <int N>
struct ember_floats;
template <>
struct __align__(16) ember_floats<4> {
    float v[4];
};
template <>
struct __align__(8) ember_floats<2> {
    float v[2];
};

// The loading half that both tiles share: a panel loop over the depth range [k_begin, k_end)
// in panels of DEPTH. Each thread loads TILE·DEPTH/256 elements of A's TILE×DEPTH panel and
// as many of B's DEPTH×TILE panel, each operand read along its contiguous axis so that a
// warp's loads fall on few memory sectors (the operands say which: a_depth_fast,
// b_depth_fast):
//   A depth-fast (A row-major: a weight, dy in the weight gradient): all at depth
//     a_p = tid % DEPTH, rows a_index + (256/DEPTH)·i (a warp: consecutive depths of a few rows);
//   A row-fast (A column-major: a transposed matrix): all in row a_index = tid % TILE, depths
//     a_p + (256/TILE)·i (a warp: 32 consecutive rows);
//   B column-fast (B row-major: im2col, dy gathered): all in column b_index = tid % TILE,
//     depths b_p + (256/TILE)·i;
//   B depth-fast (B column-major: the weight gradient's im2colᵀ, whose depth is the pixel, a
//     transposed weight): all at depth b_p = tid % DEPTH, columns b_index + (256/DEPTH)·i.
// The Row and Col parts of its elements are computed once, the Depth parts once per panel by
// DEPTH threads into shared memory. The next panel's values are loaded into registers while
// the block multiplies the current one. Past the edges of A, B and the depth range the
// values are zeros.
//
// For each panel: store_panel(loads) puts the registers into the tile's shared panels (its
// layout, its rounding) at (a_row(i), a_depth(i)) and (b_depth(i), b_col(i)), then after a
// barrier multiply_panel() multiplies them.
template <int TILE, int DEPTH, class Operands>
struct EmberPanelLoads {
    static constexpr bool a_depth_fast = Operands::a_depth_fast, b_depth_fast = Operands::b_depth_fast;
    static constexpr int count = TILE * DEPTH / EMBER_TILE_THREADS;                   // per thread and panel, each side
    static constexpr int a_step = EMBER_TILE_THREADS / (a_depth_fast ? DEPTH : TILE);  // between its A rows or depths
    static constexpr int b_step = EMBER_TILE_THREADS / (b_depth_fast ? DEPTH : TILE);  // between its B depths or columns
    static constexpr int a_rows = a_depth_fast ? count : 1, b_columns = b_depth_fast ? count : 1;
    int a_p, a_index, b_index, b_p;
    typename Operands::Row rows[a_rows];
    bool row_in[a_rows];
    typename Operands::Col cols[b_columns];
    bool col_in[b_columns];
    float a_next[count], b_next[count];  // A(row0 + a_row(i), p0 + a_depth(i)), B(p0 + b_depth(i), col0 + b_col(i))

    __device__ __forceinline__ int a_row(int i) const { return a_depth_fast ? a_index + a_step * i : a_index; }
    __device__ __forceinline__ int a_depth(int i) const { return a_depth_fast ? a_p : a_p + a_step * i; }
    __device__ __forceinline__ int b_depth(int i) const { return b_depth_fast ? b_p : b_p + b_step * i; }
    __device__ __forceinline__ int b_col(int i) const { return b_depth_fast ? b_index + b_step * i : b_index; }
};

template <int TILE, int DEPTH, class Operands, class StorePanel, class MultiplyPanel>
__device__ __forceinline__ void ember_panel_loop(const Operands& operands, int m, int n, int k_begin, int k_end, int row0,
                                                 int col0, const StorePanel& store_panel,
                                                 const MultiplyPanel& multiply_panel) {
    using Loads = EmberPanelLoads<TILE, DEPTH, Operands>;
    using Depth = typename Operands::Depth;
    EMBER_SHARED(Depth[DEPTH], depths);  // depths[p] = operands.depth(p0 + p)
    int tid = threadIdx.x;
    Loads loads;
    loads.a_p = Loads::a_depth_fast ? tid % DEPTH : tid / TILE;
    loads.a_index = Loads::a_depth_fast ? tid / DEPTH : tid % TILE;
    loads.b_index = Loads::b_depth_fast ? tid / DEPTH : tid % TILE;
    loads.b_p = Loads::b_depth_fast ? tid % DEPTH : tid / TILE;
    EMBER_UNROLL
    for (int r = 0; r < Loads::a_rows; r++) {
        int row = row0 + loads.a_row(r);
        loads.row_in[r] = row < m;
        loads.rows[r] = operands.row(loads.row_in[r] ? row : 0);
    }
    EMBER_UNROLL
    for (int c = 0; c < Loads::b_columns; c++) {
        int col = col0 + loads.b_col(c);
        loads.col_in[c] = col < n;
        loads.cols[c] = operands.col(loads.col_in[c] ? col : 0);
    }

    auto fetch = [&](int p0) {
        EMBER_UNROLL
        for (int i = 0; i < Loads::count; i++) {
            int p = loads.a_depth(i), r = Loads::a_depth_fast ? i : 0;
            loads.a_next[i] = (loads.row_in[r] && p0 + p < k_end) ? operands.a(loads.rows[r], depths[p]) : 0.0f;
        }
        EMBER_UNROLL
        for (int i = 0; i < Loads::count; i++) {
            int p = loads.b_depth(i), c = Loads::b_depth_fast ? i : 0;
            loads.b_next[i] = (loads.col_in[c] && p0 + p < k_end) ? operands.b(depths[p], loads.cols[c]) : 0.0f;
        }
    };
    auto describe_depths = [&](int p0) {
        if (tid < DEPTH && p0 + tid < k_end) depths[tid] = operands.depth(p0 + tid);
    };
    describe_depths(k_begin);
    __syncthreads();
    fetch(k_begin);
    for (int p0 = k_begin; p0 < k_end; p0 += DEPTH) {
        __syncthreads();  // every thread is done with the previous panel and with `depths`
        store_panel(loads);
        describe_depths(p0 + DEPTH);
        __syncthreads();
        if (p0 + DEPTH < k_end) fetch(p0 + DEPTH);  // in flight during the products
        multiply_panel();
    }
}

template <int TILE>
struct EmberTile {
    static constexpr int micro = TILE / 16;                                      // outputs per thread, per side
    static constexpr int vector = micro / 2;                                     // floats per shared read
    static constexpr int half = TILE / 2;
};

// The offset in its tile of a thread's r-th accumulator row (or column), the thread being at
// `coordinate` of the 16×16 grid.
template <int TILE>
__device__ __forceinline__ int ember_tile_offset(int coordinate, int r) {
    constexpr int vector = EmberTile<TILE>::vector;
    return (r / vector) * EmberTile<TILE>::half + coordinate * vector + r % vector;
}

template <int TILE, class Operands>
__device__ __forceinline__ void ember_tile_gemm(const Operands& operands, int m, int n, int k_begin, int k_end,
                                                int row0, int col0, float (&acc)[TILE / 16][TILE / 16]) {
    using T = EmberTile<TILE>;
    constexpr int M = T::micro, V = T::vector;
    EMBER_SHARED(float[EMBER_TILE_DEPTH][TILE + 4], a_panel);
    EMBER_SHARED(float[EMBER_TILE_DEPTH][TILE + 4], b_panel);
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    EMBER_UNROLL
    for (int r = 0; r < M; r++)
        EMBER_UNROLL
        for (int s = 0; s < M; s++) acc[r][s] = 0.0f;
    using Loads = EmberPanelLoads<TILE, EMBER_TILE_DEPTH, Operands>;
    auto store_panel = [&](const Loads& loads) {
        EMBER_UNROLL
        for (int i = 0; i < Loads::count; i++) {
            a_panel[loads.a_depth(i)][loads.a_row(i)] = loads.a_next[i];
            b_panel[loads.b_depth(i)][loads.b_col(i)] = loads.b_next[i];
        }
    };
    auto multiply_panel = [&]() {
        EMBER_UNROLL
        for (int p = 0; p < EMBER_TILE_DEPTH; p++) {
            float a_values[M], b_values[M];
            EMBER_UNROLL
            for (int h = 0; h < 2; h++) {
                ember_floats<V> a_vector = *reinterpret_cast<const ember_floats<V>*>(&a_panel[p][h * T::half + ty * V]);
                ember_floats<V> b_vector = *reinterpret_cast<const ember_floats<V>*>(&b_panel[p][h * T::half + tx * V]);
                EMBER_UNROLL
                for (int v = 0; v < V; v++) {
                    a_values[h * V + v] = a_vector.v[v];
                    b_values[h * V + v] = b_vector.v[v];
                }
            }
            EMBER_UNROLL
            for (int r = 0; r < M; r++)
                EMBER_UNROLL
                for (int s = 0; s < M; s++) acc[r][s] = fmaf(a_values[r], b_values[s], acc[r][s]);
        }
    };
    ember_panel_loop<TILE, EMBER_TILE_DEPTH>(operands, m, n, k_begin, k_end, row0, col0, store_panel, multiply_panel);
}

// Calls store(row, col, value) for each in-range output of the tile ember_tile_gemm computed.
template <int TILE, class Store>
__device__ __forceinline__ void ember_tile_store(int m, int n, int row0, int col0, const float (&acc)[TILE / 16][TILE / 16],
                                                 const Store& store) {
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    EMBER_UNROLL
    for (int r = 0; r < TILE / 16; r++) {
        int row = row0 + ember_tile_offset<TILE>(ty, r);
        if (row >= m) continue;
        EMBER_UNROLL
        for (int s = 0; s < TILE / 16; s++) {
            int col = col0 + ember_tile_offset<TILE>(tx, s);
            if (col < n) store(row, col, acc[r][s]);
        }
    }
}

// ---- The same product on tensor cores, in TF32 ----
//
// ember_tile_gemm_tf32 computes the tile ember_tile_gemm does, from the same operands (so
// GEMM and every convolution get it by naming it), with A and B rounded to TF32 (10 mantissa
// bits, ember_f32_to_tf32) and multiplied by mma.m16n8k8 with f32 accumulation. The host
// picks it when the thread's precision is TF32 (crates/tensor/src/precision.rs).
//
// - Threads: 256, 8 warps as 2 (rows) × 4 (columns); warp (wm, wn) owns the warp tile of
//   TILE/2 rows × TILE/4 columns at (wm·TILE/2, wn·TILE/4): 4×4 mma tiles of 16×8 for the
//   128-tile (64 accumulators a thread), 2×2 for the 64-tile.
// - Panels: 16 deep (two mma steps of 8), loaded by ember_panel_loop as for ember_tile_gemm
//   (each thread TILE/16 elements of A's TILE×16 panel at depth tid % 16, rows tid/16 + 16·i,
//   and as many of B's 16×TILE panel in column tid % TILE); they are rounded to TF32 once, on
//   their way into shared memory.
// - Shared memory: a_panel[i][p] = A(row0 + i, p0 + p) with rows of 20 words, b_panel[p][j] =
//   B(p0 + p, col0 + j) with rows of TILE + 8 words: a fragment's 32 reads (lane 4g + t
//   reads row g, depth t of A; depth t, column g of B) then fall in 32 different banks.
// - Zero past the edges of A, B and the depth range, as ember_tile_gemm.

#define EMBER_TF32_DEPTH 16

template <int TILE>
struct EmberTf32Tile {
    static constexpr int warp_rows = TILE / 2, warp_cols = TILE / 4;  // a warp's share of the tile
    static constexpr int mi = warp_rows / 16, ni = warp_cols / 8;      // its mma tiles
    static constexpr int a_stride = EMBER_TF32_DEPTH + 4, b_stride = TILE + 8;
};

template <int TILE>
using EmberTf32Acc = float[EmberTf32Tile<TILE>::mi][EmberTf32Tile<TILE>::ni][4];

// A thread's place in the tensor-core tiles (TF32 and bf16 share it): lane 4g + t of the warp
// whose warp tile starts at (warp_row, warp_col) of the block's tile.
template <int TILE>
struct EmberMmaLane {
    int g, t, warp_row, warp_col;
    __device__ __forceinline__ EmberMmaLane() {
        int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        g = lane / 4;
        t = lane % 4;
        warp_row = (warp / 4) * EmberTf32Tile<TILE>::warp_rows;
        warp_col = (warp % 4) * EmberTf32Tile<TILE>::warp_cols;
    }
};

template <int TILE>
__device__ __forceinline__ void ember_zero_mma_acc(EmberTf32Acc<TILE>& acc) {
    EMBER_UNROLL
    for (int i = 0; i < EmberTf32Tile<TILE>::mi; i++)
        EMBER_UNROLL
        for (int j = 0; j < EmberTf32Tile<TILE>::ni; j++)
            EMBER_UNROLL
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;
}

template <int TILE, class Operands>
__device__ __forceinline__ void ember_tile_gemm_tf32(const Operands& operands, int m, int n, int k_begin, int k_end,
                                                     int row0, int col0, EmberTf32Acc<TILE>& acc) {
    using T = EmberTf32Tile<TILE>;
    constexpr int D = EMBER_TF32_DEPTH;
    EMBER_SHARED(unsigned[TILE][T::a_stride], a_panel);
    EMBER_SHARED(unsigned[D][T::b_stride], b_panel);
    const EmberMmaLane<TILE> lane;
    const int g = lane.g, t = lane.t, warp_row = lane.warp_row, warp_col = lane.warp_col;
    ember_zero_mma_acc<TILE>(acc);
    using Loads = EmberPanelLoads<TILE, D, Operands>;
    auto store_panel = [&](const Loads& loads) {
        EMBER_UNROLL
        for (int i = 0; i < Loads::count; i++) {
            a_panel[loads.a_row(i)][loads.a_depth(i)] = ember_f32_to_tf32(loads.a_next[i]);
            b_panel[loads.b_depth(i)][loads.b_col(i)] = ember_f32_to_tf32(loads.b_next[i]);
        }
    };
    auto multiply_panel = [&]() {
        EMBER_UNROLL
        for (int kk = 0; kk < D; kk += 8) {
            unsigned a_fragment[T::mi][4], b_fragment[T::ni][2];
            EMBER_UNROLL
            for (int i = 0; i < T::mi; i++) {
                int row = warp_row + i * 16 + g;
                a_fragment[i][0] = a_panel[row][kk + t];
                a_fragment[i][1] = a_panel[row + 8][kk + t];
                a_fragment[i][2] = a_panel[row][kk + t + 4];
                a_fragment[i][3] = a_panel[row + 8][kk + t + 4];
            }
            EMBER_UNROLL
            for (int j = 0; j < T::ni; j++) {
                int column = warp_col + j * 8 + g;
                b_fragment[j][0] = b_panel[kk + t][column];
                b_fragment[j][1] = b_panel[kk + t + 4][column];
            }
            EMBER_UNROLL
            for (int i = 0; i < T::mi; i++)
                EMBER_UNROLL
                for (int j = 0; j < T::ni; j++) ember_mma_m16n8k8_tf32(acc[i][j], a_fragment[i], b_fragment[j], acc[i][j]);
        }
    };
    ember_panel_loop<TILE, D>(operands, m, n, k_begin, k_end, row0, col0, store_panel, multiply_panel);
}

// Calls store(row, col, value) for each in-range output of the tile ember_tile_gemm_tf32
// computed (accumulator r of mma tile (i, j) is row g + 8·(r / 2), column 2t + r % 2 of it).
template <int TILE, class Store>
__device__ __forceinline__ void ember_tile_store_tf32(int m, int n, int row0, int col0, const EmberTf32Acc<TILE>& acc,
                                                      const Store& store) {
    using T = EmberTf32Tile<TILE>;
    const EmberMmaLane<TILE> lane;
    const int g = lane.g, t = lane.t, warp_row = row0 + lane.warp_row, warp_col = col0 + lane.warp_col;
    EMBER_UNROLL
    for (int i = 0; i < T::mi; i++)
        EMBER_UNROLL
        for (int r = 0; r < 4; r++) {
            int row = warp_row + i * 16 + g + 8 * (r / 2);
            if (row >= m) continue;
            EMBER_UNROLL
            for (int j = 0; j < T::ni; j++) {
                int col = warp_col + j * 8 + 2 * t + r % 2;
                if (col < n) store(row, col, acc[i][j][r]);
            }
        }
}

// One warp: acc += A·B for a 16×8 tile on tensor cores in TF32, A (16×depth) and B (depth×8)
// read through a(i, p) and b(p, j) (from shared memory, usually) and rounded to TF32 as they
// are loaded; depths past `depth` count as zeros. acc is in the mma's C layout: register r
// of lane 4g + t is row g + 8·(r / 2), column 2t + r % 2.
template <class A, class B>
__device__ __forceinline__ void ember_warp_mma_tf32(float acc[4], int depth, const A& a, const B& b) {
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    for (int p0 = 0; p0 < depth; p0 += 8) {
        int p = p0 + t, q = p0 + t + 4;
        bool p_in = p < depth, q_in = q < depth;
        unsigned a_fragment[4] = {ember_f32_to_tf32(p_in ? a(g, p) : 0.0f), ember_f32_to_tf32(p_in ? a(g + 8, p) : 0.0f),
                                  ember_f32_to_tf32(q_in ? a(g, q) : 0.0f), ember_f32_to_tf32(q_in ? a(g + 8, q) : 0.0f)};
        unsigned b_fragment[2] = {ember_f32_to_tf32(p_in ? b(p, g) : 0.0f), ember_f32_to_tf32(q_in ? b(q, g) : 0.0f)};
        ember_mma_m16n8k8_tf32(acc, a_fragment, b_fragment, acc);
    }
}

// ---- The same product on tensor cores, with bf16 inputs ----
//
// ember_tile_gemm_bf16 computes the tile from the same operands with A and B rounded to bf16
// (7 stored mantissa bits, round to nearest even: ember_f32_to_bf16) and multiplied by
// mma.m16n8k16 with f32 accumulation and f32 outputs: autocast's bf16 inputs, the storage
// staying f32. The
// host picks it when the thread's precision is bf16. Warps, accumulators and the store are
// those of the TF32 tile (the C layouts are the same).
// - Panels: 16 deep, one mma step, loaded by ember_panel_loop; each value rounded to bf16 on
//   its way into shared memory.
// - Shared memory: a_panel[i][p] = A(row0 + i, p0 + p) and b_panel[j][p] = B(p0 + p, col0 + j)
//   (B by columns, so that both fragments take consecutive depths), rows of 24 halves: the
//   32-bit pairs a fragment reads (lane 4g + t: row g, depths 2t and 2t + 1) fall in 32
//   different banks.

#define EMBER_BF16_DEPTH 16
#define EMBER_BF16_STRIDE (EMBER_BF16_DEPTH + 8)

// Two consecutive bf16 values of shared memory as one fragment register (the first in the
// low half).
__device__ __forceinline__ unsigned ember_bf16_pair(const unsigned short* first) {
    return (unsigned)first[0] | ((unsigned)first[1] << 16);
}

template <int TILE, class Operands>
__device__ __forceinline__ void ember_tile_gemm_bf16(const Operands& operands, int m, int n, int k_begin, int k_end,
                                                     int row0, int col0, EmberTf32Acc<TILE>& acc) {
    using T = EmberTf32Tile<TILE>;
    constexpr int D = EMBER_BF16_DEPTH;
    EMBER_SHARED(unsigned short[TILE][EMBER_BF16_STRIDE], a_panel);
    EMBER_SHARED(unsigned short[TILE][EMBER_BF16_STRIDE], b_panel);
    const EmberMmaLane<TILE> lane;
    const int g = lane.g, t = lane.t, warp_row = lane.warp_row, warp_col = lane.warp_col;
    ember_zero_mma_acc<TILE>(acc);
    using Loads = EmberPanelLoads<TILE, D, Operands>;
    auto store_panel = [&](const Loads& loads) {
        EMBER_UNROLL
        for (int i = 0; i < Loads::count; i++) {
            a_panel[loads.a_row(i)][loads.a_depth(i)] = ember_f32_to_bf16(loads.a_next[i]);
            b_panel[loads.b_col(i)][loads.b_depth(i)] = ember_f32_to_bf16(loads.b_next[i]);
        }
    };
    auto multiply_panel = [&]() {
        unsigned a_fragment[T::mi][4], b_fragment[T::ni][2];
        EMBER_UNROLL
        for (int i = 0; i < T::mi; i++)
            EMBER_UNROLL
            for (int r = 0; r < 4; r++) a_fragment[i][r] = ember_bf16_pair(&a_panel[warp_row + i * 16 + g + 8 * (r % 2)][2 * t + 8 * (r / 2)]);
        EMBER_UNROLL
        for (int j = 0; j < T::ni; j++)
            EMBER_UNROLL
            for (int r = 0; r < 2; r++) b_fragment[j][r] = ember_bf16_pair(&b_panel[warp_col + j * 8 + g][2 * t + 8 * r]);
        EMBER_UNROLL
        for (int i = 0; i < T::mi; i++)
            EMBER_UNROLL
            for (int j = 0; j < T::ni; j++) ember_mma_m16n8k16_bf16(acc[i][j], a_fragment[i], b_fragment[j], acc[i][j]);
    };
    ember_panel_loop<TILE, D>(operands, m, n, k_begin, k_end, row0, col0, store_panel, multiply_panel);
}

// One warp: acc += A·B for a 16×8 tile on tensor cores with bf16 inputs (mma.m16n8k16), as
// ember_warp_mma_tf32: A and B read through a(i, p) and b(p, j), rounded to bf16 as they are
// loaded, depths past `depth` zeros; acc in the C layout.
template <class A, class B>
__device__ __forceinline__ void ember_warp_mma_bf16(float acc[4], int depth, const A& a, const B& b) {
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    auto pair = [&](auto&& value, int p) {  // bf16(value(p)) | bf16(value(p + 1)) << 16, zeros past depth
        unsigned low = p < depth ? ember_f32_to_bf16(value(p)) : 0u, high = p + 1 < depth ? ember_f32_to_bf16(value(p + 1)) : 0u;
        return low | (high << 16);
    };
    for (int p0 = 0; p0 < depth; p0 += 16) {
        unsigned a_fragment[4], b_fragment[2];
        for (int r = 0; r < 4; r++) {
            int row = g + 8 * (r % 2);
            a_fragment[r] = pair([&](int p) { return a(row, p); }, p0 + 2 * t + 8 * (r / 2));
        }
        for (int r = 0; r < 2; r++) b_fragment[r] = pair([&](int p) { return b(p, g); }, p0 + 2 * t + 8 * r);
        ember_mma_m16n8k16_bf16(acc, a_fragment, b_fragment, acc);
    }
}

// ---- The two tiles as one interface, for kernels written once for both ----
//
//   typename Product::Acc acc;
//   Product::multiply(operands, m, n, k_begin, k_end, row0, col0, acc);
//   Product::store(m, n, row0, col0, acc, [&](int row, int col, float value) { ... });
//
// EmberFmaProduct<TILE> is ember_tile_gemm (exact f32), EmberTf32Product<TILE> and
// EmberBf16Product<TILE> the tensor-core tiles; kernels named *_f32_t128, *_f32_t64,
// *_tf32_t128, *_tf32_t64, *_bf16_t128 and *_bf16_t64 instantiate one each.

template <int TILE>
struct EmberFmaProduct {
    static constexpr int size = TILE;
    using Acc = float[TILE / 16][TILE / 16];
    template <class Operands>
    __device__ static void multiply(const Operands& operands, int m, int n, int k_begin, int k_end, int row0, int col0,
                                    Acc& acc) {
        ember_tile_gemm<TILE>(operands, m, n, k_begin, k_end, row0, col0, acc);
    }
    template <class Store>
    __device__ static void store(int m, int n, int row0, int col0, const Acc& acc, const Store& store) {
        ember_tile_store<TILE>(m, n, row0, col0, acc, store);
    }
};

// The tensor-core products: BF16 false is ember_tile_gemm_tf32, true ember_tile_gemm_bf16.
template <int TILE, bool BF16>
struct EmberMmaProduct {
    static constexpr int size = TILE;
    using Acc = EmberTf32Acc<TILE>;
    template <class Operands>
    __device__ static void multiply(const Operands& operands, int m, int n, int k_begin, int k_end, int row0, int col0,
                                    Acc& acc) {
        if constexpr (BF16) ember_tile_gemm_bf16<TILE>(operands, m, n, k_begin, k_end, row0, col0, acc);
        else ember_tile_gemm_tf32<TILE>(operands, m, n, k_begin, k_end, row0, col0, acc);
    }
    template <class Store>
    __device__ static void store(int m, int n, int row0, int col0, const Acc& acc, const Store& store) {
        ember_tile_store_tf32<TILE>(m, n, row0, col0, acc, store);
    }
};
template <int TILE>
using EmberTf32Product = EmberMmaProduct<TILE, false>;
template <int TILE>
using EmberBf16Product = EmberMmaProduct<TILE, true>;

// The six kernels of a product written once as `template <class Product> __device__ void
// name(...)`: name_f32_t128, name_f32_t64, name_tf32_t128, name_tf32_t64, name_bf16_t128 and
// name_bf16_t64, each taking
// `params` and calling name<Product>`args` (both parenthesized lists). The 128-tiles'
// ~160 registers a thread allow one block per multiprocessor; the 64-tiles are allowed 128
// (two blocks), where ptxas would otherwise aim at 64 and may spill.
#define EMBER_TILED_KERNELS(name, params, args)                                                                      \
    extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 1) name##_f32_t128 params {                    \
        name<EmberFmaProduct<128>> args;                                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 2) name##_f32_t64 params {                     \
        name<EmberFmaProduct<64>> args;                                                                              \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 1) name##_tf32_t128 params {                   \
        name<EmberTf32Product<128>> args;                                                                            \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 2) name##_tf32_t64 params {                    \
        name<EmberTf32Product<64>> args;                                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 1) name##_bf16_t128 params {                   \
        name<EmberBf16Product<128>> args;                                                                            \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(EMBER_TILE_THREADS, 2) name##_bf16_t64 params {                    \
        name<EmberBf16Product<64>> args;                                                                             \
    }
