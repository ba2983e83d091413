//! The host side of the softmax kernels (kernels/softmax.cu).

use super::SoftmaxKernels;
use crate::cuda::launch::{THREADS, check_len, kernel, output, to_i32};
use crate::cuda::{DeviceBuffer, KernelArg, LaunchConfig};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::ops::dense;
use crate::{Result, Tensor};

/// `(rows, row length)` of a tensor's last axis.
fn rows_of(t: &Tensor) -> (usize, usize) {
    let row_len = *t.shape().last().unwrap_or(&1);
    (t.numel().checked_div(row_len).unwrap_or(0), row_len)
}

impl SoftmaxKernels for Cuda {
    fn softmax_rows(&self, x: &Tensor, log: bool) -> Result<Tensor> {
        let x = dense(x)?;
        let (rows, row_len) = rows_of(&x);
        let y = with_device_buffers(if log { "log_softmax" } else { "softmax" }, [&x], |[xs]| softmax_rows(xs, rows, row_len, log))?;
        Ok(device_tensor(y, x.device(), x.shape()))
    }

    fn softmax_rows_backward(&self, y: &Tensor, dy: &Tensor, log: bool) -> Result<Tensor> {
        let (y, dy) = (dense(y)?, dense(dy)?);
        let (rows, row_len) = rows_of(&y);
        let dx = with_device_buffers(if log { "log_softmax" } else { "softmax" }, [&y, &dy], |[ys, gs]| softmax_backward_rows(ys, gs, rows, row_len, log))?;
        Ok(device_tensor(dx, y.device(), y.shape()))
    }
}

/// Softmax (or with `log`, log-softmax) of each row of a contiguous `rows × row_len` matrix
/// (kernels/softmax.cu).
pub fn softmax_rows(x: &DeviceBuffer, rows: usize, row_len: usize, log: bool) -> Result<DeviceBuffer> {
    check_len("softmax", "x", x, rows * row_len)?;
    let y = output(x.backend(), rows * row_len)?;
    if rows * row_len > 0 {
        let args = [x.arg(), y.arg(), KernelArg::I32(to_i32("softmax", "row length", row_len)?), KernelArg::I32(log as i32)];
        x.backend().launch(kernel("softmax.cu", "softmax_rows_f32"), &LaunchConfig::linear(rows as u32, THREADS), &args)?;
    }
    Ok(y)
}

/// The backward of [`softmax_rows`] from its output `y` and the gradient `dy` (kernels/softmax.cu).
pub fn softmax_backward_rows(y: &DeviceBuffer, dy: &DeviceBuffer, rows: usize, row_len: usize, log: bool) -> Result<DeviceBuffer> {
    check_len("softmax_backward", "y", y, rows * row_len)?;
    check_len("softmax_backward", "dy", dy, rows * row_len)?;
    let dx = output(y.backend(), rows * row_len)?;
    if rows * row_len > 0 {
        let args = [y.arg(), dy.arg(), dx.arg(), KernelArg::I32(to_i32("softmax_backward", "row length", row_len)?), KernelArg::I32(log as i32)];
        y.backend().launch(kernel("softmax.cu", "softmax_backward_rows_f32"), &LaunchConfig::linear(rows as u32, THREADS), &args)?;
    }
    Ok(dx)
}
