//! The normalizations' CPU kernels, each fused: a block's statistics first (mean `μ` and
//! `rstd = 1/√(σ² + eps)`, from two passes over the block in the element type: the mean, then
//! `Σ(x − μ)²`, not `E[x²] − μ²`), then one pass to normalize; and a fused backward. With
//! `x̂ = (x − μ)·rstd`:
//!
//! - group norm: `x` is viewed as `[N, C, S]` (S = the spatial positions) with the channels in
//!   `G` groups; a (sample, group) block is `C/G · S` contiguous elements.
//!   - forward: `h = x̂·w[c] + b[c]`, and `y = h`, or with SiLU fused (the UNet's pair)
//!     `y = silu(h)`
//!   - backward: `dh = dy`, or through the SiLU `dh = dy·silu'(h)` with `h` recomputed from x
//!     (so the pair saves no activation of its own); `db[c] = Σ dh`, `dw[c] = Σ dh·x̂` (over
//!     samples and positions), and with `g = dh·w[c]`, `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))`
//!     (means over the block).
//! - layer norm: `x` is `[rows, cols]`, a block is a row; threads take whole rows.
//!   - forward: `y = x̂·w[j] + b[j]`
//!   - backward: with `g = dy·w[j]`, `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))` (means over the
//!     row); `dw[j] = Σ dy·x̂` and `db[j] = Σ dy` over the rows, as sums per chunk of rows (the
//!     chunks set by the sizes alone) added in chunk order, so that they do not depend on the
//!     thread count.

use rayon::prelude::*;

use super::{GroupNormShape, NormKernels};
use crate::cpu::pool::{for_overwrite, zeroed};
use crate::cpu::reduce::{sum_and_dot, sum_slice, sum_squared_deviations};
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_elements, wrap};
use crate::ops::unary::UnaryOp;
use crate::{FloatElem, Result, Tensor};

impl NormKernels for Cpu {
    fn group_norm_forward(&self, x: &Tensor, w: &Tensor, b: &Tensor, shape: &GroupNormShape, eps: f64, silu: bool) -> Result<[Tensor; 3]> {
        let op = if silu { "group_norm_silu" } else { "group_norm" };
        let (y, mean, rstd) = with_host_elements!(op, [x => xs, w => ws, b => bs], {
            let (y, mean, rstd) = group_norm_forward(xs, ws, bs, shape, eps, silu);
            (wrap(y), wrap(mean), wrap(rstd))
        });
        let stats = [shape.n * shape.groups];
        Ok([host_tensor(y, x.shape()), host_tensor(mean, &stats), host_tensor(rstd, &stats)])
    }

    fn group_norm_backward(&self, saved: [&Tensor; 5], dy: &Tensor, shape: &GroupNormShape, silu: bool) -> Result<[Tensor; 3]> {
        let op = if silu { "group_norm_silu" } else { "group_norm" };
        let [x, w, b, mean, rstd] = saved;
        let dy = dy.contiguous()?;
        let (dx, dw, db) = with_host_elements!(op, [x => xs, &dy => dys, w => ws, b => bs, mean => ms, rstd => rs], {
            let (dx, dw, db) = group_norm_backward(xs, dys, ws, bs, ms, rs, shape, silu);
            (wrap(dx), wrap(dw), wrap(db))
        });
        Ok([host_tensor(dx, x.shape()), host_tensor(dw, &[shape.channels]), host_tensor(db, &[shape.channels])])
    }

    fn layer_norm_forward(&self, x: &Tensor, w: &Tensor, b: &Tensor, cols: usize, eps: f64) -> Result<[Tensor; 3]> {
        let rows = x.numel() / cols;
        let (y, mean, rstd) = with_host_elements!("layer_norm", [x => xs, w => ws, b => bs], {
            let (y, mean, rstd) = layer_norm_forward(xs, ws, bs, rows, cols, eps);
            (wrap(y), wrap(mean), wrap(rstd))
        });
        Ok([host_tensor(y, x.shape()), host_tensor(mean, &[rows]), host_tensor(rstd, &[rows])])
    }

    fn layer_norm_backward(&self, saved: [&Tensor; 4], dy: &Tensor, cols: usize) -> Result<[Tensor; 3]> {
        let [x, w, mean, rstd] = saved;
        let (dy, rows) = (dy.contiguous()?, x.numel() / cols);
        let (dx, dw, db) = with_host_elements!("layer_norm", [x => xs, &dy => dys, w => ws, mean => ms, rstd => rs], {
            let (dx, dw, db) = layer_norm_backward(xs, dys, ws, ms, rs, rows, cols);
            (wrap(dx), wrap(dw), wrap(db))
        });
        Ok([host_tensor(dx, x.shape()), host_tensor(dw, w.shape()), host_tensor(db, w.shape())])
    }
}

