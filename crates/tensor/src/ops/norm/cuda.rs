//! The host side of the group norm's CUDA kernels (kernels/norm.cu).

use super::{GroupNormShape, NormKernels};
use crate::cuda::launch::{THREADS, check_len, kernel, output, to_i32};
use crate::cuda::{DeviceBuffer, KernelArg, LaunchConfig};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::layout::Layout;
use crate::ops::dense;
use crate::ops::movement::cuda::gather;
use crate::ops::reduce::ReduceKind;
use crate::ops::reduce::cuda::reduce;
use crate::{Result, Tensor};

impl NormKernels for Cuda {
    fn group_norm_forward(&self, x: &Tensor, w: &Tensor, b: &Tensor, shape: &GroupNormShape, eps: f64, silu: bool) -> Result<[Tensor; 3]> {
        let op = if silu { "group_norm_silu" } else { "group_norm" };
        let (x, w, b) = (dense(x)?, dense(w)?, dense(b)?);
        let (y, mean, rstd) = with_device_buffers(op, [&x, &w, &b], |[xs, ws, bs]| group_norm_forward(xs, ws, bs, shape, eps, silu))?;
        let (device, stats) = (x.device(), [shape.n * shape.groups]);
        Ok([device_tensor(y, device, x.shape()), device_tensor(mean, device, &stats), device_tensor(rstd, device, &stats)])
    }

    fn group_norm_backward(&self, saved: [&Tensor; 5], dy: &Tensor, shape: &GroupNormShape, silu: bool) -> Result<[Tensor; 3]> {
        let op = if silu { "group_norm_silu" } else { "group_norm" };
        let [x, w, b, mean, rstd] = saved;
        let (x, w, b, dy) = (dense(x)?, dense(w)?, dense(b)?, dense(dy)?);
        let (dx, dw, db) =
            with_device_buffers(op, [&x, &dy, &w, &b, mean, rstd], |[xs, dys, ws, bs, ms, rs]| group_norm_backward(xs, dys, ws, bs, ms, rs, shape, silu))?;
        let device = x.device();
        Ok([device_tensor(dx, device, x.shape()), device_tensor(dw, device, &[shape.channels]), device_tensor(db, device, &[shape.channels])])
    }
}

/// Group norm forward: `(y, mean, rstd)`, the statistics one per (sample, group), as
/// the CPU kernel (`cpu.rs`), followed by SiLU when `silu` (kernels/norm.cu).
/// x is `[n, channels, positions]` contiguous; w and b have `channels` elements.
pub fn group_norm_forward(
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    b: &DeviceBuffer,
    s: &GroupNormShape,
    eps: f64,
    silu: bool,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "group_norm";
    let len = s.n * s.channels * s.positions;
    check_len(op, "x", x, len)?;
    check_len(op, "weight", w, s.channels)?;
    check_len(op, "bias", b, s.channels)?;
    let blocks = s.n * s.groups;
    let (y, mean, rstd) = (output(x.backend(), len)?, output(x.backend(), blocks)?, output(x.backend(), blocks)?);
    let args = [
        x.arg(),
        w.arg(),
        b.arg(),
        y.arg(),
        mean.arg(),
        rstd.arg(),
        KernelArg::I32(to_i32(op, "channels", s.channels)?),
        KernelArg::I32(to_i32(op, "groups", s.groups)?),
        KernelArg::I32(to_i32(op, "positions", s.positions)?),
        KernelArg::F32(eps as f32),
        KernelArg::I32(silu as i32),
    ];
    x.backend().launch(kernel("norm.cu", "group_norm_forward_f32"), &LaunchConfig::linear(blocks as u32, THREADS), &args)?;
    Ok((y, mean, rstd))
}

/// Group norm backward: `(dx, dweight, dbias)`, as the CPU kernel (`cpu.rs`),
/// through the fused SiLU when `silu` (kernels/norm.cu; the per-sample sums are added over
/// the samples by [`reduce`]).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    w: &DeviceBuffer,
    b: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    s: &GroupNormShape,
    silu: bool,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "group_norm_backward";
    let len = s.n * s.channels * s.positions;
    check_len(op, "x", x, len)?;
    check_len(op, "dy", dy, len)?;
    check_len(op, "weight", w, s.channels)?;
    check_len(op, "bias", b, s.channels)?;
    check_len(op, "mean", mean, s.n * s.groups)?;
    check_len(op, "rstd", rstd, s.n * s.groups)?;
    let (dx, sums) = (output(x.backend(), len)?, output(x.backend(), s.n * s.channels * 2)?);
    let args = [
        x.arg(),
        dy.arg(),
        w.arg(),
        b.arg(),
        mean.arg(),
        rstd.arg(),
        dx.arg(),
        sums.arg(),
        KernelArg::I32(to_i32(op, "channels", s.channels)?),
        KernelArg::I32(to_i32(op, "groups", s.groups)?),
        KernelArg::I32(to_i32(op, "positions", s.positions)?),
        KernelArg::I32(silu as i32),
    ];
    let blocks = (s.n * s.groups) as u32;
    x.backend().launch(kernel("norm.cu", "group_norm_backward_f32"), &LaunchConfig::linear(blocks, THREADS), &args)?;
    // [n, channels, 2] summed over n: (dweight, dbias) interleaved per channel.
    let totals = reduce(&sums, &Layout::contiguous(&[s.n, s.channels, 2]), &[0], ReduceKind::Sum)?;
    let pick = |k: usize| gather(&totals, &Layout::new(vec![s.channels], vec![2], k));
    Ok((dx, pick(0)?, pick(1)?))
}
