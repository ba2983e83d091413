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
