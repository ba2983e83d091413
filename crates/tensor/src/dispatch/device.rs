//! The CUDA side of the dispatch: handing a device kernel its input buffers, wrapping its
//! output. The kernels are f32; other dtypes may live on a device but have no kernels there.

use crate::cuda::DeviceBuffer;
use crate::layout::Layout;
use crate::storage::{GpuStorage, Storage};
use crate::{DType, Device, Result, Tensor, TensorError};

/// Runs `f` on the f32 device buffers of `tensors` (all on one CUDA device; each buffer is
/// the whole storage, read through the tensor's layout or, for contiguous tensors made by
/// [`crate::ops::dense`], from its first element).
pub(crate) fn with_device_buffers<const N: usize, R>(op: &'static str, tensors: [&Tensor; N], f: impl FnOnce([&DeviceBuffer; N]) -> Result<R>) -> Result<R> {
    let guards = tensors.map(|t| t.storage());
    for (t, guard) in tensors.iter().zip(&guards) {
        let gpu = guard.gpu().ok_or(TensorError::NotOnDevice { op, device: t.device() })?;
        if gpu.dtype != DType::F32 {
            return Err(TensorError::UnsupportedDType { op, dtype: gpu.dtype });
        }
    }
    let buffers = std::array::from_fn(|i| &guards[i].gpu().expect("checked above").buffer);
    f(buffers)
}

/// A fresh contiguous f32 tensor of `shape` over a buffer of the CUDA device `device`.
pub(crate) fn device_tensor(buffer: DeviceBuffer, device: Device, shape: &[usize]) -> Tensor {
    let ordinal = match device {
        Device::Cuda(ordinal) => ordinal,
        Device::Cpu => unreachable!("a device buffer belongs to a CUDA device"),
    };
    let storage = GpuStorage { buffer, dtype: DType::F32, ordinal };
    Tensor::from_storage(Storage::Cuda(storage), Layout::contiguous(shape))
}
