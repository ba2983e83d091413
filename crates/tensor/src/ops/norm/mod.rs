//! Normalization layers. `group_norm` (used all over the UNet) runs on a fused kernel each
//! way (`cpu.rs`, kernels/norm.cu); `layer_norm` is a composition of primitive ops (its
//! gradient comes from the parts) until a benchmark asks for a kernel.

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

/// The group norm's kernels, one implementation per device (`cpu.rs`, `cuda.rs`). Inputs are
/// contiguous: x `[n, channels, positions]`, weight and bias `[channels]`.
pub(crate) trait NormKernels {
    /// `[y, mean, rstd]`, the statistics one per (sample, group); `y = silu(h)` when `silu`.
    fn group_norm_forward(&self, x: &Tensor, w: &Tensor, b: &Tensor, shape: &GroupNormShape, eps: f64, silu: bool) -> Result<[Tensor; 3]>;
    /// `[dx, dweight, dbias]` from `saved = [x, weight, bias, mean, rstd]` and `dy`, through the
    /// fused SiLU when `silu`.
    fn group_norm_backward(&self, saved: [&Tensor; 5], dy: &Tensor, shape: &GroupNormShape, silu: bool) -> Result<[Tensor; 3]>;
}

/// `(x − mean) / √(var + eps)` over the trailing axes `axes` of `x` (biased variance).
fn standardize(x: &Tensor, axes: &[isize], eps: f64) -> Result<Tensor> {
    let centered = x.sub(&x.mean(axes, true)?)?;
    let inv_std = centered.sqr()?.mean(axes, true)?.add_scalar(eps)?.powf(-0.5)?;
    centered.mul(&inv_std)
}

/// `y·weight + bias` with `weight`, `bias` of `param_shape`, viewed as `view_shape` to broadcast.
fn affine(y: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, param_shape: &[usize], view_shape: &[usize], op: &'static str) -> Result<Tensor> {
    let mut y = y;
    for param in [weight, bias].into_iter().flatten() {
        if param.shape() != param_shape {
            return Err(TensorError::ShapeMismatch { op, lhs: param_shape.to_vec(), rhs: param.shape().to_vec() });
        }
    }
    if let Some(w) = weight {
        y = y.mul(&w.reshape(view_shape)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&b.reshape(view_shape)?)?;
    }
    Ok(y)
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
        for param in [weight, bias].into_iter().flatten() {
            if param.shape() != [c] {
                return Err(TensorError::ShapeMismatch { op, lhs: vec![c], rhs: param.shape().to_vec() });
            }
            crate::ops::check_same(op, &[self, param])?;
        }
        if self.numel() == 0 {
            return invalid(op, format!("empty input of shape {:?}", self.shape()));
        }
        let shape = GroupNormShape { n, channels: c, groups: num_groups, positions: self.numel() / (n * c) };
        let x = self.detach().contiguous()?;
        let w = match weight {
            Some(w) => w.detach().contiguous()?,
            None => Tensor::ones(&[c], self.dtype()).to_device(self.device())?,
        };
        let b = match bias {
            Some(b) => b.detach().contiguous()?,
            None => Tensor::zeros(&[c], self.dtype()).to_device(self.device())?,
        };
        let [y, mean, rstd] = kernels(self).group_norm_forward(&x, &w, &b, &shape, eps, silu)?;
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
        Ok(y.with_backward(op, &inputs, move |dy| {
            let [dx, dw, db] = kernels(&x).group_norm_backward([&x, &w, &b, &mean, &rstd], dy, &shape, silu)?;
            let mut grads = vec![Some(dx)];
            if has_weight {
                grads.push(Some(dw));
            }
            if has_bias {
                grads.push(Some(db));
            }
            Ok(grads)
        }))
    }

    /// Layer normalization (Ba et al. 2016) over the trailing axes `normalized_shape`:
    /// `y = (x − mean)/√(var + eps) · weight + bias`, `weight` and `bias` of `normalized_shape`.
    pub fn layer_norm(&self, normalized_shape: &[usize], weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        let op = "layer_norm";
        let k = normalized_shape.len();
        if k == 0 || k > self.rank() || &self.shape()[self.rank() - k..] != normalized_shape {
            return Err(TensorError::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: normalized_shape.to_vec() });
        }
        let axes: Vec<isize> = (1..=k as isize).map(|i| -i).collect();
        let normalized = standardize(self, &axes, eps)?;
        affine(normalized, weight, bias, normalized_shape, normalized_shape, op)
    }
}
