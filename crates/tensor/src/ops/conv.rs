//! conv2d and conv_transpose2d (NCHW). Both run on the three kernels of
//! [`crate::cpu::conv`]: a transposed convolution is the data-gradient of a convolution, so
//! each op's forward is one of the kernels and its backward the other two.

use crate::cpu::conv::{ConvGeometry, conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
use crate::error::{Result, TensorError, invalid};
use crate::cuda::kernels as gpu;
use crate::ops::{check_rank, check_same, dense, gpu_tensor, new_tensor, on_gpu, with_gpu, wrap};
use crate::storage::{CpuStorage, with_float_slices2};
use crate::{FloatElem, Tensor};

/// Stride, zero padding and dilation of a convolution, per spatial axis (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams { stride: [1, 1], padding: [0, 0], dilation: [1, 1] }
    }
}

impl Conv2dParams {
    /// Same stride and padding on both axes, no dilation.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams { stride: [stride; 2], padding: [padding; 2], dilation: [1, 1] }
    }
    pub fn with_dilation(self, dilation: usize) -> Self {
        Conv2dParams { dilation: [dilation; 2], ..self }
    }
}

/// [`Conv2dParams`] plus the extra output rows/columns a transposed convolution may add
/// (`output_padding`, smaller than the stride or the dilation) to pick among the input sizes
/// that a strided convolution maps to the same output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams { stride: [1, 1], padding: [0, 0], output_padding: [0, 0], dilation: [1, 1] }
    }
}

impl ConvTranspose2dParams {
    pub fn new(stride: usize, padding: usize, output_padding: usize) -> Self {
        ConvTranspose2dParams { stride: [stride; 2], padding: [padding; 2], output_padding: [output_padding; 2], dilation: [1, 1] }
    }
}

/// Runs a conv kernel on two contiguous float tensors: `$kernel` on the CPU, `$gpu_kernel` on
/// a CUDA device.
macro_rules! run_conv_kernel {
    ($op:expr, $kernel:ident, $gpu_kernel:path, $a:expr, $b:expr, $g:expr, $shape:expr) => {{
        if on_gpu($a) {
            let (a, b) = (dense($a)?, dense($b)?);
            let buffer = with_gpu($op, &a, |x| with_gpu($op, &b, |y| $gpu_kernel(x, y, $g)))?;
            return Ok(gpu_tensor(buffer, a.device(), $shape));
        }
        let (a, b) = ($a.contiguous()?, $b.contiguous()?);
        let (ra, rb) = (a.layout().contiguous_range().unwrap(), b.layout().contiguous_range().unwrap());
        let (sa, sb) = (a.storage(), b.storage());
        let out = with_float_slices2!($op, sa.cpu($op)?, sb.cpu($op)?, (x, y) => wrap($kernel(&x[ra.clone()], &y[rb.clone()], $g)));
        Ok::<Tensor, TensorError>(new_tensor(out, $shape))
    }};
}

fn input_shape(g: &ConvGeometry) -> [usize; 4] {
    [g.n, g.c_in, g.h, g.w]
}
fn output_shape(g: &ConvGeometry) -> [usize; 4] {
    [g.n, g.c_out, g.ho, g.wo]
}

/// y = conv(x, w) + b without autograd (the bias added by the kernel, on either device).
fn conv_forward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: &ConvGeometry) -> Result<Tensor> {
    let op = "conv2d";
    if on_gpu(x) {
        let (x, w, b) = (dense(x)?, dense(w)?, bias.map(dense).transpose()?);
        let buffer = with_gpu(op, &x, |xs| {
            with_gpu(op, &w, |ws| match &b {
                Some(b) => with_gpu(op, b, |bs| gpu::conv2d_forward(xs, ws, Some(bs), g)),
                None => gpu::conv2d_forward(xs, ws, None, g),
            })
        })?;
        return Ok(gpu_tensor(buffer, x.device(), &output_shape(g)));
    }
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, bias.map(Tensor::contiguous).transpose()?);
    let (rx, rw) = (x.layout().contiguous_range().unwrap(), w.layout().contiguous_range().unwrap());
    let rb = b.as_ref().map(|b| b.layout().contiguous_range().unwrap());
    let (sx, sw, sb) = (x.storage(), w.storage(), b.as_ref().map(|b| b.storage()));
    let sb = sb.as_ref().map(|s| s.cpu(op)).transpose()?;
    let out = with_float_slices2!(op, sx.cpu(op)?, sw.cpu(op)?, (xs, ws) => {
        let bias = match (sb, &rb) {
            (Some(storage), Some(range)) => Some(&slice_like(xs, storage, op)?[range.clone()]),
            _ => None,
        };
        wrap(conv2d_forward(&xs[rx.clone()], &ws[rw.clone()], bias, g))
    });
    Ok(new_tensor(out, &output_shape(g)))
}

