//! Batched matrix multiply with broadcast batch axes.

use rayon::prelude::*;

use crate::cpu::gemm::{MatRef, gemm};
use crate::error::{Result, TensorError, invalid};
use crate::layout::{Layout, broadcast_shapes};
use crate::ops::{check_same, gpu_tensor, new_tensor, on_gpu, with_gpu, wrap};
use crate::storage::with_float_slices2;
use crate::{FloatElem, Tensor};

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

/// The CUDA path of [`batched_matmul`]: one batched GEMM launch when the batch offsets of
/// both operands are evenly spaced (contiguous or broadcast batches), else one per matrix.
fn gpu_batched_matmul(a: &Tensor, la: &Layout, b: &Tensor, lb: &Layout, m: usize, n: usize, k: usize, out_shape: &[usize]) -> Result<Tensor> {
    use crate::cuda::kernels::{GpuMatrix, gemm as gpu_gemm};
    let rank = la.rank();
    let batch_layout = |l: &Layout| Layout::new(l.shape()[..rank - 2].to_vec(), l.strides()[..rank - 2].to_vec(), l.offset());
    let (a_offsets, b_offsets) = (batch_layout(la).offsets(), batch_layout(lb).offsets());
    let batch = a_offsets.len();
    // The common step between consecutive offsets, if there is one.
    let step = |offsets: &[usize]| -> Option<usize> {
        let first = offsets.windows(2).next().map_or(0, |w| w[1].wrapping_sub(w[0]));
        offsets.windows(2).all(|w| w[1].wrapping_sub(w[0]) == first && w[1] >= w[0]).then_some(first)
    };
    let (sa, sb) = (la.strides(), lb.strides());
    let out = with_gpu("matmul", a, |a_buffer| {
        with_gpu("matmul", b, |b_buffer| {
            let out = crate::cuda::DeviceBuffer::new(a_buffer.backend(), batch * m * n * std::mem::size_of::<f32>())?;
            let matrix = |buffer, offset, rows: usize, cols: usize, batch_stride| GpuMatrix { buffer, offset, row_stride: rows, col_stride: cols, batch_stride };
            match (step(&a_offsets), step(&b_offsets)) {
                (Some(a_step), Some(b_step)) => gpu_gemm(
                    batch,
                    m,
                    n,
                    k,
                    matrix(a_buffer, a_offsets[0], sa[rank - 2], sa[rank - 1], a_step),
                    matrix(b_buffer, b_offsets[0], sb[rank - 2], sb[rank - 1], b_step),
                    matrix(&out, 0, n, 1, m * n),
                    false,
                )?,
                _ => {
                    for i in 0..batch {
                        gpu_gemm(
                            1,
                            m,
                            n,
                            k,
                            matrix(a_buffer, a_offsets[i], sa[rank - 2], sa[rank - 1], 0),
                            matrix(b_buffer, b_offsets[i], sb[rank - 2], sb[rank - 1], 0),
                            matrix(&out, i * m * n, n, 1, 0),
                            false,
                        )?;
                    }
                }
            }
            Ok(out)
        })
    })?;
    Ok(gpu_tensor(out, a.device(), out_shape))
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
        let out = if on_gpu(self) {
            gpu_batched_matmul(self, &la, rhs, &lb, m, n, k, &out_shape)?
        } else {
            let (sa, sb) = (self.storage(), rhs.storage());
            new_tensor(with_float_slices2!("matmul", sa.cpu("matmul")?, sb.cpu("matmul")?, (a, b) => wrap(batched_matmul(a, &la, b, &lb, m, n, k))), &out_shape)
        };
        let (a, b) = (self.detach(), rhs.detach());
        let (a_needs, b_needs) = (self.requires_grad(), rhs.requires_grad());
        Ok(out.with_backward("matmul", &[self, rhs], move |g| {
            let grad_a = if a_needs { Some(g.matmul(&b.transpose(-1, -2)?)?.sum_to_shape(a.shape())?) } else { None };
            let grad_b = if b_needs { Some(a.transpose(-1, -2)?.matmul(g)?.sum_to_shape(b.shape())?) } else { None };
            Ok(vec![grad_a, grad_b])
        }))
    }
}
