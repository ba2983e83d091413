//! softmax and log_softmax along an axis. The kernels work on contiguous rows, so the axis is
//! moved last (a permute), the rows made contiguous, and the result permuted back.

use crate::cpu::softmax::{log_softmax_backward_rows, log_softmax_rows, softmax_backward_rows, softmax_rows};
use crate::error::Result;
use crate::layout::normalize_axis;
use crate::cuda;
use crate::ops::{dense, gpu_tensor, new_tensor, on_gpu, with_gpu, wrap};
use crate::storage::{with_float_slice, with_float_slices2};
use crate::Tensor;

/// The permutation swapping `axis` with the last axis (it is its own inverse).
fn swap_with_last(rank: usize, axis: usize) -> Vec<usize> {
    let mut dims: Vec<usize> = (0..rank).collect();
    dims.swap(axis, rank - 1);
    dims
}

/// A row kernel over a contiguous tensor's last axis.
fn rows_forward(x: &Tensor, op: &'static str, log: bool) -> Result<Tensor> {
    let row_len = *x.shape().last().unwrap_or(&1);
    if on_gpu(x) {
        let x = dense(x)?;
        let rows = if row_len == 0 { 0 } else { x.numel() / row_len };
        let buffer = with_gpu(op, &x, |v| cuda::kernels::softmax_rows(v, rows, row_len, log))?;
        return Ok(gpu_tensor(buffer, x.device(), x.shape()));
    }
    let range = x.layout().contiguous_range().expect("contiguous");
    let storage = x.storage();
    let out = with_float_slice!(op, storage.cpu(op)?, v => {
        let v = &v[range];
        wrap(if log { log_softmax_rows(v, row_len) } else { softmax_rows(v, row_len) })
    });
    Ok(new_tensor(out, x.shape()))
}

fn rows_backward(y: &Tensor, dy: &Tensor, op: &'static str, log: bool) -> Result<Tensor> {
    let row_len = *y.shape().last().unwrap_or(&1);
    if on_gpu(y) {
        let (y, dy) = (dense(y)?, dense(dy)?);
        let rows = if row_len == 0 { 0 } else { y.numel() / row_len };
        let buffer = with_gpu(op, &y, |yb| with_gpu(op, &dy, |g| cuda::kernels::softmax_backward_rows(yb, g, rows, row_len, log)))?;
        return Ok(gpu_tensor(buffer, y.device(), y.shape()));
    }
    let (ry, rg) = (y.layout().contiguous_range().expect("contiguous"), dy.layout().contiguous_range().expect("contiguous"));
    let (sy, sg) = (y.storage(), dy.storage());
    let out = with_float_slices2!(op, sy.cpu(op)?, sg.cpu(op)?, (y, g) => {
        let (y, g) = (&y[ry], &g[rg]);
        wrap(if log { log_softmax_backward_rows(y, g, row_len) } else { softmax_backward_rows(y, g, row_len) })
    });
    Ok(new_tensor(out, y.shape()))
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
        let y_rows = rows_forward(&rows, op, log)?;
        let y = y_rows.permute(&dims)?;
        Ok(y.with_backward(op, &[self], move |dy| {
            let dy_rows = dy.permute(&dims)?.contiguous()?;
            Ok(vec![Some(rows_backward(&y_rows, &dy_rows, op, log)?.permute(&dims)?)])
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
