//! conv2d and conv_transpose2d (NCHW). Both run on the three kernels of [`ConvKernels`]
//! (`cpu/`, kernels/conv.cu): a transposed convolution is the data-gradient of a
//! convolution, so each op's forward is one of the kernels and its backward the other two.
//! Which algorithm each pass runs on each device is one table, [`algorithm::choose`].

pub mod algorithm;
pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, TensorError, invalid};
use crate::ops::{check_rank, check_same};

/// The sizes of one convolution, `x: [n, c_in, h, w]`, `weight: [c_out, c_in, kh, kw]`,
/// `y: [n, c_out, ho, wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeometry {
    /// Rows of the im2col matrix: `c_in·kh·kw`.
    pub(crate) fn col_rows(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    pub(crate) fn col_cols(&self) -> usize {
        self.ho * self.wo
    }
    pub(crate) fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(crate) fn output_image_len(&self) -> usize {
        self.c_out * self.ho * self.wo
    }
    /// A 1×1 kernel, stride 1, no padding: `col(x[n]) = x[n]` (`[c_in, h·w]`).
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.padding == [0, 0] && (self.ho, self.wo) == (self.h, self.w)
    }
    /// Elements of an im2col matrix (none when the image is its own).
    pub(crate) fn col_len(&self) -> usize {
        if self.is_pointwise() { 0 } else { self.col_rows() * self.col_cols() }
    }

    /// For kernel offset `k` along an axis, the input coordinate of output coordinate `o`.
    #[inline]
    pub(crate) fn input_coord(o: usize, k: usize, stride: usize, padding: usize, dilation: usize, size: usize) -> Option<usize> {
        let i = (o * stride + k * dilation) as isize - padding as isize;
        (i >= 0 && (i as usize) < size).then_some(i as usize)
    }
}

impl ConvGeometry {
    /// `[n, c_in, h, w]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    /// `[n, c_out, ho, wo]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.ho, self.wo]
    }
    /// `[c_out, c_in, kh, kw]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in, self.kh, self.kw]
    }
}

/// The convolution's three kernels, one implementation per device (`cpu/`, `cuda.rs`); each
/// returns a contiguous tensor.
pub(crate) trait ConvKernels {
    /// `y = conv2d(x, w) (+ bias)`, `[n, c_out, ho, wo]`.
    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: &ConvGeometry) -> Result<Tensor>;
    /// `dx` of `conv2d(x, w)` given `dy`, `[n, c_in, h, w]`.
    fn conv2d_backward_input(&self, dy: &Tensor, w: &Tensor, g: &ConvGeometry) -> Result<Tensor>;
    /// `dW` of `conv2d(x, w)` given x and `dy`, `[c_out, c_in, kh, kw]`.
    fn conv2d_backward_weight(&self, x: &Tensor, dy: &Tensor, g: &ConvGeometry) -> Result<Tensor>;
}

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
        let y = kernels(self).conv2d_forward(self, weight, bias, &g)?;
        let (x, w) = (self.detach(), weight.detach());
        let (x_needs, w_needs, b_needs) = (self.requires_grad(), weight.requires_grad(), bias.is_some_and(Tensor::requires_grad));
        let has_bias = bias.is_some();
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(y.with_backward(op, &inputs, move |dy| {
            let dx = if x_needs { Some(kernels(dy).conv2d_backward_input(dy, &w, &g)?) } else { None };
            crate::profile::mark("backward", "conv2d: input gradient");
            let dw = if w_needs { Some(kernels(dy).conv2d_backward_weight(&x, dy, &g)?) } else { None };
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
        let y = kernels(self).conv2d_backward_input(self, weight, &g)?;
        let (x, w) = (self.detach(), weight.detach());
        let (x_needs, w_needs) = (self.requires_grad(), weight.requires_grad());
        let y = y.with_backward(op, &[self, weight], move |dy| {
            let dx = if x_needs { Some(kernels(dy).conv2d_forward(dy, &w, None, &g)?) } else { None };
            let dw = if w_needs { Some(kernels(dy).conv2d_backward_weight(dy, &x, &g)?) } else { None };
            Ok(vec![dx, dw])
        });
        add_channel_bias(y, bias, op)
    }
}
