//! Normalization layers. `group_norm` (used all over the UNet) runs on the fused kernel of
//! [`crate::cpu::norm`]; `layer_norm` is a composition of primitive ops (its gradient comes
//! from the parts) until a benchmark asks for a kernel.

use crate::cpu::norm::{GroupNormShape, group_norm_backward, group_norm_forward};
use crate::error::{Result, TensorError, invalid};
use crate::cuda::kernels as gpu;
use crate::ops::{dense, gpu_tensor, new_tensor, on_gpu, with_gpu, wrap};
use crate::storage::with_float_slices3;
use crate::{FloatElem, Tensor};

/// The storage range of a contiguous tensor.
fn range(t: &Tensor) -> std::ops::Range<usize> {
    t.layout().contiguous_range().expect("contiguous")
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
    /// shape `[C]`). A fused kernel ([`crate::cpu::norm`]): backward
    /// `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))` with `g = dy·weight[c]`, `dweight = Σ dy·x̂`,
    /// `dbias = Σ dy`.
    pub fn group_norm(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.group_norm_then(num_groups, weight, bias, eps, false)
    }

    /// `silu(group_norm(x))`, the UNet's pair, as one fused kernel each way (`cpu::norm` with
    /// `silu`; kernels/norm.cu on a CUDA device): the backward `dh = dy·silu'(h)` with `h`
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
        let w = match weight { Some(w) => w.detach().contiguous()?, None => Tensor::ones(&[c], self.dtype()).to_device(self.device())? };
        let b = match bias { Some(b) => b.detach().contiguous()?, None => Tensor::zeros(&[c], self.dtype()).to_device(self.device())? };
        let (y, mean, rstd) = if on_gpu(self) {
            let (x, w, b) = (dense(&x)?, dense(&w)?, dense(&b)?);
            let (y, m, r) = with_gpu(op, &x, |xs| with_gpu(op, &w, |ws| with_gpu(op, &b, |bs| gpu::group_norm_forward(xs, ws, bs, &shape, eps, silu))))?;
            let device = self.device();
            (gpu_tensor(y, device, self.shape()), gpu_tensor(m, device, &[n * num_groups]), gpu_tensor(r, device, &[n * num_groups]))
        } else {
            let (sx, sw, sb) = (x.storage(), w.storage(), b.storage());
            let (y, m, r) = with_float_slices3!(op, sx.cpu(op)?, sw.cpu(op)?, sb.cpu(op)?, (xs, ws, bs) => {
                let (y, m, r) = group_norm_forward(&xs[range(&x)], &ws[range(&w)], &bs[range(&b)], &shape, eps, silu);
                (wrap(y), wrap(m), wrap(r))
            });
            (new_tensor(y, self.shape()), new_tensor(m, &[n * num_groups]), new_tensor(r, &[n * num_groups]))
        };
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
        Ok(y.with_backward(op, &inputs, move |dy| {
            let (dx, dw, db) = if on_gpu(&x) {
                let (x, w, b, dy) = (dense(&x)?, dense(&w)?, dense(&b)?, dense(dy)?);
                let device = x.device();
                let (dx, dw, db) = with_gpu(op, &x, |xs| {
                    with_gpu(op, &dy, |dys| {
                        with_gpu(op, &w, |ws| {
                            with_gpu(op, &b, |bs| {
                                with_gpu(op, &mean, |ms| with_gpu(op, &rstd, |rs| gpu::group_norm_backward(xs, dys, ws, bs, ms, rs, &shape, silu)))
                            })
                        })
                    })
                })?;
                (gpu_tensor(dx, device, x.shape()), gpu_tensor(dw, device, &[shape.channels]), gpu_tensor(db, device, &[shape.channels]))
            } else {
                let dy = dy.contiguous()?;
                let (sx, sdy, sw) = (x.storage(), dy.storage(), w.storage());
                let (sb, sm, sr) = (b.storage(), mean.storage(), rstd.storage());
                let (dx, dw, db) = with_float_slices3!(op, sx.cpu(op)?, sdy.cpu(op)?, sw.cpu(op)?, (xs, dys, ws) => {
                    let (bs, ms, rs) = (FloatElem::slice(sb.cpu(op)?).unwrap(), FloatElem::slice(sm.cpu(op)?).unwrap(), FloatElem::slice(sr.cpu(op)?).unwrap());
                    let (dx, dw, db) = group_norm_backward(&xs[range(&x)], &dys[range(&dy)], &ws[range(&w)], &bs[range(&b)], ms, rs, &shape, silu);
                    (wrap(dx), wrap(dw), wrap(db))
                });
                (new_tensor(dx, x.shape()), new_tensor(dw, &[shape.channels]), new_tensor(db, &[shape.channels]))
            };
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
