// An emulation of the CUDA execution model on the CPU, so that ember's kernels (the .cu files
// one level up) compile as C++ and run in `cargo test` on machines without a GPU.
//
// The model (runtime.cpp does the work):
// - A launch runs its blocks one at a time. Each thread of a block is a fiber with its own
//   stack (runtime.cpp switches stacks in a few lines of x86-64 assembly); the fibers of a
//   block run on one OS thread, switching only where CUDA threads synchronize: __syncthreads, the warp collectives (__shfl_*_sync, __ballot_sync,
//   __syncwarp, the mma fragments) and the thread's end.
// - Which fiber runs next is drawn from a seeded generator, so the order of threads between
//   barriers changes from seed to seed; a kernel that forgot a barrier reads data nobody wrote.
// - __syncthreads is a real barrier. A barrier that some threads of the block never reach (they
//   returned, or wait at another collective) is reported as an error naming the kernel, the
//   block and the threads — a deadlock on a GPU, an error message here.
// - Shared memory is one allocation per block (dynamic part first, then the static arrays in
//   the order the kernel declares them, each followed by a poisoned redzone under
//   AddressSanitizer), filled with 0xff bytes at the block's start: a float read before any
//   thread wrote it is NaN and shows in the results.
// - Device memory is host memory, each buffer its own allocation, so AddressSanitizer (the
//   emulator is built with it) catches out-of-bounds global accesses.
// - Warp collectives wait for every lane of their mask, exchange values through the warp, and
//   report lanes that disagree on the mask or read a lane outside it.
#pragma once

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <type_traits>
#include <utility>

#define EMBER_CUDA_EMULATED 1

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {

// The calling fiber's thread, block and launch (set by the runtime before each switch).
struct ThreadContext {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned lane;   // threadIdx linearized, modulo 32
    unsigned warp;   // threadIdx linearized, divided by 32
};
extern thread_local const ThreadContext* current_thread;

// Block-wide barrier (__syncthreads).
void sync_threads();

// A warp collective: waits until every lane in `mask` has called one with the same mask,
// each depositing `bytes` bytes (at most 64) from `mine`; then copies all 32 deposits into
// `all` (lane l's at all + l * bytes; lanes outside the mask are left as they were).
void warp_exchange(unsigned mask, const void* mine, size_t bytes, void* all);

// The block's static shared arrays: the k-th declaration the thread reaches is the k-th array
// (every thread of a block must declare the same arrays in the same order).
void* static_shared(size_t bytes, size_t align);
// The launch's dynamic shared memory (sized by the launch).
void* dynamic_shared();

// Asynchronous copies (cp.async): queued per thread, done at the thread's next wait, so a
// kernel that reads the destination before waiting reads the poison still there.
void async_copy(void* destination, const void* source, size_t bytes);
void async_wait_all();

// Stops the kernel with an error message (reported to the host, naming the kernel).
[[noreturn]] void fail(const char* message);

// ---- How the host calls a kernel: its parameters from an array of pointers (as
// cuLaunchKernel takes them), and a signature the host checks its arguments against ----

template <class T> constexpr char parameter_code() {
    if constexpr (std::is_pointer_v<T>) return 'p';
    else if constexpr (std::is_same_v<T, int>) return 'i';
    else if constexpr (std::is_same_v<T, unsigned>) return 'u';
    else if constexpr (std::is_same_v<T, long long>) return 'l';
    else if constexpr (std::is_same_v<T, float>) return 'f';
    else if constexpr (std::is_same_v<T, double>) return 'd';
    else if constexpr (std::is_same_v<T, EmberStrides>) return 'S';
    else if constexpr (std::is_same_v<T, EmberConv>) return 'C';
    else return '?';
}
template <class... Params> const char* signature(void (*)(Params...)) {
    static const char codes[] = {parameter_code<std::remove_cv_t<Params>>()..., '\0'};
    return codes;
}
template <class... Params, size_t... I>
void invoke_unpacked(void (*kernel)(Params...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<Params>*>(args[I])...);
}
template <class... Params> void invoke(void (*kernel)(Params...), void** args) {
    invoke_unpacked(kernel, args, std::index_sequence_for<Params...>{});
}

}  // namespace emu

// ---- The CUDA vocabulary ----

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

#define threadIdx (emu::current_thread->thread_idx)
#define blockIdx (emu::current_thread->block_idx)
#define blockDim (emu::current_thread->block_dim)
#define gridDim (emu::current_thread->grid_dim)
#define warpSize 32

template <class T> using ember_type = T;
#define EMBER_SHARED(type, name)                                                            \
    ember_type<type>& name =                                                                \
        *static_cast<ember_type<type>*>(emu::static_shared(sizeof(type), alignof(type)))
#define EMBER_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(emu::dynamic_shared())

inline void __syncthreads() { emu::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_exchange(mask, nullptr, 0, nullptr); }
inline void __threadfence() {}
inline void __threadfence_block() {}

// ---- Warp shuffles and votes ----

