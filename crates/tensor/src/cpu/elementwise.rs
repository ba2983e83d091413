//! Shared primitive (the unary and binary ops): elementwise loops over strided, broadcast
//! views. The output is always contiguous.
//!
//! The loops walk the output row by row (a row is the last axis); each row's first input
//! offsets come from unravelling the row index, the inner loop is a strided walk. When the
//! inputs are contiguous the inner loop is a plain slice loop that LLVM vectorizes.

use rayon::prelude::*;

use crate::FloatElem;
use crate::cpu::ELEMENTWISE_CHUNK;
use crate::layout::Layout;

/// Storage offset of the first element of row `row` (rows = all axes but the last).
#[inline]
fn row_start(layout: &Layout, mut row: usize) -> usize {
    let rank = layout.rank();
    let mut offset = layout.offset();
    for axis in (0..rank.saturating_sub(1)).rev() {
        let n = layout.shape()[axis];
        offset += (row % n) * layout.strides()[axis];
        row /= n;
    }
    offset
}

/// Rows per rayon task for a row length.
fn rows_per_task(row_len: usize) -> usize {
    (ELEMENTWISE_CHUNK / row_len.max(1)).max(1)
}

/// `out[i] = f(x[i])` for every element of the view `layout` over `x`.
pub fn map<T: Copy + Send + Sync, U: FloatElem>(x: &[T], layout: &Layout, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let numel = layout.numel();
    let mut out = crate::cpu::pool::for_overwrite::<U>(numel);
    if numel == 0 {
        return out;
    }
    if let Some(range) = layout.contiguous_range() {
        out.par_chunks_mut(ELEMENTWISE_CHUNK).zip(x[range].par_chunks(ELEMENTWISE_CHUNK)).for_each(|(o, i)| {
            for (o, &i) in o.iter_mut().zip(i) {
                *o = f(i);
            }
        });
        return out;
    }
    let row_len = layout.shape().last().copied().unwrap_or(1);
    let stride = layout.strides().last().copied().unwrap_or(0);
    let chunk = rows_per_task(row_len) * row_len;
    out.par_chunks_mut(chunk).enumerate().for_each(|(c, out_rows)| {
        let first_row = c * chunk / row_len;
        for (r, out_row) in out_rows.chunks_mut(row_len).enumerate() {
            let start = row_start(layout, first_row + r);
            for (j, o) in out_row.iter_mut().enumerate() {
                *o = f(x[start + j * stride]);
            }
        }
    });
    out
}

/// `out[i] = f(a[i], b[i])` where `la` and `lb` are views of the same shape (broadcast
/// views included: a repeated axis has stride 0).
pub fn zip_map<T: Copy + Send + Sync, U: FloatElem>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: impl Fn(T, T) -> U + Sync) -> Vec<U> {
    debug_assert_eq!(la.shape(), lb.shape());
    let numel = la.numel();
    let mut out = crate::cpu::pool::for_overwrite::<U>(numel);
    if numel == 0 {
        return out;
    }
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        out.par_chunks_mut(ELEMENTWISE_CHUNK).enumerate().for_each(|(c, o)| {
            let start = c * ELEMENTWISE_CHUNK;
            for ((o, &x), &y) in o.iter_mut().zip(&a[start..]).zip(&b[start..]) {
                *o = f(x, y);
            }
        });
        return out;
    }
    let row_len = la.shape().last().copied().unwrap_or(1);
    let sa = la.strides().last().copied().unwrap_or(0);
    let sb = lb.strides().last().copied().unwrap_or(0);
    let chunk = rows_per_task(row_len) * row_len;
    out.par_chunks_mut(chunk).enumerate().for_each(|(c, out_rows)| {
        let first_row = c * chunk / row_len;
        for (r, out_row) in out_rows.chunks_mut(row_len).enumerate() {
            let (start_a, start_b) = (row_start(la, first_row + r), row_start(lb, first_row + r));
            match (sa, sb) {
                (1, 1) => {
                    for ((o, &x), &y) in out_row.iter_mut().zip(&a[start_a..]).zip(&b[start_b..]) {
                        *o = f(x, y);
                    }
                }
                (1, 0) => {
                    let y = b[start_b];
                    for (o, &x) in out_row.iter_mut().zip(&a[start_a..]) {
                        *o = f(x, y);
                    }
                }
                _ => {
                    for (j, o) in out_row.iter_mut().enumerate() {
                        *o = f(a[start_a + j * sa], b[start_b + j * sb]);
                    }
                }
            }
        }
    });
    out
}
