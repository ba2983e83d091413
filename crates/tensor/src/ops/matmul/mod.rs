//! Batched matrix multiply with broadcast batch axes.

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, TensorError, invalid};
use crate::layout::{Layout, broadcast_shapes};
use crate::ops::check_same;

/// The shape of a batched product: `batch` products of `[m, k] · [k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// The matmul kernel, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait MatmulKernels {
    /// `out[b] = a[b] · b[b]` for every batch index of the broadcast views `la` `[..., m, k]`
    /// and `lb` `[..., k, n]`, a contiguous tensor of `out_shape` `[..., m, n]`.
    fn batched_matmul(&self, a: &Tensor, la: &Layout, b: &Tensor, lb: &Layout, shape: MatmulShape, out_shape: &[usize]) -> Result<Tensor>;
}

impl Tensor {
    /// Matrix product over the last two axes, `[..., m, k] · [..., k, n] → [..., m, n]`; the
    /// leading (batch) axes broadcast. Gradients: `∂L/∂a = g·bᵀ`, `∂L/∂b = aᵀ·g` (summed over
    /// broadcast batch axes).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        check_same("matmul", &[self, rhs])?;
        if self.rank() < 2 || rhs.rank() < 2 {
            return invalid("matmul", format!("needs rank ≥ 2, got {:?} and {:?}", self.shape(), rhs.shape()));
        }
        let (ra, rb) = (self.rank(), rhs.rank());
        let (m, k, k2, n) = (self.shape()[ra - 2], self.shape()[ra - 1], rhs.shape()[rb - 2], rhs.shape()[rb - 1]);
        if k != k2 {
            return Err(TensorError::ShapeMismatch { op: "matmul", lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec() });
        }
        let batch = broadcast_shapes("matmul", &self.shape()[..ra - 2], &rhs.shape()[..rb - 2])?;
        let shape_a: Vec<usize> = batch.iter().copied().chain([m, k]).collect();
        let shape_b: Vec<usize> = batch.iter().copied().chain([k, n]).collect();
        let (la, lb) = (self.layout().broadcast_to(&shape_a)?, rhs.layout().broadcast_to(&shape_b)?);
        let out_shape: Vec<usize> = batch.iter().copied().chain([m, n]).collect();
        let out = kernels(self).batched_matmul(self, &la, rhs, &lb, MatmulShape { m, n, k }, &out_shape)?;
        let (a, b) = (self.detach(), rhs.detach());
        let (a_needs, b_needs) = (self.requires_grad(), rhs.requires_grad());
        Ok(out.with_backward("matmul", &[self, rhs], move |g| {
            let grad_a = if a_needs { Some(g.matmul(&b.transpose(-1, -2)?)?.sum_to_shape(a.shape())?) } else { None };
            let grad_b = if b_needs { Some(a.transpose(-1, -2)?.matmul(g)?.sum_to_shape(b.shape())?) } else { None };
            Ok(vec![grad_a, grad_b])
        }))
    }
}
