//! The CPU side of the dispatch: handing a host kernel its input slices, wrapping its output.
//!
//! Host kernels are generic over [`FloatElem`] (f32, f64); the macros here match the inputs'
//! dtype once and bind each input to a slice of that element type, so a kernel call reads
//! `with_host_elements!(op, [x => xs, w => ws], wrap(kernel(xs, ws, &shape)))`.

use crate::storage::{CpuStorage, Storage};
use crate::{FloatElem, Layout, Result, Tensor, TensorError};

/// A fresh contiguous CPU tensor of `shape` over `storage`.
pub(crate) fn host_tensor(storage: CpuStorage, shape: &[usize]) -> Tensor {
    debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
    Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(shape))
}

/// Wraps a kernel's output vector as a storage.
pub(crate) fn wrap<T: FloatElem>(data: Vec<T>) -> CpuStorage {
    T::into_storage(data)
}

/// The whole host buffer behind `t` as `&[T]` (a strided kernel reads it through `t`'s
/// layout). Another dtype than `T` is [`TensorError::DTypeMismatch`]; a device storage is
/// [`TensorError::NotOnDevice`].
pub(crate) fn host_slice<'a, T: FloatElem>(op: &'static str, storage: &'a Storage, t: &Tensor) -> Result<&'a [T]> {
    let host = storage.cpu(op)?;
    T::slice(host).ok_or(TensorError::DTypeMismatch { op, lhs: T::DTYPE, rhs: t.dtype() })
}

/// The elements of the contiguous tensor `t`, in order (its range of the host buffer). A view
/// that is not contiguous is an error: the caller makes it so first (`Tensor::contiguous`).
pub(crate) fn host_elements<'a, T: FloatElem>(op: &'static str, storage: &'a Storage, t: &Tensor) -> Result<&'a [T]> {
    let range = t
        .layout()
        .contiguous_range()
        .ok_or_else(|| TensorError::InvalidArgument { op, msg: format!("the kernel needs a contiguous input, got the view {:?}", t.layout()) })?;
    Ok(&host_slice(op, storage, t)?[range])
}

/// Runs `$body` with each `$s` bound to `$t`'s whole host buffer as `&[T]`, `T` the first
/// input's float type (every input must share it). Returns from the enclosing function with
/// `UnsupportedDType` for f16/bf16 and `DTypeMismatch` for mixed inputs.
macro_rules! with_host_slices {
    ($op:expr, [$($t:expr => $s:ident),+ $(,)?], $body:expr) => {
        $crate::dispatch::host::with_host_slices!(@run host_slice, $op, [$($t => $s),+], $body)
    };
    (@run $get:ident, $op:expr, [$first:expr => $first_slice:ident $(, $t:expr => $s:ident)*], $body:expr) => {{
        let dtype = $first.dtype();
        match dtype {
            $crate::DType::F32 => {
                let $first_slice = $first.storage();
                $(let $s = $t.storage();)*
                let $first_slice: &[f32] = $crate::dispatch::host::$get($op, &$first_slice, $first)?;
                $(let $s: &[f32] = $crate::dispatch::host::$get($op, &$s, $t)?;)*
                $body
            }
            $crate::DType::F64 => {
                let $first_slice = $first.storage();
                $(let $s = $t.storage();)*
                let $first_slice: &[f64] = $crate::dispatch::host::$get($op, &$first_slice, $first)?;
                $(let $s: &[f64] = $crate::dispatch::host::$get($op, &$s, $t)?;)*
                $body
            }
            dtype => return Err($crate::TensorError::UnsupportedDType { op: $op, dtype }),
        }
    }};
}

/// Like [`with_host_slices`], with each `$s` bound to the elements of the contiguous `$t`.
macro_rules! with_host_elements {
    ($op:expr, [$($t:expr => $s:ident),+ $(,)?], $body:expr) => {
        $crate::dispatch::host::with_host_slices!(@run host_elements, $op, [$($t => $s),+], $body)
    };
}

pub(crate) use {with_host_elements, with_host_slices};
