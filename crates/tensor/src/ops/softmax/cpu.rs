//! Row-wise softmax and log-softmax over contiguous rows, forward and backward. Rows are
//! independent, so rayon splits them. The max is subtracted first so `exp` never overflows.

use rayon::prelude::*;

use super::SoftmaxKernels;
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_elements, wrap};
use crate::{FloatElem, Result, Tensor};

impl SoftmaxKernels for Cpu {
    fn softmax_rows(&self, x: &Tensor, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        let row_len = *x.shape().last().unwrap_or(&1);
        let y = with_host_elements!(op, [x => xs], wrap(if log { log_softmax_rows(xs, row_len) } else { softmax_rows(xs, row_len) }));
        Ok(host_tensor(y, x.shape()))
    }

    fn softmax_rows_backward(&self, y: &Tensor, dy: &Tensor, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        let row_len = *y.shape().last().unwrap_or(&1);
        let dx = with_host_elements!(op, [y => ys, dy => gs], {
            wrap(if log { log_softmax_backward_rows(ys, gs, row_len) } else { softmax_backward_rows(ys, gs, row_len) })
        });
        Ok(host_tensor(dx, y.shape()))
    }
}

fn row_max<T: FloatElem>(row: &[T]) -> T {
    row.iter().fold(T::neg_infinity(), |m, &v| m.max(v))
}

/// `y = exp(x − max) / Σ exp(x − max)` per row.
pub fn softmax_rows<T: FloatElem>(x: &[T], row_len: usize) -> Vec<T> {
    let mut y = crate::cpu::pool::for_overwrite::<T>(x.len());
    if x.is_empty() {
        return y;
    }
    y.par_chunks_mut(row_len).zip(x.par_chunks(row_len)).for_each(|(y, x)| {
        let max = row_max(x);
        let mut sum = T::zero();
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x - max).exp();
            sum += *y;
        }
        let inv = sum.recip();
        y.iter_mut().for_each(|v| *v *= inv);
    });
    y
}

/// `y = x − max − ln Σ exp(x − max)` per row.
pub fn log_softmax_rows<T: FloatElem>(x: &[T], row_len: usize) -> Vec<T> {
    let mut y = crate::cpu::pool::for_overwrite::<T>(x.len());
    if x.is_empty() {
        return y;
    }
    y.par_chunks_mut(row_len).zip(x.par_chunks(row_len)).for_each(|(y, x)| {
        let max = row_max(x);
        let log_sum = x.iter().map(|&v| (v - max).exp()).fold(T::zero(), |s, v| s + v).ln();
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x - max - log_sum;
        }
    });
    y
}

/// Softmax backward: `dx = y ⊙ (dy − Σ dy ⊙ y)` per row.
pub fn softmax_backward_rows<T: FloatElem>(y: &[T], dy: &[T], row_len: usize) -> Vec<T> {
    let mut dx = crate::cpu::pool::for_overwrite::<T>(y.len());
    if y.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(row_len).zip(y.par_chunks(row_len).zip(dy.par_chunks(row_len))).for_each(|(dx, (y, dy))| {
        let dot = y.iter().zip(dy).fold(T::zero(), |s, (&a, &b)| s + a * b);
        for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
            *dx = y * (dy - dot);
        }
    });
    dx
}

/// Log-softmax backward: `dx = dy − exp(y) Σ dy` per row.
pub fn log_softmax_backward_rows<T: FloatElem>(y: &[T], dy: &[T], row_len: usize) -> Vec<T> {
    let mut dx = crate::cpu::pool::for_overwrite::<T>(y.len());
    if y.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(row_len).zip(y.par_chunks(row_len).zip(dy.par_chunks(row_len))).for_each(|(dx, (y, dy))| {
        let sum = dy.iter().fold(T::zero(), |s, &v| s + v);
        for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
            *dx = dy - y.exp() * sum;
        }
    });
    dx
}
