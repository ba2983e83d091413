//! The host side of the convolution's CUDA kernels (kernels/conv.cu): implicit GEMMs on the
//! shared tile product of kernels/ember_cuda.h.

use super::algorithm::{ConvPass, select};
use super::{ConvGeometry, ConvKernels};
use crate::cuda::launch::{check_len, output, tile_grid, tiled_kernel, to_i32};
use crate::cuda::{ConvShape, DeviceBuffer, KernelArg};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::layout::Layout;
use crate::ops::dense;
use crate::ops::reduce::ReduceKind;
use crate::ops::reduce::cuda::reduce;
use crate::{Result, Tensor};

impl ConvKernels for Cuda {
    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: &ConvGeometry) -> Result<Tensor> {
        select(g, ConvPass::Forward, x.device());
        let (x, w, b) = (dense(x)?, dense(w)?, bias.map(dense).transpose()?);
        let y = match &b {
            Some(b) => with_device_buffers("conv2d", [&x, &w, b], |[xs, ws, bs]| conv2d_forward(xs, ws, Some(bs), g))?,
            None => with_device_buffers("conv2d", [&x, &w], |[xs, ws]| conv2d_forward(xs, ws, None, g))?,
        };
        Ok(device_tensor(y, x.device(), &g.output_shape()))
    }

    fn conv2d_backward_input(&self, dy: &Tensor, w: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
        select(g, ConvPass::InputGradient, dy.device());
        let (dy, w) = (dense(dy)?, dense(w)?);
        let dx = with_device_buffers("conv2d_backward_input", [&dy, &w], |[dys, ws]| conv2d_backward_input(dys, ws, g))?;
        Ok(device_tensor(dx, dy.device(), &g.input_shape()))
    }

    fn conv2d_backward_weight(&self, x: &Tensor, dy: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
        select(g, ConvPass::WeightGradient, x.device());
        let (x, dy) = (dense(x)?, dense(dy)?);
        let dw = with_device_buffers("conv2d_backward_weight", [&x, &dy], |[xs, dys]| conv2d_backward_weight(xs, dys, g))?;
        Ok(device_tensor(dw, x.device(), &g.weight_shape()))
    }
}

fn conv_shape(op: &'static str, g: &ConvGeometry) -> Result<ConvShape> {
    let int = |what: &str, v: usize| to_i32(op, what, v);
    // Every index the kernels compute fits an int when the largest tensor's element count does.
    let largest = [g.n * g.c_in * g.h * g.w, g.n * g.c_out * g.ho * g.wo, g.c_out * g.c_in * g.kh * g.kw].into_iter().max().unwrap_or(0);
    int("elements of a tensor", largest)?;
    Ok(ConvShape {
        n: int("n", g.n)?,
        c_in: int("c_in", g.c_in)?,
        h: int("h", g.h)?,
        w: int("w", g.w)?,
        c_out: int("c_out", g.c_out)?,
        kh: int("kh", g.kh)?,
        kw: int("kw", g.kw)?,
        stride_h: int("stride", g.stride[0])?,
        stride_w: int("stride", g.stride[1])?,
        pad_h: int("padding", g.padding[0])?,
        pad_w: int("padding", g.padding[1])?,
        dilation_h: int("dilation", g.dilation[0])?,
        dilation_w: int("dilation", g.dilation[1])?,
        ho: int("ho", g.ho)?,
        wo: int("wo", g.wo)?,
    })
}

/// `y = conv2d(x, w) (+ bias)`, x `[n, c_in, h, w]` and w `[c_out, c_in, kh, kw]` contiguous
/// (kernels/conv.cu; CPU: `cpu/mod.rs`).
pub fn conv2d_forward(x: &DeviceBuffer, w: &DeviceBuffer, bias: Option<&DeviceBuffer>, g: &ConvGeometry) -> Result<DeviceBuffer> {
    let op = "conv2d";
    let shape = conv_shape(op, g)?;
    check_len(op, "x", x, g.n * g.c_in * g.h * g.w)?;
    check_len(op, "weight", w, g.c_out * g.c_in * g.kh * g.kw)?;
    if let Some(bias) = bias {
        check_len(op, "bias", bias, g.c_out)?;
    }
    let y = output(x.backend(), g.n * g.c_out * g.ho * g.wo)?;
    let (config, tile) = tile_grid(op, g.c_out, g.n * g.ho * g.wo, 1)?;
    let bias = KernelArg::Ptr(bias.map_or(0, |b| b.ptr()));
    x.backend().launch(tiled_kernel!("conv.cu", "conv2d_forward", tile), &config, &[x.arg(), w.arg(), bias, y.arg(), KernelArg::Conv(shape)])?;
    Ok(y)
}