/// `(μ, rstd)` of a block: two passes, the mean, then `Σ(x − μ)²` (no cancellation when the
/// block varies little around a large mean, as `E[x²] − μ²` has).
fn mean_and_rstd<T: FloatElem>(x: &[T], eps: f64) -> (T, T) {
    let count = T::from_f64(x.len() as f64);
    let mu = sum_slice(x) / count;
    let var = sum_squared_deviations(x, mu) / count;
    (mu, (var + T::from_f64(eps)).sqrt().recip())
}

/// Returns `(y, mean, rstd)`, the statistics one per (sample, group); `y = silu(h)` when `silu`.
pub fn group_norm_forward<T: FloatElem>(x: &[T], weight: &[T], bias: &[T], s: &GroupNormShape, eps: f64, silu: bool) -> (Vec<T>, Vec<T>, Vec<T>) {
    let blocks = s.n * s.groups;
    let (mut y, mut mean, mut rstd) = (for_overwrite::<T>(x.len()), for_overwrite::<T>(blocks), for_overwrite::<T>(blocks));
    let len = s.block_len();
    y.par_chunks_mut(len).zip(x.par_chunks(len)).zip(mean.par_iter_mut().zip(rstd.par_iter_mut())).enumerate().for_each(|(block, ((y, x), (mean, rstd)))| {
        let (mu, r) = mean_and_rstd(x, eps);
        *mean = mu;
        *rstd = r;
        let first_channel = (block % s.groups) * s.channels_per_group();
        for (c, (y, x)) in y.chunks_exact_mut(s.positions).zip(x.chunks_exact(s.positions)).enumerate() {
            // y = (x − μ)·(r·w) + b, not x·(r·w) + (b − μ·r·w): when a group varies little
            // around a large mean, x·(r·w) is large and cancels, leaving its rounding
            let (scale, shift) = (r * weight[first_channel + c], bias[first_channel + c]);
            if silu {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = UnaryOp::Silu.forward((x - mu) * scale + shift);
                }
            } else {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = (x - mu) * scale + shift;
                }
            }
        }
    });
    (y, mean, rstd)
}

/// Returns `(dx, dweight, dbias)`; through the SiLU when `silu` (then `bias` is read).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward<T: FloatElem>(
    x: &[T],
    dy: &[T],
    weight: &[T],
    bias: &[T],
    mean: &[T],
    rstd: &[T],
    s: &GroupNormShape,
    silu: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let len = s.block_len();
    let cpg = s.channels_per_group();
    let count = T::from_f64(len as f64);
    let mut dx = for_overwrite::<T>(x.len());
    // per (sample, channel): Σ dy·x̂ and Σ dy, summed over samples afterwards
    let mut per_sample = for_overwrite::<T>(2 * s.n * s.channels);
    dx.par_chunks_mut(len).zip(x.par_chunks(len).zip(dy.par_chunks(len))).zip(per_sample.par_chunks_mut(2 * cpg)).enumerate().for_each(
        |(block, ((dx, (x, dy)), sums))| {
            let (mu, r) = (mean[block], rstd[block]);
            let first_channel = (block % s.groups) * cpg;
            let (mut sum_g, mut sum_g_xhat) = (T::zero(), T::zero());
            // dh into dx first (a vectorized pass), then its sums, then dx in place
            for (c, ((dh, x), dy)) in dx.chunks_exact_mut(s.positions).zip(x.chunks_exact(s.positions)).zip(dy.chunks_exact(s.positions)).enumerate() {
                let (w, b) = (weight[first_channel + c], bias[first_channel + c]);
                if silu {
                    // h = x̂·w + b, from x̂ = (x − μ)·r (not x·(r·w) + (b − μ·r·w), which
                    // cancels badly when x ≈ μ and r is large)
                    for ((dh, &x), &dy) in dh.iter_mut().zip(x).zip(dy) {
                        let h = (x - mu) * r * w + b;
                        *dh = dy * UnaryOp::Silu.derivative(h, h);
                    }
                } else {
                    dh.copy_from_slice(dy);
                }
                // Σ dh·x̂ = r·(Σ dh·x − μ·Σ dh)
                let (dh_sum, dh_x_sum) = sum_and_dot(dh, x);
                let dh_xhat_sum = r * (dh_x_sum - mu * dh_sum);
                sums[2 * c] = dh_xhat_sum;
                sums[2 * c + 1] = dh_sum;
                sum_g += dh_sum * w;
                sum_g_xhat += dh_xhat_sum * w;
            }
            let (mean_g, mean_g_xhat) = (sum_g / count, sum_g_xhat / count);
            for (c, (dx, x)) in dx.chunks_exact_mut(s.positions).zip(x.chunks_exact(s.positions)).enumerate() {
                // dx = r·(dh·w − mean_g − x̂·mean_g_xhat), x̂ = (x − μ)·r
                // (in this order: the difference before the scaling by r, which may be large)
                let w = weight[first_channel + c];
                for (dx, &x) in dx.iter_mut().zip(x) {
                    *dx = r * (*dx * w - mean_g - (x - mu) * r * mean_g_xhat);
                }
            }
        },
    );
    let (mut dweight, mut dbias) = (zeroed::<T>(s.channels), zeroed::<T>(s.channels));
    for sample in per_sample.chunks_exact(2 * s.channels) {
        for c in 0..s.channels {
            dweight[c] += sample[2 * c];
            dbias[c] += sample[2 * c + 1];
        }
    }
    (dx, dweight, dbias)
}

