//! The host side of the binary ops' CUDA kernel (kernels/binary.cu).

use super::{BinaryKernels, BinaryOp};
use crate::cuda::launch::{grid_stride, kernel, output, view_arg};
use crate::cuda::{DeviceBuffer, KernelArg};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::{Layout, Result, Tensor, TensorError};

impl BinaryKernels for Cuda {
    fn binary(&self, op: BinaryOp, a: &Tensor, a_view: &Layout, b: &Tensor, b_view: &Layout) -> Result<Tensor> {
        let out = with_device_buffers(op.name(), [a, b], |[a, b]| binary(op, a, a_view, b, b_view))?;
        Ok(device_tensor(out, a.device(), a_view.shape()))
    }
}

/// `out = a op b` over two views of the output's shape (broadcast axes with stride 0),
/// contiguous out .
pub fn binary(op: BinaryOp, a: &DeviceBuffer, a_view: &Layout, b: &DeviceBuffer, b_view: &Layout) -> Result<DeviceBuffer> {
    if a_view.shape() != b_view.shape() {
        return Err(TensorError::ShapeMismatch { op: op.name(), lhs: a_view.shape().to_vec(), rhs: b_view.shape().to_vec() });
    }
    let (a_arg, a_strides) = view_arg(op.name(), a, a_view)?;
    let (b_arg, b_strides) = view_arg(op.name(), b, b_view)?;
    let n = a_view.numel();
    let out = output(a.backend(), n)?;
    if n > 0 {
        let args = [a_arg, a_strides, b_arg, b_strides, out.arg(), KernelArg::I64(n as i64), KernelArg::I32(op.code())];
        a.backend().launch(kernel("binary.cu", "binary_f32"), &grid_stride(n), &args)?;
    }
    Ok(out)
}