namespace emu {
inline unsigned lane_id() { return current_thread->lane; }

// Exchanges `value` across the warp and returns lane `source`'s (checked against the mask).
template <class T> T shuffle_from(unsigned mask, T value, int source) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    T all[32];
    warp_exchange(mask, &value, sizeof(T), all);
    if (!((mask >> source) & 1u)) fail("a warp shuffle read a lane outside its mask");
    return all[source];
}
// The lane a shuffle reads within segments of `width` lanes (CUDA's rule: out of the
// segment, a lane reads itself).
inline int shuffle_source(int target, int width, bool stay_in_segment) {
    int lane = static_cast<int>(lane_id());
    int segment_start = lane & ~(width - 1);
    if (stay_in_segment && (target < segment_start || target >= segment_start + width)) return lane;
    return target;
}
}  // namespace emu

template <class T> T __shfl_sync(unsigned mask, T value, int source_lane, int width = 32) {
    int lane = static_cast<int>(emu::lane_id());
    int source = (lane & ~(width - 1)) + (source_lane & (width - 1));
    return emu::shuffle_from(mask, value, source);
}
template <class T> T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    int lane = static_cast<int>(emu::lane_id());
    return emu::shuffle_from(mask, value, emu::shuffle_source(lane ^ lane_mask, width, true));
}
template <class T> T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    int lane = static_cast<int>(emu::lane_id());
    return emu::shuffle_from(mask, value, emu::shuffle_source(lane + static_cast<int>(delta), width, true));
}
template <class T> T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    int lane = static_cast<int>(emu::lane_id());
    return emu::shuffle_from(mask, value, emu::shuffle_source(lane - static_cast<int>(delta), width, true));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    int all[32] = {};
    int mine = predicate != 0;
    emu::warp_exchange(mask, &mine, sizeof(int), all);
    unsigned bits = 0;
    for (int l = 0; l < 32; l++)
        if (((mask >> l) & 1u) && all[l]) bits |= 1u << l;
    return bits;
}
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

// ---- Atomics (real atomics, although a block's threads share one OS thread) ----

