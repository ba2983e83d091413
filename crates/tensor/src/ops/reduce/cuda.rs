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

/// Sum or max of the view over `axes`: one value per combination of the kept axes, in their
/// row-major order, as the CPU kernel (`cpu.rs`) (kernels/reduce.cu).
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
    if outputs > 0 {
        let warps_per_block = (THREADS / 32) as usize;
        let config = LaunchConfig::linear(outputs.div_ceil(warps_per_block) as u32, THREADS);
        let args = [
            x_arg,
            KernelArg::Strides(kept_view),
            KernelArg::Strides(run_view),
            y.arg(),
            KernelArg::I64(outputs as i64),
            KernelArg::I64(run_len as i64),
            KernelArg::I32(matches!(kind, ReduceKind::Max) as i32),
        ];
        x.backend().launch(kernel("reduce.cu", "reduce_f32"), &config, &args)?;
    }
    Ok(y)
}
