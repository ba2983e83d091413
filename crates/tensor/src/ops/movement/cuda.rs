//! The host side of the movement ops' CUDA kernels (kernels/movement.cu): copies between
//! views and fills.

use std::sync::Arc;

use super::MovementKernels;
use crate::cuda::launch::{grid_stride, kernel, output, view_arg};
use crate::cuda::{DeviceBuffer, GpuBackend, KernelArg};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::{Layout, Result, Tensor, TensorError};

impl MovementKernels for Cuda {
    fn gather(&self, x: &Tensor) -> Result<Tensor> {
        let y = with_device_buffers("contiguous", [x], |[xs]| gather(xs, x.layout()))?;
        Ok(device_tensor(y, x.device(), x.shape()))
    }

    fn assemble(&self, shape: &[usize], like: &Tensor, fill: f64, parts: &[(&Tensor, Layout)]) -> Result<Tensor> {
        let numel = shape.iter().product();
        let out = with_device_buffers("assemble", [like], |[l]| full(l.backend(), numel, fill as f32))?;
        for (part, region) in parts {
            with_device_buffers("assemble", [*part], |[p]| copy(p, part.layout(), &out, region))?;
        }
        Ok(device_tensor(out, like.device(), shape))
    }

    fn assign(&self, destination: &Tensor, values: &Tensor) -> Result<()> {
        if values.shares_storage_with(destination) {
            // the copy kernel's source and destination must not overlap
            return self.assign(destination, &values.deep_copy()?);
        }
        with_device_buffers("assign", [values, destination], |[source, target]| copy(source, values.layout(), target, destination.layout()))
    }
}

/// Copies the view `x_view` of `x` into the view `y_view` of `y` (same shapes; the
/// destination view must not overlap itself) .
pub fn copy(x: &DeviceBuffer, x_view: &Layout, y: &DeviceBuffer, y_view: &Layout) -> Result<()> {
    if x_view.shape() != y_view.shape() {
        return Err(TensorError::ShapeMismatch { op: "copy", lhs: x_view.shape().to_vec(), rhs: y_view.shape().to_vec() });
    }
    let (x_arg, x_strides) = view_arg("copy", x, x_view)?;
    let (y_arg, y_strides) = view_arg("copy", y, y_view)?;
    let n = x_view.numel();
    if n > 0 {
        x.backend().launch(kernel("movement.cu", "copy_f32"), &grid_stride(n), &[x_arg, x_strides, y_arg, y_strides, KernelArg::I64(n as i64)])?;
    }
    Ok(())
}

/// The view `x_view` of `x`, made contiguous.
pub fn gather(x: &DeviceBuffer, x_view: &Layout) -> Result<DeviceBuffer> {
    let y = output(x.backend(), x_view.numel())?;
    copy(x, x_view, &y, &Layout::contiguous(x_view.shape()))?;
    Ok(y)
}

/// A new buffer of `n` elements, each `value` .
pub fn full(backend: &Arc<dyn GpuBackend>, n: usize, value: f32) -> Result<DeviceBuffer> {
    let y = output(backend, n)?;
    if n > 0 {
        backend.launch(kernel("movement.cu", "fill_f32"), &grid_stride(n), &[y.arg(), KernelArg::F32(value), KernelArg::I64(n as i64)])?;
    }
    Ok(y)
}
