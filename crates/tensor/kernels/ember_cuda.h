// The one header every kernel includes. It gives the kernels a small vocabulary that means
// the same on a GPU (NVRTC) and in the CPU emulator (emu/cuda_emu.h):
//
//   EMBER_SHARED(float[32][33], tile);   a block's static shared array
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

#if defined(EMBER_CUDA_EMULATOR)
#include "emu/cuda_emu.h"
#else

// ---- On a GPU ----

template <class T> using ember_type = T;
#define EMBER_SHARED(type, name) __shared__ ember_type<type> name
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

#endif

// ---- Both ----

// Ceiling of a / b for positive b.
__device__ __forceinline__ int ember_ceil_div(int a, int b) { return (a + b - 1) / b; }

__device__ __forceinline__ float ember_negative_infinity() { return __int_as_float(static_cast<int>(0xff800000u)); }

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
