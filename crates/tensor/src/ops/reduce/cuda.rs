//! The host side of the reductions' CUDA kernel (kernels/reduce.cu).

use super::{ReduceKernels, ReduceKind};
use crate::cuda::launch::{THREADS, kernel, output, view_arg};
use crate::cuda::{DeviceBuffer, KernelArg, LaunchConfig, Strides};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::{Layout, Result, Tensor};

impl ReduceKernels for Cuda {
    fn reduce(&self, x: &Tensor, axes: &[usize], kind: ReduceKind, out_shape: &[usize]) -> Result<Tensor> {
        let y = with_device_buffers(kind.name(), [x], |[xs]| reduce(xs, x.layout(), axes, kind))?;
        Ok(device_tensor(y, x.device(), out_shape))
    }
}

/// Warps a reduction should give a GPU at least (an H100 holds 132 × 64 resident warps).
const TARGET_WARPS: usize = 4096;
/// The shortest chunk worth a warp of its own (32 elements a lane).
const MIN_CHUNK: usize = 1024;

/// How the kernel splits each output's run of `run_len` elements: `(chunks, chunk_len)`. One
/// chunk (a single launch) when the outputs alone give [`TARGET_WARPS`] warps or the run is
/// short; else as many chunks of at least [`MIN_CHUNK`] elements as bring the warps to the
/// target, reduced again by a second launch. A function of the shapes only: deterministic.
pub fn reduce_split(outputs: usize, run_len: usize) -> (usize, usize) {
    let wanted = TARGET_WARPS.div_ceil(outputs.max(1)).min(run_len / MIN_CHUNK).max(1);
    let chunk_len = run_len.div_ceil(wanted).max(1);
    (run_len.div_ceil(chunk_len).max(1), chunk_len)
}

/// Sum or max of the view over `axes`: one value per combination of the kept axes, in their
/// row-major order, as the CPU kernel (`cpu.rs`) (kernels/reduce.cu). Long runs over few
/// outputs take two launches ([`reduce_split`]).
pub fn reduce(x: &DeviceBuffer, x_view: &Layout, axes: &[usize], kind: ReduceKind) -> Result<DeviceBuffer> {
    let op = kind.name();
    let (x_arg, _) = view_arg(op, x, x_view)?;
    let (shape, strides) = (x_view.shape(), x_view.strides());
    let kept: Vec<usize> = (0..x_view.rank()).filter(|a| !axes.contains(a)).collect();
    let pick = |list: &[usize], from: &[usize]| -> Vec<usize> { list.iter().map(|&a| from[a]).collect() };
    let kept_view = Strides::new(&pick(&kept, shape), &pick(&kept, strides))?;
    let run_view = Strides::new(&pick(axes, shape), &pick(axes, strides))?;
    let outputs: usize = kept.iter().map(|&a| shape[a]).product();
    let run_len: usize = axes.iter().map(|&a| shape[a]).product();
    let y = output(x.backend(), outputs)?;
    if outputs == 0 {
        return Ok(y);
    }
    let split @ (chunks, _) = reduce_split(outputs, run_len);
    if chunks == 1 {
        launch(x_arg, kept_view, run_view, &y, outputs, run_len, split, kind)?;
        return Ok(y);
    }
    let partials = output(x.backend(), outputs * chunks)?;
    launch(x_arg, kept_view, run_view, &partials, outputs, run_len, split, kind)?;
    // each output's partials, in chunk order: row `output` of [outputs, chunks]
    let (by_output, by_chunk) = (Strides::new(&[outputs], &[chunks])?, Strides::new(&[chunks], &[1])?);
    launch(partials.arg(), by_output, by_chunk, &y, outputs, chunks, (1, chunks), kind)?;
    Ok(y)
}

/// One launch of `reduce_f32`: a warp per (output, chunk), written to `y[output · chunks + chunk]`.
#[allow(clippy::too_many_arguments)]
fn launch(x: KernelArg, kept: Strides, run: Strides, y: &DeviceBuffer, outputs: usize, run_len: usize, split: (usize, usize), kind: ReduceKind) -> Result<()> {
    let (chunks, chunk_len) = split;
    let warps_per_block = (THREADS / 32) as usize;
    let config = LaunchConfig::linear((outputs * chunks).div_ceil(warps_per_block) as u32, THREADS);
    let args = [
        x,
        KernelArg::Strides(kept),
        KernelArg::Strides(run),
        y.arg(),
        KernelArg::I64(outputs as i64),
        KernelArg::I64(run_len as i64),
        KernelArg::I64(chunks as i64),
        KernelArg::I64(chunk_len as i64),
        KernelArg::I32(matches!(kind, ReduceKind::Max) as i32),
    ];
    y.backend().launch(kernel("reduce.cu", "reduce_f32"), &config, &args)
}
