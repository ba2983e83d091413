// Counter-based random numbers on the device: the same Philox4x32-10 streams as the CPU's
// src/rng.rs, so a draw gives the same values on either device. Element i of a draw that
// starts at block `first` is lane i % 4 of Philox block first + i / 4 of the stream `seed`:
//   uniform  u = (x >> 8)·2⁻²⁴ from one lane, out = low + (high − low)·u
//   normal   Box–Muller on lanes (0, 1) and (2, 3): r = √(−2 ln(1 − u₀)),
//            z₀ = r cos 2πu₁, z₁ = r sin 2πu₁; out = mean + std·z
//   dropout  out = scale where u ≥ p, else 0 (the inverted-dropout mask)
// The arithmetic is in f64, as on the CPU, and rounded to f32 once at the end.
//
// Tiling: none. One thread per Philox block (four outputs), in a grid-stride loop.
#include "ember_cuda.h"

// The Philox4x32 bijection with 10 rounds, in place on the counter c.
__device__ __forceinline__ void philox4x32_10(unsigned c[4], unsigned k0, unsigned k1) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned long long p0 = 0xD2511F53ull * c[0], p1 = 0xCD9E8D57ull * c[2];
        unsigned hi0 = (unsigned)(p0 >> 32), lo0 = (unsigned)p0, hi1 = (unsigned)(p1 >> 32), lo1 = (unsigned)p1;
        unsigned next[4] = {hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0};
        for (int j = 0; j < 4; j++) c[j] = next[j];
    }
}

// The four lanes of block `block` of stream `seed`.
__device__ __forceinline__ void philox_block(unsigned lanes[4], unsigned long long seed, unsigned long long block) {
    lanes[0] = (unsigned)block;
    lanes[1] = (unsigned)(block >> 32);
    lanes[2] = 0;
    lanes[3] = 0;
    philox4x32_10(lanes, (unsigned)seed, (unsigned)(seed >> 32));
}

__device__ __forceinline__ double unit_uniform(unsigned x) { return (double)(x >> 8) * (1.0 / 16777216.0); }

extern "C" __global__ void philox_uniform_f32(float* __restrict__ out, long long n, long long seed, long long first,
                                              double low, double high) {
    long long blocks = (n + 3) / 4, stride = (long long)blockDim.x * gridDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < blocks; b += stride) {
        unsigned lanes[4];
        philox_block(lanes, (unsigned long long)seed, (unsigned long long)first + b);
        for (int j = 0; j < 4 && 4 * b + j < n; j++) out[4 * b + j] = (float)(low + (high - low) * unit_uniform(lanes[j]));
    }
}

extern "C" __global__ void philox_normal_f32(float* __restrict__ out, long long n, long long seed, long long first,
                                             double mean, double std) {
    const double two_pi = 6.283185307179586476925286766559;
    long long blocks = (n + 3) / 4, stride = (long long)blockDim.x * gridDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < blocks; b += stride) {
        unsigned lanes[4];
        philox_block(lanes, (unsigned long long)seed, (unsigned long long)first + b);
        for (int pair = 0; pair < 2; pair++) {
            double u0 = unit_uniform(lanes[2 * pair]), u1 = unit_uniform(lanes[2 * pair + 1]);
            double r = sqrt(-2.0 * log(1.0 - u0));
            long long i = 4 * b + 2 * pair;
            if (i < n) out[i] = (float)(mean + std * (r * cos(two_pi * u1)));
            if (i + 1 < n) out[i + 1] = (float)(mean + std * (r * sin(two_pi * u1)));
        }
    }
}

extern "C" __global__ void philox_dropout_mask_f32(float* __restrict__ out, long long n, long long seed, long long first,
                                                   double p, double scale) {
    long long blocks = (n + 3) / 4, stride = (long long)blockDim.x * gridDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < blocks; b += stride) {
        unsigned lanes[4];
        philox_block(lanes, (unsigned long long)seed, (unsigned long long)first + b);
        for (int j = 0; j < 4 && 4 * b + j < n; j++) out[4 * b + j] = unit_uniform(lanes[j]) >= p ? (float)scale : 0.0f;
    }
}
