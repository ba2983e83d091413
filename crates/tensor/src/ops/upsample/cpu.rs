//! Nearest upsampling's CPU kernels: block fills, and block sums for the adjoint.

use rayon::prelude::*;

use super::UpsampleKernels;
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_elements, wrap};
use crate::ops::dense;
use crate::{FloatElem, Result, Tensor};

impl UpsampleKernels for Cpu {
    fn upsample_nearest2d(&self, x: &Tensor, [n, c, h, w]: [usize; 4], scale: usize, adjoint: bool) -> Result<Tensor> {
        let x = dense(x)?;
        let out = with_host_elements!("upsample_nearest2d", [&x => xs], {
            wrap(if adjoint { upsample_nearest_backward(xs, h, w, scale) } else { upsample_nearest(xs, h, w, scale) })
        });
        let out_shape = if adjoint { [n, c, h, w] } else { [n, c, h * scale, w * scale] };
        Ok(host_tensor(out, &out_shape))
    }
}

/// Nearest upsampling of `h × w` planes by `scale`: `y[i, j] = x[i / scale, j / scale]`.
fn upsample_nearest<T: FloatElem>(x: &[T], h: usize, w: usize, scale: usize) -> Vec<T> {
    let (ws, plane_out) = (w * scale, h * scale * w * scale);
    let mut y = crate::cpu::pool::for_overwrite::<T>(x.len() * scale * scale);
    y.par_chunks_mut(plane_out).zip(x.par_chunks(h * w)).for_each(|(y, x)| {
        for (rows, x_row) in y.chunks_exact_mut(scale * ws).zip(x.chunks_exact(w)) {
            let (first, copies) = rows.split_at_mut(ws);
            for (out, &v) in first.chunks_exact_mut(scale).zip(x_row) {
                out.fill(v);
            }
            for copy in copies.chunks_exact_mut(ws) {
                copy.copy_from_slice(first);
            }
        }
    });
    y
}

/// The adjoint of [`upsample_nearest`]: `dx[i, j] = Σ` of `g` over the `scale × scale` block of
/// output positions that copied `x[i, j]`.
fn upsample_nearest_backward<T: FloatElem>(g: &[T], h: usize, w: usize, scale: usize) -> Vec<T> {
    let (ws, plane_out) = (w * scale, h * scale * w * scale);
    let mut dx = crate::cpu::pool::for_overwrite::<T>(g.len() / (scale * scale));
    dx.par_chunks_mut(h * w).zip(g.par_chunks(plane_out)).for_each(|(dx, g)| {
        for (dx_row, rows) in dx.chunks_exact_mut(w).zip(g.chunks_exact(scale * ws)) {
            dx_row.fill(T::zero());
            for row in rows.chunks_exact(ws) {
                for (d, block) in dx_row.iter_mut().zip(row.chunks_exact(scale)) {
                    *d += block.iter().fold(T::zero(), |s, &v| s + v);
                }
            }
        }
    });
    dx
}