template <class T> T ember_atomic_update(T* address, T (*update)(T, T), T value) {
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(address, &old, update(old, value), false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
}
inline float atomicAdd(float* address, float value) {
    unsigned* bits = reinterpret_cast<unsigned*>(address);
    unsigned old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
        float old_value;
        std::memcpy(&old_value, &old, 4);
        float new_value = old_value + value;
        unsigned new_bits;
        std::memcpy(&new_bits, &new_value, 4);
        if (__atomic_compare_exchange_n(bits, &old, new_bits, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return old_value;
    }
}
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* address, unsigned value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline int atomicMax(int* address, int value) {
    return ember_atomic_update<int>(address, [](int a, int b) { return a > b ? a : b; }, value);
}
inline int atomicMin(int* address, int value) {
    return ember_atomic_update<int>(address, [](int a, int b) { return a < b ? a : b; }, value);
}
inline int atomicExch(int* address, int value) { return __atomic_exchange_n(address, value, __ATOMIC_RELAXED); }
inline int atomicCAS(int* address, int compare, int value) {
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
inline unsigned atomicCAS(unsigned* address, unsigned compare, unsigned value) {
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}

// ---- Math and bit casts ----

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Kernels are built with -ffp-contract=fast, as NVRTC fuses a·b + c by default. These two
// round on their own, as on a GPU: the empty asm hides the value, so it cannot be fused.
inline float __fmul_rn(float a, float b) {
    float product = a * b;
    asm("" : "+x"(product));
    return product;
}
inline float __fadd_rn(float a, float b) {
    float sum = a + b;
    asm("" : "+x"(sum));
    return sum;
}
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> T __ldg(const T* p) { return *p; }

// ---- Half precision, in software (the GPU side uses PTX cvt instructions) ----

inline float ember_f16_to_f32(unsigned short h) {
    unsigned sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    unsigned bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf, nan
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {  // subnormal: value = mantissa * 2^-24
        float value = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
        return sign ? -value : value;
    }
    return __uint_as_float(bits);
}
inline unsigned short ember_f32_to_f16(float f) {
    unsigned x = __float_as_uint(f);
    unsigned sign = (x >> 16) & 0x8000u;
    unsigned abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return static_cast<unsigned short>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
    if (abs >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);  // rounds to inf
    if (abs < 0x38800000u) {  // below the smallest normal half: round abs * 2^24 to an integer
        float scaled = __uint_as_float(abs) * 16777216.0f;
        return static_cast<unsigned short>(sign | static_cast<unsigned>(std::nearbyint(scaled)));
    }
    unsigned rounded = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even
    return static_cast<unsigned short>(sign | ((rounded - 0x38000000u) >> 13));
}
inline float ember_bf16_to_f32(unsigned short h) { return __uint_as_float(static_cast<unsigned>(h) << 16); }
inline unsigned short ember_f32_to_bf16(float f) {
    unsigned x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((x >> 16) | 0x40u);
    return static_cast<unsigned short>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
// TF32 keeps an f32's sign, exponent and top 10 mantissa bits; the 13 below are rounded away
// (to nearest, ties away from zero: adding half of the dropped part carries into the kept
// bits, and past the largest finite value into infinity) and left zero. NaN stays a NaN.
inline unsigned ember_f32_to_tf32(float f) {
    unsigned x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (x & 0xffffe000u) | 0x00400000u;
    if ((x & 0x7fffffffu) == 0x7f800000u) return x;
    return (x + 0x1000u) & 0xffffe000u;
}

// ---- Tensor cores, ldmatrix and cp.async, emulated after the PTX ISA's fragment layouts ----
// Lane l of a warp: group g = l / 4, thread-in-group t = l % 4. For mma.m16n8k16:
//   A (16×16, four registers of two 16-bit elements): register j holds row g + 8·(j & 1),
//     columns 2t, 2t + 1 (+ 8 for j ≥ 2)
//   B (16×8, two registers): register j holds rows 2t, 2t + 1 (+ 8 for j = 1), column g
//   C, D (16×8 f32): element i at row g + 8·(i ≥ 2), column 2t + (i & 1)

namespace emu {
inline float half_bits_to_float(unsigned bits, bool bf16) {
    return bf16 ? ember_bf16_to_f32(static_cast<unsigned short>(bits)) : ember_f16_to_f32(static_cast<unsigned short>(bits));
}
struct MmaOperands {
    unsigned a[4];
    unsigned b[2];
    float c[4];
};
// The warp's D = A·B + C for a 16×8×depth tile: every lane's operands are gathered, then
// `product(all, row, k, col)` gives A(row, k)·B(k, col) from the lanes and registers that hold
// them; each lane keeps its four elements of D.
template <class Product>
inline void mma_tile(float d[4], const unsigned a[4], const unsigned b[2], const float c[4], int depth, const Product& product) {
    MmaOperands mine, all[32];
    for (int j = 0; j < 4; j++) mine.a[j] = a[j], mine.c[j] = c[j];
    mine.b[0] = b[0], mine.b[1] = b[1];
    warp_exchange(0xffffffffu, &mine, sizeof mine, all);
    int g = static_cast<int>(lane_id()) / 4, t = static_cast<int>(lane_id()) % 4;
    for (int i = 0; i < 4; i++) {
        int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float sum = c[i];
        for (int k = 0; k < depth; k++) sum += product(all, row, k, col);
        d[i] = sum;
    }
}
inline void mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4], bool bf16) {
    mma_tile(d, a, b, c, 16, [bf16](const MmaOperands* all, int row, int k, int col) {
        int a_lane = (row % 8) * 4 + (k % 8) / 2, a_reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        int b_lane = col * 4 + (k % 8) / 2, b_reg = k >= 8 ? 1 : 0;
        unsigned shift = 16 * (k & 1);
        return half_bits_to_float(all[a_lane].a[a_reg] >> shift & 0xffffu, bf16) *
               half_bits_to_float(all[b_lane].b[b_reg] >> shift & 0xffffu, bf16);
    });
}
// mma.m16n8k8 in TF32: register j of A holds row g + 8·(j & 1), column t + 4·(j / 2); register
// j of B holds row t + 4·j, column g. The tensor core reads only the TF32 bits of each register
// (the low 13 bits are dropped, as the hardware does).
inline void mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    mma_tile(d, a, b, c, 8, [](const MmaOperands* all, int row, int k, int col) {
        auto tf32 = [](unsigned bits) { return __uint_as_float(bits & 0xffffe000u); };
        return tf32(all[(row % 8) * 4 + k % 4].a[(row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]) * tf32(all[col * 4 + k % 4].b[k >= 4 ? 1 : 0]);
    });
}
// ldmatrix: `matrices` 8×8 matrices whose row addresses lanes 0 .. 8·matrices − 1 give.
inline void ldmatrix(unsigned* r, int matrices, const void* row, bool transposed) {
    const unsigned short* rows[32];
    warp_exchange(0xffffffffu, &row, sizeof row, rows);
    int g = static_cast<int>(lane_id()) / 4, t = static_cast<int>(lane_id()) % 4;
    for (int j = 0; j < matrices; j++) {
        const unsigned short* const* m = rows + 8 * j;
        unsigned lo = transposed ? m[2 * t][g] : m[g][2 * t];
        unsigned hi = transposed ? m[2 * t + 1][g] : m[g][2 * t + 1];
        r[j] = lo | (hi << 16);
    }
}
}  // namespace emu

inline void ember_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    emu::mma_m16n8k16(d, a, b, c, false);
}
inline void ember_mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    emu::mma_m16n8k16(d, a, b, c, true);
}
inline void ember_mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    emu::mma_m16n8k8_tf32(d, a, b, c);
}
inline void ember_ldmatrix_x4(unsigned r[4], const void* row) { emu::ldmatrix(r, 4, row, false); }
inline void ember_ldmatrix_x2_trans(unsigned r[2], const void* row) { emu::ldmatrix(r, 2, row, true); }
inline void ember_cp_async_16(void* shared_destination, const void* global_source) {
    emu::async_copy(shared_destination, global_source, 16);
}
inline void ember_cp_async_commit() {}
inline void ember_cp_async_wait_all() { emu::async_wait_all(); }
