//! Reductions over axes: sum, mean, max, var. `keepdim` keeps reduced axes as size 1.

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::Result;
use crate::layout::normalize_axis;

/// What a reduction computes over each run of reduced elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Max,
}

impl ReduceKind {
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "sum",
            ReduceKind::Max => "max",
        }
    }
}

/// The reductions' kernel, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait ReduceKernels {
    /// `kind` of the view `x` over `axes` (sorted, distinct): one value per combination of
    /// the kept axes, in their row-major order, as a tensor of `out_shape`.
    fn reduce(&self, x: &Tensor, axes: &[usize], kind: ReduceKind, out_shape: &[usize]) -> Result<Tensor>;
}

/// Normalizes, sorts and dedups axes; an empty list means every axis.
fn normalize_axes(op: &'static str, axes: &[isize], rank: usize) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    let mut out = axes.iter().map(|&a| normalize_axis(op, a, rank)).collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The shape after reducing `axes` with keepdim.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(i, &n)| if axes.contains(&i) { 1 } else { n }).collect()
}

fn drop_axes(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &n)| n).collect()
}

impl Tensor {
    fn reduce_forward(&self, axes: &[usize], kind: ReduceKind) -> Result<Tensor> {
        kernels(self).reduce(self, axes, kind, &kept_shape(self.shape(), axes))
    }

    /// Σ over `axes` (all axes if empty); the gradient broadcasts back: ∂/∂x = 1.
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = normalize_axes("sum", axes, self.rank())?;
        let kept = self.reduce_forward(&axes, ReduceKind::Sum)?;
        let dropped_shape = drop_axes(self.shape(), &axes);
        let input_shape = self.shape().to_vec();
        let kept_dims = kept.shape().to_vec();
        let out = kept.with_backward("sum", &[self], move |g| Ok(vec![Some(g.reshape(&kept_dims)?.broadcast_to(&input_shape)?)]));
        if keepdim { Ok(out) } else { out.reshape(&dropped_shape) }
    }

    /// Σ of all elements, as a one-element tensor of shape [].
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&[], false)
    }

    /// Mean over `axes` (all if empty): Σx / n; ∂/∂x = 1/n.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let normalized = normalize_axes("mean", axes, self.rank())?;
        let count: usize = normalized.iter().map(|&a| self.shape()[a]).product();
        self.sum(axes, keepdim)?.mul_scalar(1.0 / count as f64)
    }

    /// Mean of all elements, shape [].
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&[], false)
    }

    /// Maximum over `axes` (PyTorch's `amax`). The gradient goes to the positions that attain
    /// the maximum, shared equally between ties.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes_n = normalize_axes("max", axes, self.rank())?;
        let kept = self.reduce_forward(&axes_n, ReduceKind::Max)?;
        let dropped_shape = drop_axes(self.shape(), &axes_n);
        let x = self.detach();
        let y = kept.clone();
        let out = kept.with_backward("max", &[self], move |g| {
            let mask = x.eq_mask(&y)?;
            let count = mask.sum(&axes_n.iter().map(|&a| a as isize).collect::<Vec<_>>(), true)?;
            Ok(vec![Some(mask.mul(&g.reshape(y.shape())?.div(&count)?)?)])
        });
        if keepdim { Ok(out) } else { out.reshape(&dropped_shape) }
    }

    /// Variance over `axes`: Σ(x − mean)² / (n − correction); `correction` 1 is the unbiased
    /// estimate (PyTorch's default), 0 the population variance. A composition, so its
    /// gradient, 2(x − mean)/(n − correction), comes from the parts.
    pub fn var(&self, axes: &[isize], keepdim: bool, correction: usize) -> Result<Tensor> {
        let normalized = normalize_axes("var", axes, self.rank())?;
        let count: usize = normalized.iter().map(|&a| self.shape()[a]).product();
        if count <= correction {
            return crate::error::invalid("var", format!("{count} elements with correction {correction}"));
        }
        let centered = self.sub(&self.mean(axes, true)?)?;
        centered.sqr()?.sum(axes, keepdim)?.mul_scalar(1.0 / (count - correction) as f64)
    }

    /// Sums over the axes along which `shape` was broadcast to this tensor's shape: the
    /// adjoint of [`Tensor::broadcast_to`], used by every broadcasting op's backward.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let mismatch = || crate::TensorError::BroadcastMismatch { op: "sum_to_shape", lhs: self.shape().to_vec(), rhs: shape.to_vec() };
        let lead = self.rank().checked_sub(shape.len()).ok_or_else(mismatch)?;
        if shape.iter().zip(&self.shape()[lead..]).any(|(&target, &n)| target != 1 && target != n) {
            return Err(mismatch());
        }
        let axes: Vec<isize> = (0..self.rank()).filter(|&i| i < lead || (shape[i - lead] == 1 && self.shape()[i] != 1)).map(|i| i as isize).collect();
        self.sum(&axes, true)?.reshape(shape)
    }
}
