//! Normalization layers, each a fused kernel each way (`cpu.rs`, kernels/norm.cu) that keeps
//! the statistics it computed (mean and `rstd = 1/√(σ² + eps)`, biased variance) for its
//! backward. Both standardize blocks of `x`, `x̂ = (x − μ)·rstd`, and apply an affine:
//!
//! | op | a block | forward | backward (`g = dy·weight`) |
//! |---|---|---|---|
//! | `group_norm` | a (sample, group): `C/G` channels × positions | `y = x̂·w[c] + b[c]` | `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))`, `dw[c] = Σ dy·x̂`, `db[c] = Σ dy` |
//! | `layer_norm` | a row: the trailing `normalized_shape` axes | `y = x̂·w[j] + b[j]` | the same, `dw[j]`, `db[j]` summed over the rows |
//!
//! (`group_norm_silu` adds the SiLU that follows every group norm of the UNet's residual
//! blocks to the same kernels.)

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, TensorError, invalid};

/// Sizes of a group norm: `n` samples, `channels` in `groups`, `positions` per channel.
#[derive(Clone, Copy, Debug)]
pub struct GroupNormShape {
    pub n: usize,
    pub channels: usize,
    pub groups: usize,
    pub positions: usize,
}

impl GroupNormShape {
    pub(crate) fn block_len(&self) -> usize {
        self.channels / self.groups * self.positions
    }
    pub(crate) fn channels_per_group(&self) -> usize {
        self.channels / self.groups
    }
}

/// The normalizations' kernels, one implementation per device (`cpu.rs`, `cuda.rs`). Inputs
/// are contiguous.
pub(crate) trait NormKernels {
    /// Group norm of x `[n, channels, positions]`, weight and bias `[channels]`: `[y, mean,
    /// rstd]`, the statistics one per (sample, group); `y = silu(h)` when `silu`.
    fn group_norm_forward(&self, x: &Tensor, w: &Tensor, b: &Tensor, shape: &GroupNormShape, eps: f64, silu: bool) -> Result<[Tensor; 3]>;
    /// `[dx, dweight, dbias]` from `saved = [x, weight, bias, mean, rstd]` and `dy`, through the
    /// fused SiLU when `silu`.
    fn group_norm_backward(&self, saved: [&Tensor; 5], dy: &Tensor, shape: &GroupNormShape, silu: bool) -> Result<[Tensor; 3]>;
    /// Layer norm of x, rows of `cols` elements (its trailing axes), weight and bias of `cols`
    /// elements (any shape): `[y, mean, rstd]`, the statistics `[rows]`.
    fn layer_norm_forward(&self, x: &Tensor, w: &Tensor, b: &Tensor, cols: usize, eps: f64) -> Result<[Tensor; 3]>;
    /// `[dx, dweight, dbias]` (dweight and dbias of weight's shape) from
    /// `saved = [x, weight, mean, rstd]` and `dy`.
    fn layer_norm_backward(&self, saved: [&Tensor; 4], dy: &Tensor, cols: usize) -> Result<[Tensor; 3]>;
}

/// The affine parameters as the kernels take them: `weight` and `bias` (detached, contiguous)
/// after checking that they have `shape` and `x`'s device and dtype, or ones and zeros.
fn affine_parameters(op: &'static str, x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, shape: &[usize]) -> Result<(Tensor, Tensor)> {
    for param in [weight, bias].into_iter().flatten() {
        if param.shape() != shape {
            return Err(TensorError::ShapeMismatch { op, lhs: shape.to_vec(), rhs: param.shape().to_vec() });
        }
        crate::ops::check_same(op, &[x, param])?;
    }
    let or_constant = |param: Option<&Tensor>, constant: fn(&[usize], crate::DType) -> Tensor| match param {
        Some(p) => p.detach().contiguous(),
        None => constant(shape, x.dtype()).to_device(x.device()),
    };
    Ok((or_constant(weight, Tensor::ones)?, or_constant(bias, Tensor::zeros)?))
}

/// Records a normalization's backward on `y`: `backward(dy)` gives `[dx, dweight, dbias]`, of
/// which the closure returns those of the inputs given (`x`, then `weight`, `bias` if present).
fn with_norm_backward(
    y: Tensor,
    op: &'static str,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    backward: impl Fn(&Tensor) -> Result<[Tensor; 3]> + Send + Sync + 'static,
) -> Tensor {
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
    y.with_backward(op, &inputs, move |dy| {
        let [dx, dw, db] = backward(dy)?;
        let mut grads = vec![Some(dx)];
        grads.extend(has_weight.then_some(Some(dw)));
        grads.extend(has_bias.then_some(Some(db)));
        Ok(grads)
    })
}

