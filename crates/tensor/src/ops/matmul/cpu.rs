//! matmul's CPU kernel: one call of the shared GEMM ([`crate::cpu::gemm`]) per batch
//! index, the batch split across threads.

use rayon::prelude::*;

use super::{MatmulKernels, MatmulShape};
use crate::cpu::gemm::{MatRef, gemm};
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_slices, wrap};
use crate::layout::Layout;
use crate::{FloatElem, Result, Tensor};

impl MatmulKernels for Cpu {
    fn batched_matmul(&self, a: &Tensor, la: &Layout, b: &Tensor, lb: &Layout, MatmulShape { m, n, k }: MatmulShape, out_shape: &[usize]) -> Result<Tensor> {
        let out = with_host_slices!("matmul", [a => av, b => bv], wrap(batched_matmul(av, la, bv, lb, m, n, k)));
        Ok(host_tensor(out, out_shape))
    }
}

/// `out[b] = a[b] · b[b]` for every batch index `b` of the broadcast views.
fn batched_matmul<T: FloatElem>(a: &[T], la: &Layout, b: &[T], lb: &Layout, m: usize, n: usize, k: usize) -> Vec<T> {
    let rank = la.rank();
    let batch = Layout::new(la.shape()[..rank - 2].to_vec(), la.strides()[..rank - 2].to_vec(), la.offset());
    let batch_b = Layout::new(lb.shape()[..rank - 2].to_vec(), lb.strides()[..rank - 2].to_vec(), lb.offset());
    let (a_offsets, b_offsets) = (batch.offsets(), batch_b.offsets());
    let (sa, sb) = (la.strides(), lb.strides());
    let mut out = crate::cpu::pool::for_overwrite::<T>(a_offsets.len() * m * n);
    out.par_chunks_mut((m * n).max(1)).enumerate().for_each(|(i, c)| {
        let a_view = MatRef { data: &a[a_offsets[i]..], row_stride: sa[rank - 2], col_stride: sa[rank - 1] };
        let b_view = MatRef { data: &b[b_offsets[i]..], row_stride: sb[rank - 2], col_stride: sb[rank - 1] };
        gemm(m, n, k, a_view, b_view, c, n, false);
    });
    out
}
