//! Normalization layers as compositions of primitive ops (their gradients come from the
//! parts; a fused kernel can replace them when a benchmark asks for it).

use crate::error::{Result, TensorError, invalid};
use crate::Tensor;

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
    /// positions, then `y = x̂·weight[c] + bias[c]` (`weight`, `bias` of shape `[C]`).
    pub fn group_norm(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        let op = "group_norm";
        if self.rank() < 2 {
            return invalid(op, format!("needs [N, C, ...], got {:?}", self.shape()));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        if num_groups == 0 || c % num_groups != 0 {
            return invalid(op, format!("{c} channels do not split into {num_groups} groups"));
        }
        let grouped = self.reshape(&[n, num_groups, self.numel() / (n * num_groups)])?;
        let normalized = standardize(&grouped, &[-1], eps)?.reshape(self.shape())?;
        let mut view = vec![1; self.rank()];
        view[1] = c;
        affine(normalized, weight, bias, &[c], &view, op)
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
