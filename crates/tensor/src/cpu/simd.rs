//! Shared primitive: the SIMD register types the CPU kernels use, picked at compile time for the target CPU
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

/// One element as a one-lane "vector": the scalar tail of a loop written once, generic over
/// [`SimdVector`], runs with this type after the full vectors.
#[derive(Clone, Copy, Debug)]
pub struct Single<T>(pub T);

impl<T: crate::FloatElem> Add for Single<T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, rhs: Self) -> Self {
        Single(self.0 + rhs.0)
    }
}

impl<T: crate::FloatElem> Sub for Single<T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, rhs: Self) -> Self {
        Single(self.0 - rhs.0)
    }
}

impl<T: crate::FloatElem> Mul for Single<T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        Single(self.0 * rhs.0)
    }
}

impl<T: crate::FloatElem> SimdVector<T> for Single<T> {
    const LANES: usize = 1;
    #[inline(always)]
    fn splat(x: T) -> Self {
        Single(x)
    }
    #[inline(always)]
    fn load(src: &[T]) -> Self {
        Single(src[0])
    }
    #[inline(always)]
    fn store(self, dst: &mut [T]) {
        dst[0] = self.0;
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Single(self.0.mul_add(b.0, c.0))
    }
    #[inline(always)]
    fn reduce_sum(self) -> T {
        self.0
    }
}

/// A loop body written once for any vector width: [`simd_steps`] runs it.
pub(crate) trait SimdStep<T: crate::FloatElem> {
    /// Processes positions `i .. i + V::LANES`.
    fn step<V: SimdVector<T>>(&mut self, i: usize);
}

/// Runs `body` over positions `0..len`: with `T::Vector` at every whole vector, then with
/// [`Single`] on the tail.
#[inline(always)]
pub(crate) fn simd_steps<T: crate::FloatElem>(len: usize, body: &mut impl SimdStep<T>) {
    let lanes = T::Vector::LANES;
    let whole = len / lanes * lanes;
    let mut i = 0;
    while i < whole {
        body.step::<T::Vector>(i);
        i += lanes;
    }
    for i in whole..len {
        body.step::<Single<T>>(i);
    }
}
