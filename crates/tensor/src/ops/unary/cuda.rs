//! The host side of the unary ops' CUDA kernels (kernels/unary.cu).

use super::{UnaryKernels, UnaryOp};
use crate::cuda::launch::{check_len, grid_stride, kernel, output, view_arg};
use crate::cuda::{DeviceBuffer, KernelArg};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::ops::dense;
use crate::{Layout, Result, Tensor};

impl UnaryKernels for Cuda {
    fn unary_forward(&self, x: &Tensor, op: UnaryOp) -> Result<Tensor> {
        let y = with_device_buffers(op.name(), [x], |[xs]| unary_forward(xs, x.layout(), op))?;
        Ok(device_tensor(y, x.device(), x.shape()))
    }

    fn unary_backward(&self, op: UnaryOp, saved: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (saved, dy) = (dense(saved)?, dense(dy)?);
        let n = saved.numel();
        let dx = with_device_buffers(op.name(), [&saved, &dy], |[s, g]| unary_backward(op, Some(s), Some(s), g, n))?;
        Ok(device_tensor(dx, saved.device(), saved.shape()))
    }
}

/// `y = op(x)` over the view `x_view` of `x`, contiguous out .
pub fn unary_forward(x: &DeviceBuffer, x_view: &Layout, op: UnaryOp) -> Result<DeviceBuffer> {
    let (x_arg, x_strides) = view_arg(op.name(), x, x_view)?;
    let n = x_view.numel();
    let y = output(x.backend(), n)?;
    if n > 0 {
        let (code, p, q) = op.code();
        let args = [x_arg, x_strides, y.arg(), KernelArg::I64(n as i64), KernelArg::I32(code), KernelArg::F32(p), KernelArg::F32(q)];
        x.backend().launch(kernel("unary.cu", "unary_forward_f32"), &grid_stride(n), &args)?;
    }
    Ok(y)
}

/// `dx = dy · op'(x)` from the contiguous `n`-element input `x` or output `y` (whichever
/// [`UnaryOp::derivative_needs`] names; the other may be `None`) .
pub fn unary_backward(op: UnaryOp, x: Option<&DeviceBuffer>, y: Option<&DeviceBuffer>, dy: &DeviceBuffer, n: usize) -> Result<DeviceBuffer> {
    let name = op.name();
    check_len(name, "dy", dy, n)?;
    for (what, buffer) in [("x", x), ("y", y)] {
        if let Some(buffer) = buffer {
            check_len(name, what, buffer, n)?;
        }
    }
    let dx = output(dy.backend(), n)?;
    if n > 0 {
        let (code, p, q) = op.code();
        let pointer = |b: Option<&DeviceBuffer>| KernelArg::Ptr(b.map_or(0, |b| b.ptr()));
        let args = [pointer(x), pointer(y), dy.arg(), dx.arg(), KernelArg::I64(n as i64), KernelArg::I32(code), KernelArg::F32(p), KernelArg::F32(q)];
        dy.backend().launch(kernel("unary.cu", "unary_backward_f32"), &grid_stride(n), &args)?;
    }
    Ok(dx)
}