/// Rows a thread takes at a time: some 16K elements, so that short rows are not a task each.
fn rows_per_task(cols: usize) -> usize {
    (16 * 1024 / cols).max(1)
}

/// Layer norm of the row-major `rows × cols` matrix `x` (`cols > 0`), `weight` and `bias` of
/// `cols` elements: returns `(y, mean, rstd)`, the statistics one per row.
pub fn layer_norm_forward<T: FloatElem>(x: &[T], weight: &[T], bias: &[T], rows: usize, cols: usize, eps: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    assert!(cols > 0 && x.len() == rows * cols && weight.len() == cols && bias.len() == cols, "layer_norm: {rows} rows of {cols}");
    let (mut y, mut mean, mut rstd) = (for_overwrite::<T>(x.len()), for_overwrite::<T>(rows), for_overwrite::<T>(rows));
    y.par_chunks_mut(cols).zip(x.par_chunks(cols)).zip(mean.par_iter_mut().zip(rstd.par_iter_mut())).with_min_len(rows_per_task(cols)).for_each(
        |((y, x), (mean, rstd))| {
            let (mu, r) = mean_and_rstd(x, eps);
            *mean = mu;
            *rstd = r;
            // (x − μ)·r·w + b: with one element per row x̂ = 0 and y = b exactly
            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
                *y = (x - mu) * r * w + b;
            }
        },
    );
    (y, mean, rstd)
}

/// The rows of a chunk of the layer norm's dweight and dbias sums: at most 64 chunks, of some
/// 16K elements at least. Set by the sizes alone, so the sums do not depend on the threads.
fn rows_per_parameter_chunk(rows: usize, cols: usize) -> usize {
    rows.div_ceil(64).max(rows_per_task(cols))
}

/// The layer norm's backward from `x`, `dy` (`rows × cols`), `weight` and the forward's `mean`
/// and `rstd`: returns `(dx, dweight, dbias)`.
pub fn layer_norm_backward<T: FloatElem>(x: &[T], dy: &[T], weight: &[T], mean: &[T], rstd: &[T], rows: usize, cols: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    assert!(cols > 0 && x.len() == rows * cols && dy.len() == x.len() && weight.len() == cols, "layer_norm: {rows} rows of {cols}");
    assert!(mean.len() == rows && rstd.len() == rows, "layer_norm: {rows} rows, {} means and {} rstd", mean.len(), rstd.len());
    let count = T::from_f64(cols as f64);
    let chunk_rows = rows_per_parameter_chunk(rows, cols);
    let chunk_len = chunk_rows * cols;
    let mut dx = for_overwrite::<T>(x.len());
    // per chunk of rows: its Σ dy·x̂ (cols), then its Σ dy (cols)
    let mut partials = zeroed::<T>(rows.div_ceil(chunk_rows) * 2 * cols);
    dx.par_chunks_mut(chunk_len).zip(x.par_chunks(chunk_len).zip(dy.par_chunks(chunk_len))).zip(partials.par_chunks_mut(2 * cols)).enumerate().for_each(
        |(chunk, ((dx, (x, dy)), partial))| {
            let (dw, db) = partial.split_at_mut(cols);
            for (row, ((dx, x), dy)) in dx.chunks_exact_mut(cols).zip(x.chunks_exact(cols)).zip(dy.chunks_exact(cols)).enumerate() {
                let (mu, r) = (mean[chunk * chunk_rows + row], rstd[chunk * chunk_rows + row]);
                let (mut sum_g, mut sum_g_xhat) = (T::zero(), T::zero());
                for ((((&x, &dy), &w), dw), db) in x.iter().zip(dy).zip(weight).zip(dw.iter_mut()).zip(db.iter_mut()) {
                    let (xhat, g) = ((x - mu) * r, dy * w);
                    sum_g += g;
                    sum_g_xhat += g * xhat;
                    *dw += dy * xhat;
                    *db += dy;
                }
                let (mean_g, mean_g_xhat) = (sum_g / count, sum_g_xhat / count);
                // the difference before the scaling by r, which may be large; with one
                // element per row g − mean(g) is exactly 0
                for (((dx, &x), &dy), &w) in dx.iter_mut().zip(x).zip(dy).zip(weight) {
                    *dx = r * (dy * w - mean_g - (x - mu) * r * mean_g_xhat);
                }
            }
        },
    );
    let (mut dweight, mut dbias) = (zeroed::<T>(cols), zeroed::<T>(cols));
    for partial in partials.chunks_exact(2 * cols) {
        let (dw, db) = partial.split_at(cols);
        for ((total_w, total_b), (&w, &b)) in dweight.iter_mut().zip(dbias.iter_mut()).zip(dw.iter().zip(db)) {
            *total_w += w;
            *total_b += b;
        }
    }
    (dx, dweight, dbias)
}
