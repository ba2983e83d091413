//! softmax and log_softmax along an axis. The kernels work on contiguous rows, so the axis is
//! moved last (a permute), the rows made contiguous, and the result permuted back.

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::Result;
use crate::layout::normalize_axis;

/// The softmax kernels, one implementation per device (`cpu.rs`, `cuda.rs`): both work on
/// the rows of a contiguous tensor's last axis.
pub(crate) trait SoftmaxKernels {
    /// Softmax (log-softmax when `log`) of each row.
    fn softmax_rows(&self, x: &Tensor, log: bool) -> Result<Tensor>;
    /// The backward of [`SoftmaxKernels::softmax_rows`] from its output `y` and the gradient `dy`.
    fn softmax_rows_backward(&self, y: &Tensor, dy: &Tensor, log: bool) -> Result<Tensor>;
}

/// The permutation swapping `axis` with the last axis (it is its own inverse).
fn swap_with_last(rank: usize, axis: usize) -> Vec<usize> {
    let mut dims: Vec<usize> = (0..rank).collect();
    dims.swap(axis, rank - 1);
    dims
}

impl Tensor {
    fn softmax_impl(&self, axis: isize, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        if self.rank() == 0 {
            return crate::error::invalid(op, "needs at least one axis");
        }
        let dims = swap_with_last(self.rank(), normalize_axis(op, axis, self.rank())?);
        // rows: the input with `axis` last, contiguous; the output is computed in that order
        let rows = self.detach().permute(&dims)?.contiguous()?;
        let y_rows = kernels(&rows).softmax_rows(&rows, log)?;
        let y = y_rows.permute(&dims)?;
        Ok(y.with_backward(op, &[self], move |dy| {
            let dy_rows = dy.permute(&dims)?.contiguous()?;
            Ok(vec![Some(kernels(&y_rows).softmax_rows_backward(&y_rows, &dy_rows, log)?.permute(&dims)?)])
        }))
    }

    /// `softmax(x)ᵢ = exp(xᵢ) / Σⱼ exp(xⱼ)` along `axis`; backward
    /// `dx = y ⊙ (dy − Σ dy ⊙ y)`.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl(axis, false)
    }

    /// `log_softmax(x)ᵢ = xᵢ − ln Σⱼ exp(xⱼ)` along `axis`; backward `dx = dy − softmax(x) Σ dy`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl(axis, true)
    }
}
