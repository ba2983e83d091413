//! index_select's CPU kernels: row copies, and their adjoint adding rows back.

use super::IndexSelectKernels;
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_elements, wrap};
use crate::{FloatElem, Result, Tensor};

impl IndexSelectKernels for Cpu {
    fn index_rows(&self, x: &Tensor, indices: &[usize], [outer, axis_len, inner]: [usize; 3], adjoint: bool, out_shape: &[usize]) -> Result<Tensor> {
        let x = x.contiguous()?;
        let out = with_host_elements!("index_select", [&x => xs], {
            wrap(if adjoint { scatter_add_rows(xs, outer, axis_len, inner, indices) } else { gather_rows(xs, outer, axis_len, inner, indices) })
        });
        Ok(host_tensor(out, out_shape))
    }
}

/// `out[o, i, r] = x[o, indices[i], r]` for `x` viewed as `[outer, axis_len, inner]`.
fn gather_rows<T: FloatElem>(x: &[T], outer: usize, axis_len: usize, inner: usize, indices: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            out.extend_from_slice(&x[(o * axis_len + i) * inner..][..inner]);
        }
    }
    out
}

/// The adjoint of [`gather_rows`]: `dx[o, indices[i], r] += g[o, i, r]`.
fn scatter_add_rows<T: FloatElem>(g: &[T], outer: usize, axis_len: usize, inner: usize, indices: &[usize]) -> Vec<T> {
    let mut dx = crate::cpu::pool::zeroed::<T>(outer * axis_len * inner);
    for o in 0..outer {
        for (k, &i) in indices.iter().enumerate() {
            let src = &g[(o * indices.len() + k) * inner..][..inner];
            for (d, &s) in dx[(o * axis_len + i) * inner..][..inner].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    dx
}