/// The elements of `storage` as the element type of `_like` (a dtype mismatch is an error).
fn slice_like<'a, T: FloatElem>(_like: &[T], storage: &'a CpuStorage, op: &'static str) -> Result<&'a [T]> {
    T::slice(storage).ok_or(TensorError::DTypeMismatch { op, lhs: T::DTYPE, rhs: storage.dtype() })
}
/// dx of a conv, given dy.
fn conv_input_grad(dy: &Tensor, w: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    run_conv_kernel!("conv2d_backward_input", conv2d_backward_input, gpu::conv2d_backward_input, dy, w, g, &input_shape(g))
}
/// dW of a conv, given x and dy.
fn conv_weight_grad(x: &Tensor, dy: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    run_conv_kernel!("conv2d_backward_weight", conv2d_backward_weight, gpu::conv2d_backward_weight, x, dy, g, &[g.c_out, g.c_in, g.kh, g.kw])
}

/// Rejects inputs with an axis of size 0 (an empty batch included).
fn check_nonempty(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    for t in tensors {
        if t.numel() == 0 {
            return invalid(op, format!("empty tensor of shape {:?}", t.shape()));
        }
    }
    Ok(())
}

/// The checks both convolutions share; returns the input and weight shapes. The weight's
/// axis `in_axis` must match the input's channels (1 for conv2d, 0 for conv_transpose2d).
fn check_conv_inputs(
    op: &'static str,
    x: &Tensor,
    weight: &Tensor,
    in_axis: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<([usize; 4], [usize; 4])> {
    check_rank(op, x, 4, "input")?;
    check_rank(op, weight, 4, "weight")?;
    check_same(op, &[x, weight])?;
    check_nonempty(op, &[x, weight])?;
    check_positive(op, "stride", stride)?;
    check_positive(op, "dilation", dilation)?;
    let x_shape: [usize; 4] = x.shape().try_into().expect("rank checked");
    let w_shape: [usize; 4] = weight.shape().try_into().expect("rank checked");
    if x_shape[1] != w_shape[in_axis] {
        return Err(TensorError::ShapeMismatch { op, lhs: x.shape().to_vec(), rhs: weight.shape().to_vec() });
    }
    Ok((x_shape, w_shape))
}

fn check_positive(op: &'static str, what: &str, values: [usize; 2]) -> Result<()> {
    if values.contains(&0) {
        return invalid(op, format!("{what} must be positive, got {values:?}"));
    }
    Ok(())
}

/// Adds a per-channel bias `[C]` to `[N, C, H, W]` (broadcast add, so its gradient is the sum
/// of `dy` over N, H, W).
fn add_channel_bias(y: Tensor, bias: Option<&Tensor>, op: &'static str) -> Result<Tensor> {
    let Some(bias) = bias else { return Ok(y) };
    if bias.shape() != [y.shape()[1]] {
        return Err(TensorError::ShapeMismatch { op, lhs: vec![y.shape()[1]], rhs: bias.shape().to_vec() });
    }
    y.add(&bias.reshape(&[1, y.shape()[1], 1, 1])?)
}

impl Tensor {
    /// 2-D cross-correlation (PyTorch's `conv2d`, groups = 1):
    /// `y[n,o,i,j] = b[o] + Σ_{c,ki,kj} w[o,c,ki,kj] · x[n, c, i·s − p + ki·d, j·s − p + kj·d]`.
    ///
    /// Shapes: `x [N, Cin, H, W]`, `weight [Cout, Cin, kh, kw]`, `bias [Cout]` →
    /// `[N, Cout, (H + 2p − d(kh−1) − 1)/s + 1, ...]`. Gradients: `dx = conv2d_backward_input(dy, w)`,
    /// `dw = Σₙ dy · im2col(x)ᵀ`, `db = Σ dy` over N, H, W. The kernels add the bias in their
    /// last pass over the output (no separate broadcast add).
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, params: Conv2dParams) -> Result<Tensor> {
        let op = "conv2d";
        let ([n, c_in, h, w], [c_out, _, kh, kw]) = check_conv_inputs(op, self, weight, 1, params.stride, params.dilation)?;
        let out_size = |size: usize, k: usize, axis: usize| -> Result<usize> {
            let span = params.dilation[axis] * (k - 1) + 1;
            let padded = size + 2 * params.padding[axis];
            if padded < span {
                return invalid(op, format!("kernel span {span} exceeds the padded input {padded}"));
            }
            Ok((padded - span) / params.stride[axis] + 1)
        };
        let g = ConvGeometry {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride: params.stride,
            padding: params.padding,
            dilation: params.dilation,
            ho: out_size(h, kh, 0)?,
            wo: out_size(w, kw, 1)?,
        };
        if let Some(bias) = bias {
            if bias.shape() != [c_out] {
                return Err(TensorError::ShapeMismatch { op, lhs: vec![c_out], rhs: bias.shape().to_vec() });
            }
            check_same(op, &[self, bias])?;
        }
        let y = conv_forward(self, weight, bias, &g)?;
        let (x, w) = (self.detach(), weight.detach());
        let (x_needs, w_needs, b_needs) = (self.requires_grad(), weight.requires_grad(), bias.is_some_and(Tensor::requires_grad));
        let has_bias = bias.is_some();
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(y.with_backward(op, &inputs, move |dy| {
            let dx = if x_needs { Some(conv_input_grad(dy, &w, &g)?) } else { None };
            crate::profile::mark("backward", "conv2d: input gradient");
            let dw = if w_needs { Some(conv_weight_grad(&x, dy, &g)?) } else { None };
            crate::profile::mark("backward", "conv2d: weight gradient");
            let mut grads = vec![dx, dw];
            if has_bias {
                grads.push(if b_needs { Some(dy.sum(&[0, 2, 3], false)?) } else { None });
            }
            Ok(grads)
        }))
    }

    /// 2-D transposed convolution (PyTorch's `conv_transpose2d`, groups = 1): the adjoint of
    /// `conv2d` with the same weight, i.e. each input pixel scatters `x[n,c,i,j] · w[c,o,:,:]`
    /// into the output at `(i·s − p, j·s − p)` with dilation `d`.
    ///
    /// Shapes: `x [N, Cin, H, W]`, `weight [Cin, Cout, kh, kw]`, `bias [Cout]` →
    /// `[N, Cout, (H−1)s − 2p + d(kh−1) + output_padding + 1, ...]`. Gradients: `dx = conv2d(dy, w)`,
    /// `dw = conv2d_backward_weight(input = dy, output grad = x)`, `db = Σ dy`.
    pub fn conv_transpose2d(&self, weight: &Tensor, bias: Option<&Tensor>, params: ConvTranspose2dParams) -> Result<Tensor> {
        let op = "conv_transpose2d";
        let ([n, c_in, h, w], [_, c_out, kh, kw]) = check_conv_inputs(op, self, weight, 0, params.stride, params.dilation)?;
        for axis in 0..2 {
            if params.output_padding[axis] >= params.stride[axis].max(params.dilation[axis]) {
                return invalid(op, "output_padding must be smaller than the stride or the dilation");
            }
        }
        let out_size = |size: usize, k: usize, axis: usize| -> Result<usize> {
            let full = (size - 1) * params.stride[axis] + params.dilation[axis] * (k - 1) + params.output_padding[axis] + 1;
            full.checked_sub(2 * params.padding[axis])
                .filter(|&s| s > 0)
                .ok_or_else(|| TensorError::InvalidArgument { op, msg: format!("padding {:?} leaves no output", params.padding) })
        };
        // The convolution whose data-gradient this op is: it maps our output to our input.
        let g = ConvGeometry {
            n,
            c_in: c_out,
            h: out_size(h, kh, 0)?,
            w: out_size(w, kw, 1)?,
            c_out: c_in,
            kh,
            kw,
            stride: params.stride,
            padding: params.padding,
            dilation: params.dilation,
            ho: h,
            wo: w,
        };
        let y = conv_input_grad(self, weight, &g)?;
        let (x, w) = (self.detach(), weight.detach());
        let (x_needs, w_needs) = (self.requires_grad(), weight.requires_grad());
        let y = y.with_backward(op, &[self, weight], move |dy| {
            let dx = if x_needs { Some(conv_forward(dy, &w, None, &g)?) } else { None };
            let dw = if w_needs { Some(conv_weight_grad(dy, &x, &g)?) } else { None };
            Ok(vec![dx, dw])
        });
        add_channel_bias(y, bias, op)
    }
}
