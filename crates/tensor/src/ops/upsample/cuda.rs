//! The host side of nearest upsampling's CUDA kernels (kernels/upsample.cu).

use super::UpsampleKernels;
use crate::cuda::launch::{check_len, grid_stride, kernel, output, to_i32};
use crate::cuda::{DeviceBuffer, KernelArg};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::ops::dense;
use crate::{Result, Tensor};

impl UpsampleKernels for Cuda {
    fn upsample_nearest2d(&self, x: &Tensor, [n, c, h, w]: [usize; 4], scale: usize, adjoint: bool) -> Result<Tensor> {
        let x = dense(x)?;
        let out = with_device_buffers("upsample_nearest2d", [&x], |[xs]| upsample_nearest2d(xs, n * c, h, w, scale, adjoint))?;
        let out_shape = if adjoint { [n, c, h, w] } else { [n, c, h * scale, w * scale] };
        Ok(device_tensor(out, x.device(), &out_shape))
    }
}

/// Nearest upsampling by `scale` of `planes` contiguous `h × w` planes, or with `adjoint`,
/// its backward: each input element gets the sum of its `scale × scale` block of the
/// gradient (kernels/upsample.cu).
pub fn upsample_nearest2d(x: &DeviceBuffer, planes: usize, h: usize, w: usize, scale: usize, adjoint: bool) -> Result<DeviceBuffer> {
    let op = if adjoint { "upsample_nearest2d_backward" } else { "upsample_nearest2d" };
    let (small, large) = (planes * h * w, planes * h * w * scale * scale);
    let (input_len, output_len) = if adjoint { (large, small) } else { (small, large) };
    check_len(op, "input", x, input_len)?;
    let out = output(x.backend(), output_len)?;
    if output_len > 0 {
        let name = if adjoint { "upsample_nearest2d_backward_f32" } else { "upsample_nearest2d_f32" };
        let args = [
            x.arg(),
            out.arg(),
            KernelArg::I64(planes as i64),
            KernelArg::I32(to_i32(op, "h", h)?),
            KernelArg::I32(to_i32(op, "w", w)?),
            KernelArg::I32(to_i32(op, "scale", scale)?),
        ];
        x.backend().launch(kernel("upsample.cu", name), &grid_stride(output_len), &args)?;
    }
    Ok(out)
}
