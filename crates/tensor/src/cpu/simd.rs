//! The SIMD register types the CPU kernels use, picked at compile time for the target CPU
//! (`-C target-cpu=native` in `.cargo/config.toml`): 512-bit vectors where AVX-512 is there,
//! 256-bit otherwise. Kernels are generic over [`SimdVector`] so f32 and f64 share one code.

use std::ops::{Add, Mul, Sub};

/// A SIMD vector of `LANES` elements of `T`.
pub trait SimdVector<T>: Copy + Send + Sync + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> {
    const LANES: usize;
    fn splat(x: T) -> Self;
    /// Loads the first `LANES` elements of `src` (unaligned).
    fn load(src: &[T]) -> Self;
    /// Stores into the first `LANES` elements of `dst` (unaligned).
    fn store(self, dst: &mut [T]);
    /// `self * b + c` with one rounding (an FMA instruction where the CPU has one).
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// The sum of the lanes.
    fn reduce_sum(self) -> T;
}

macro_rules! impl_simd_vector {
    ($vector:ty, $elem:ty, $lanes:literal) => {
        impl SimdVector<$elem> for $vector {
            const LANES: usize = $lanes;
            #[inline(always)]
            fn splat(x: $elem) -> Self {
                <$vector>::splat(x)
            }
            #[inline(always)]
            fn load(src: &[$elem]) -> Self {
                let lanes: [$elem; $lanes] = src[..$lanes].try_into().unwrap();
                <$vector>::new(lanes)
            }
            #[inline(always)]
            fn store(self, dst: &mut [$elem]) {
                dst[..$lanes].copy_from_slice(self.as_array());
            }
            #[inline(always)]
            fn mul_add(self, b: Self, c: Self) -> Self {
                <$vector>::mul_add(self, b, c)
            }
            #[inline(always)]
            fn reduce_sum(self) -> $elem {
                <$vector>::reduce_add(self)
            }
        }
    };
}

impl_simd_vector!(wide::f32x8, f32, 8);
impl_simd_vector!(wide::f32x16, f32, 16);
impl_simd_vector!(wide::f64x4, f64, 4);
impl_simd_vector!(wide::f64x8, f64, 8);

#[cfg(target_feature = "avx512f")]
pub type F32Vector = wide::f32x16;
#[cfg(not(target_feature = "avx512f"))]
pub type F32Vector = wide::f32x8;

#[cfg(target_feature = "avx512f")]
pub type F64Vector = wide::f64x8;
#[cfg(not(target_feature = "avx512f"))]
pub type F64Vector = wide::f64x4;