impl Tensor {
    /// Group normalization (Wu & He 2018) of `x [N, C, *]`: the channels are split into
    /// `num_groups` groups, each group of each sample is standardized over its channels and
    /// positions (biased variance), then `y = x̂·weight[c] + bias[c]` (`weight`, `bias` of
    /// shape `[C]`). A fused kernel each way (`cpu.rs`, kernels/norm.cu): backward
    /// `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))` with `g = dy·weight[c]`, `dweight = Σ dy·x̂`,
    /// `dbias = Σ dy`.
    pub fn group_norm(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.group_norm_then(num_groups, weight, bias, eps, false)
    }

    /// `silu(group_norm(x))`, the UNet's pair, as one fused kernel each way (`cpu.rs`, kernels/norm.cu): the backward `dh = dy·silu'(h)` with `h`
    /// recomputed from x, then the group norm backward of `dh`, so the pair keeps no activation
    /// of its own. (Tiny UNet step, B32: 400 MiB against 486 MiB as two ops, same time since
    /// the SiLU vectorizes.)
    pub fn group_norm_silu(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.group_norm_then(num_groups, weight, bias, eps, true)
    }

    /// Group norm, then SiLU when `silu`.
    fn group_norm_then(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64, silu: bool) -> Result<Tensor> {
        let op = if silu { "group_norm_silu" } else { "group_norm" };
        if self.rank() < 2 {
            return invalid(op, format!("needs [N, C, ...], got {:?}", self.shape()));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        if num_groups == 0 || c % num_groups != 0 {
            return invalid(op, format!("{c} channels do not split into {num_groups} groups"));
        }
        let (w, b) = affine_parameters(op, self, weight, bias, &[c])?;
        if self.numel() == 0 {
            return invalid(op, format!("empty input of shape {:?}", self.shape()));
        }
        let shape = GroupNormShape { n, channels: c, groups: num_groups, positions: self.numel() / (n * c) };
        let x = self.detach().contiguous()?;
        let [y, mean, rstd] = kernels(self).group_norm_forward(&x, &w, &b, &shape, eps, silu)?;
        Ok(with_norm_backward(y, op, self, weight, bias, move |dy| kernels(&x).group_norm_backward([&x, &w, &b, &mean, &rstd], dy, &shape, silu)))
    }

    /// Layer normalization (Ba et al. 2016) over the trailing axes `normalized_shape` of `x`:
    /// each row (an index of the leading axes, `cols = Π normalized_shape` elements) is
    /// standardized, `x̂ = (x − μ)·rstd` with `rstd = 1/√(σ² + eps)` (biased variance), then
    /// `y = x̂·weight + bias`, `weight` and `bias` of `normalized_shape` (ones and zeros when
    /// absent). A fused kernel each way (`cpu.rs`, kernels/norm.cu), which keeps μ and rstd per
    /// row:
    ///
    /// - forward: `y[i, j] = (x[i, j] − μ[i])·rstd[i]·weight[j] + bias[j]`
    /// - backward: with `g = dy·weight`, `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))` (means over
    ///   the row), `dweight = Σ_rows dy·x̂`, `dbias = Σ_rows dy`.
    ///
    /// Errors: `ShapeMismatch` when `normalized_shape` is empty or not the trailing axes of `x`,
    /// or `weight` or `bias` does not have it; `InvalidArgument` for an empty `x`.
    pub fn layer_norm(&self, normalized_shape: &[usize], weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        let op = "layer_norm";
        let k = normalized_shape.len();
        if k == 0 || k > self.rank() || &self.shape()[self.rank() - k..] != normalized_shape {
            return Err(TensorError::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: normalized_shape.to_vec() });
        }
        let (w, b) = affine_parameters(op, self, weight, bias, normalized_shape)?;
        if self.numel() == 0 {
            return invalid(op, format!("empty input of shape {:?}", self.shape()));
        }
        let cols = normalized_shape.iter().product();
        let x = self.detach().contiguous()?;
        let [y, mean, rstd] = kernels(self).layer_norm_forward(&x, &w, &b, cols, eps)?;
        Ok(with_norm_backward(y, op, self, weight, bias, move |dy| kernels(&x).layer_norm_backward([&x, &w, &mean, &rstd], dy, cols)))
    }
}
