//! The host side of the normalizations' CUDA kernels (kernels/norm.cu): group norm and layer
//! norm.

use super::{GroupNormShape, NormKernels};
use crate::cuda::launch::{THREADS, check_len, grid_stride, invalid, kernel, output, to_i32};
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

    fn layer_norm_forward(&self, x: &Tensor, w: &Tensor, b: &Tensor, cols: usize, eps: f64) -> Result<[Tensor; 3]> {
        let (x, w, b) = (dense(x)?, dense(w)?, dense(b)?);
        let rows = x.numel() / cols;
        let (y, mean, rstd) = with_device_buffers("layer_norm", [&x, &w, &b], |[xs, ws, bs]| layer_norm_forward(xs, ws, bs, rows, cols, eps))?;
        let device = x.device();
        Ok([device_tensor(y, device, x.shape()), device_tensor(mean, device, &[rows]), device_tensor(rstd, device, &[rows])])
    }

    fn layer_norm_backward(&self, saved: [&Tensor; 4], dy: &Tensor, cols: usize) -> Result<[Tensor; 3]> {
        let [x, w, mean, rstd] = saved;
        let (x, w, dy) = (dense(x)?, dense(w)?, dense(dy)?);
        let rows = x.numel() / cols;
        let (dx, dw, db) =
            with_device_buffers("layer_norm", [&x, &dy, &w, mean, rstd], |[xs, dys, ws, ms, rs]| layer_norm_backward(xs, dys, ws, ms, rs, rows, cols))?;
        let device = x.device();
        Ok([device_tensor(dx, device, x.shape()), device_tensor(dw, device, w.shape()), device_tensor(db, device, w.shape())])
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

/// Checks the layer norm's sizes (`rows × cols` elements in `x`, both positive and 32-bit
/// ints) and gives them as kernel arguments.
fn layer_norm_sizes(op: &'static str, x: &DeviceBuffer, rows: usize, cols: usize) -> Result<(KernelArg, KernelArg)> {
    if rows == 0 || cols == 0 {
        return Err(invalid(op, format!("{rows} rows of {cols}: nothing to normalize")));
    }
    to_i32(op, "rows × cols", rows * cols)?;
    check_len(op, "x", x, rows * cols)?;
    Ok((KernelArg::I32(to_i32(op, "rows", rows)?), KernelArg::I32(to_i32(op, "cols", cols)?)))
}

/// Launches one of the layer norm's row kernels: a warp per row, 8 rows per block.
fn launch_per_row(x: &DeviceBuffer, name: &'static str, rows: usize, args: &[KernelArg]) -> Result<()> {
    let blocks = rows.div_ceil(THREADS as usize / 32) as u32;
    x.backend().launch(kernel("norm.cu", name), &LaunchConfig::linear(blocks, THREADS), args)
}

/// Layer norm forward of the row-major `rows × cols` x, w and b of `cols` elements: `(y, mean,
/// rstd)`, the statistics one per row, as the CPU kernel (`cpu.rs`; kernels/norm.cu, a warp
/// per row).
pub fn layer_norm_forward(
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    b: &DeviceBuffer,
    rows: usize,
    cols: usize,
    eps: f64,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "layer_norm";
    let (rows_arg, cols_arg) = layer_norm_sizes(op, x, rows, cols)?;
    check_len(op, "weight", w, cols)?;
    check_len(op, "bias", b, cols)?;
    let (y, mean, rstd) = (output(x.backend(), rows * cols)?, output(x.backend(), rows)?, output(x.backend(), rows)?);
    let args = [x.arg(), w.arg(), b.arg(), y.arg(), mean.arg(), rstd.arg(), rows_arg, cols_arg, KernelArg::F32(eps as f32)];
    launch_per_row(x, "layer_norm_forward_f32", rows, &args)?;
    Ok((y, mean, rstd))
}

/// Layer norm backward: `(dx, dweight, dbias)`, as the CPU kernel (`cpu.rs`). Three kernels
/// (kernels/norm.cu): dx a warp per row; dweight and dbias as partial sums per chunk of rows
/// and 32 columns, then the partials of each column added in chunk order (no atomics, so the
/// same inputs give the same bits).
pub fn layer_norm_backward(
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    w: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    rows: usize,
    cols: usize,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "layer_norm_backward";
    let (rows_arg, cols_arg) = layer_norm_sizes(op, x, rows, cols)?;
    check_len(op, "dy", dy, rows * cols)?;
    check_len(op, "weight", w, cols)?;
    check_len(op, "mean", mean, rows)?;
    check_len(op, "rstd", rstd, rows)?;
    let backend = x.backend();
    let dx = output(backend, rows * cols)?;
    let args = [x.arg(), dy.arg(), w.arg(), mean.arg(), rstd.arg(), dx.arg(), rows_arg, cols_arg];
    launch_per_row(x, "layer_norm_backward_f32", rows, &args)?;

    // Chunks of 64 rows at least, 1024 at most (a grid's y is at most 65535): each thread of
    // the 32 × 8 blocks adds a column over every 8th row of its chunk.
    let chunk_rows = rows.div_ceil(1024).max(64);
    let chunks = rows.div_ceil(chunk_rows);
    let partials = output(backend, chunks * 2 * cols)?;
    let args = [x.arg(), dy.arg(), mean.arg(), rstd.arg(), partials.arg(), rows_arg, cols_arg, KernelArg::I32(to_i32(op, "chunk rows", chunk_rows)?)];
    let config = LaunchConfig { grid: [cols.div_ceil(32) as u32, chunks as u32, 1], block: [THREADS, 1, 1], shared_bytes: 0 };
    backend.launch(kernel("norm.cu", "layer_norm_parameter_partials_f32"), &config, &args)?;
    let (dw, db) = (output(backend, cols)?, output(backend, cols)?);
    let args = [partials.arg(), dw.arg(), db.arg(), KernelArg::I32(to_i32(op, "chunks", chunks)?), cols_arg];
    backend.launch(kernel("norm.cu", "layer_norm_parameter_totals_f32"), &grid_stride(cols), &args)?;
    Ok((dx, dw, db))
}
