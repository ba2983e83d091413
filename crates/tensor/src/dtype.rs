//! Element types. `f32` is the workhorse, `f64` exists for gradient checks and references,
//! `f16`/`bf16` are storage formats (convert with [`Tensor::to_dtype`](crate::Tensor::to_dtype)
//! and compute in f32).

use crate::cpu::simd::SimdVector;
use crate::storage::CpuStorage;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Whether ops compute in this type (the others are storage-only).
    pub fn is_compute(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

/// A type that kernels compute in: `f32` or `f64`. Kernels are written once, generic over
/// this trait; `Vector` is the SIMD register type `wide` gives for it on this CPU.
pub trait FloatElem:
    num_traits::Float
    + Copy
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::ops::SubAssign
    + bytemuck::Pod
    + 'static
{
    const DTYPE: DType;
    type Vector: SimdVector<Self>;

    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The error function (for the exact GELU).
    fn erf(self) -> Self;
    /// eˣ in straight-line arithmetic where that is accurate enough, so that loops over it
    /// vectorize: f32 uses [`crate::cpu::math::exp_f32`] (about 1 ulp); f64 calls
    /// libm's `exp`.
    fn exp_branchless(self) -> Self;
    /// Borrow the elements of a storage of this type, if it is one.
    fn slice(storage: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(storage: &mut CpuStorage) -> Option<&mut [Self]>;
    fn into_storage(data: Vec<Self>) -> CpuStorage;
    /// The cache of freed buffers of this type.
    fn pool() -> &'static crate::cpu::pool::BufferPool<Self>;
}

impl FloatElem for f32 {
    const DTYPE: DType = DType::F32;
    type Vector = crate::cpu::simd::F32Vector;

    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
    #[inline(always)]
    fn exp_branchless(self) -> Self {
        crate::cpu::math::exp_f32(self)
    }
    fn slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(storage: &mut CpuStorage) -> Option<&mut [Self]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(data: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(data)
    }
    fn pool() -> &'static crate::cpu::pool::BufferPool<Self> {
        static POOL: crate::cpu::pool::BufferPool<f32> = crate::cpu::pool::BufferPool::new();
        &POOL
    }
}

impl FloatElem for f64 {
    const DTYPE: DType = DType::F64;
    type Vector = crate::cpu::simd::F64Vector;

    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    #[inline(always)]
    fn exp_branchless(self) -> Self {
        self.exp()
    }
    fn slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(storage: &mut CpuStorage) -> Option<&mut [Self]> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(data: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(data)
    }
    fn pool() -> &'static crate::cpu::pool::BufferPool<Self> {
        static POOL: crate::cpu::pool::BufferPool<f64> = crate::cpu::pool::BufferPool::new();
        &POOL
    }
}