/// dx of `conv2d(x, w)` given dy `[n, c_out, ho, wo]` (kernels/conv.cu; CPU:
/// `cpu/mod.rs`). One GEMM per sub-pixel class `(r_h, r_w)` of input positions (`ih mod s_h`,
/// `iw mod s_w`), each over the kernel taps that reach its positions only: with stride 1 one
/// class, with stride 2 four classes and a quarter of the products of the plain gather.
pub fn conv2d_backward_input(dy: &DeviceBuffer, w: &DeviceBuffer, g: &ConvGeometry) -> Result<DeviceBuffer> {
    let op = "conv2d_backward_input";
    let shape = conv_shape(op, g)?;
    check_len(op, "dy", dy, g.n * g.c_out * g.ho * g.wo)?;
    check_len(op, "weight", w, g.c_out * g.c_in * g.kh * g.kw)?;
    let dx = output(dy.backend(), g.n * g.c_in * g.h * g.w)?;
    // the input positions of class r on an axis of `extent`: r, r + s, ...
    let class_size = |extent: usize, r: usize, s: usize| if r < extent { (extent - r).div_ceil(s) } else { 0 };
    for r_h in 0..g.stride[0].min(g.h) {
        for r_w in 0..g.stride[1].min(g.w) {
            let columns = g.n * class_size(g.h, r_h, g.stride[0]) * class_size(g.w, r_w, g.stride[1]);
            if columns == 0 {
                continue;
            }
            let (config, tile) = tile_grid(op, g.c_in, columns, 1)?;
            let args = [dy.arg(), w.arg(), dx.arg(), KernelArg::Conv(shape), KernelArg::I32(r_h as i32), KernelArg::I32(r_w as i32)];
            dy.backend().launch(tiled_kernel!("conv.cu", "conv2d_backward_input", tile), &config, &args)?;
        }
    }
    Ok(dx)
}

/// dW of `conv2d(x, w)` given x and dy (kernels/conv.cu; CPU:
/// `cpu/mod.rs`). The long reduction over n·ho·wo is split
/// across blocks; the partial sums are added by [`reduce`], so the result is the same on
/// every run.
pub fn conv2d_backward_weight(x: &DeviceBuffer, dy: &DeviceBuffer, g: &ConvGeometry) -> Result<DeviceBuffer> {
    let op = "conv2d_backward_weight";
    let shape = conv_shape(op, g)?;
    check_len(op, "x", x, g.n * g.c_in * g.h * g.w)?;
    check_len(op, "dy", dy, g.n * g.c_out * g.ho * g.wo)?;
    let (m, n, k) = (g.c_out, g.c_in * g.kh * g.kw, g.n * g.ho * g.wo);
    // Enough splits for two waves of 128-tiles on a 132-multiprocessor GPU (the output alone
    // has few tiles: 36 for 256 × 2304), each at least 256 deep and at most 4096, at most 64
    // splits, in whole 8-deep panels.
    let tiles = m.div_ceil(128) * n.div_ceil(128);
    let splits = 264usize.div_ceil(tiles).min(k / 256).max(k.div_ceil(4096)).clamp(1, 64);
    let split_len = k.div_ceil(splits).div_ceil(8) * 8;
    let splits = k.div_ceil(split_len).max(1);
    let partial = output(x.backend(), splits * m * n)?;
    let (config, tile) = tile_grid(op, m, n, splits)?;
    let args = [x.arg(), dy.arg(), partial.arg(), KernelArg::Conv(shape), KernelArg::I32(to_i32(op, "split length", split_len)?)];
    x.backend().launch(tiled_kernel!("conv.cu", "conv2d_backward_weight", tile), &config, &args)?;
    if splits == 1 {
        return Ok(partial);
    }
    reduce(&partial, &Layout::contiguous(&[splits, m * n]), &[0], ReduceKind::Sum)
}
