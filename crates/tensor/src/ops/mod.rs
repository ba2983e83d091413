//! The differentiable ops, one file per family. Each op's doc comment gives its math; its
//! forward calls a kernel in [`crate::cpu`] and, right beside it, records the backward with
//! [`Tensor::with_backward`](crate::Tensor).


pub mod attention;
pub mod binary;
pub mod conv;

pub mod matmul;
pub mod movement;
pub mod nn;
pub mod norm;


pub mod reduce;
pub mod softmax;

pub mod unary;

use crate::error::{Result, TensorError};
use crate::layout::Layout;
use crate::storage::{CpuStorage, Storage};
use crate::{FloatElem, Tensor};

/// Runs `f` on the f32 device buffer of `t` (which must be on a CUDA device): the CUDA path
/// of an op. Other dtypes may live on a device but have no kernels there.
pub(crate) fn with_gpu<R>(op: &'static str, t: &Tensor, f: impl FnOnce(&crate::cuda::DeviceBuffer) -> Result<R>) -> Result<R> {
    let storage = t.storage();
    let gpu = storage.gpu().ok_or(TensorError::NotOnDevice { op, device: t.device() })?;
    crate::tensor::check_f32_on_device(op, gpu)?;
    f(&gpu.buffer)
}

/// A fresh contiguous f32 tensor of `shape` over a device buffer of `Device::Cuda(ordinal)`.
pub(crate) fn gpu_tensor(buffer: crate::cuda::DeviceBuffer, device: crate::Device, shape: &[usize]) -> Tensor {
    let ordinal = match device {
        crate::Device::Cuda(ordinal) => ordinal,
        crate::Device::Cpu => unreachable!("a device buffer belongs to a CUDA device"),
    };
    let storage = crate::storage::GpuStorage { buffer, dtype: crate::DType::F32, ordinal };
    Tensor::from_storage(Storage::Cuda(storage), Layout::contiguous(shape))
}

/// `t` with row-major elements starting at its buffer's first element (a copy if not), as
/// the kernels that take plain contiguous buffers want.
pub(crate) fn dense(t: &Tensor) -> Result<Tensor> {
    if t.layout().contiguous_range().is_some_and(|r| r.start == 0) { Ok(t.clone()) } else { t.deep_copy() }
}

/// Whether `t` lives on a CUDA device.
pub(crate) fn on_gpu(t: &Tensor) -> bool {
    matches!(t.device(), crate::Device::Cuda(_))
}

/// Wraps a kernel's output vector as a storage (for use inside the dispatch macros).
pub(crate) fn wrap<T: FloatElem>(data: Vec<T>) -> CpuStorage {
    T::into_storage(data)
}

/// A fresh contiguous CPU tensor of `shape` over `storage`.
pub(crate) fn new_tensor(storage: CpuStorage, shape: &[usize]) -> Tensor {
    debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
    Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(shape))
}

/// Checks that all inputs of `op` live on one device and share one dtype.
pub(crate) fn check_same(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    let first = tensors[0];
    for t in &tensors[1..] {
        if t.device() != first.device() {
            return Err(TensorError::DeviceMismatch { op, lhs: first.device(), rhs: t.device() });
        }
        if t.dtype() != first.dtype() {
            return Err(TensorError::DTypeMismatch { op, lhs: first.dtype(), rhs: t.dtype() });
        }
    }
    Ok(())
}

/// Checks a tensor's rank.
pub(crate) fn check_rank(op: &'static str, t: &Tensor, rank: usize, what: &str) -> Result<()> {
    if t.rank() != rank {
        return crate::error::invalid(op, format!("{what} must have rank {rank}, got shape {:?}", t.shape()));
    }
    Ok(())
}
