//! Scaled dot-product attention as one fused op (kernels in `cpu.rs`, kernels/attention.cu).

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, TensorError, invalid};
use crate::ops::check_same;

/// Sizes of a batched attention: `q [bh, sq, d]`, `k [bh, sk, d]`, `v [bh, sk, dv]`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub bh: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
}

/// The attention kernels, one implementation per device (`cpu.rs`, `cuda.rs`). Inputs are
/// contiguous `q [bh, sq, d]`, `k [bh, sk, d]`, `v [bh, sk, dv]`.
pub(crate) trait AttentionKernels {
    /// `[out, lse]`: `out = softmax(scale·q·kᵀ)·v` as a tensor of `out_shape`, and the row
    /// log-sum-exp of the scores `[bh, sq]`.
    fn attention_forward(&self, q: &Tensor, k: &Tensor, v: &Tensor, shape: &AttentionShape, scale: f64, out_shape: &[usize]) -> Result<[Tensor; 2]>;
    /// `[dq, dk, dv]` (in the shapes of q, k, v) from `saved = [q, k, v, out, lse]` and `d_out`.
    fn attention_backward(&self, saved: [&Tensor; 5], d_out: &Tensor, shape: &AttentionShape, scale: f64) -> Result<[Tensor; 3]>;
}

impl Tensor {
    /// `softmax(scale · Q·Kᵀ) · V` over the last two axes, with `scale` defaulting to `1/√d`.
    ///
    /// Shapes: `q [..., Sq, D]`, `k [..., Sk, D]`, `v [..., Sk, Dv]` with equal leading (batch,
    /// head) axes → `[..., Sq, Dv]`. Backward (with `P` recomputed from the saved row
    /// log-sum-exp): `dV = Pᵀ·dO`, `dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O))`, `dQ = scale·dS·K`,
    /// `dK = scale·dSᵀ·Q`.
    pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f64>) -> Result<Tensor> {
        let op = "scaled_dot_product_attention";
        check_same(op, &[q, k, v])?;
        let rank = q.rank();
        if rank < 2 || k.rank() != rank || v.rank() != rank {
            return invalid(op, format!("q, k, v need one rank ≥ 2, got {:?} {:?} {:?}", q.shape(), k.shape(), v.shape()));
        }
        let (lead, d) = (&q.shape()[..rank - 2], q.shape()[rank - 1]);
        let mismatch = |other: &Tensor| TensorError::ShapeMismatch { op, lhs: q.shape().to_vec(), rhs: other.shape().to_vec() };
        if &k.shape()[..rank - 2] != lead || k.shape()[rank - 1] != d {
            return Err(mismatch(k));
        }
        if &v.shape()[..rank - 2] != lead || v.shape()[rank - 2] != k.shape()[rank - 2] {
            return Err(mismatch(v));
        }
        let shape = AttentionShape { bh: lead.iter().product(), sq: q.shape()[rank - 2], sk: k.shape()[rank - 2], d, dv: v.shape()[rank - 1] };
        if shape.sk == 0 {
            return invalid(op, "no keys to attend to (Sk = 0)");
        }
        if shape.bh * shape.sq * shape.dv == 0 || d == 0 {
            return invalid(op, format!("empty attention: q {:?}, v {:?}", q.shape(), v.shape()));
        }
        let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
        let (qc, kc, vc) = (q.detach().contiguous()?, k.detach().contiguous()?, v.detach().contiguous()?);
        let out_shape: Vec<usize> = lead.iter().copied().chain([shape.sq, shape.dv]).collect();
        let [out, lse] = kernels(q).attention_forward(&qc, &kc, &vc, &shape, scale, &out_shape)?;
        let saved_out = out.detach();
        Ok(out.with_backward(op, &[q, k, v], move |d_out| {
            let [dq, dk, dv] = kernels(&qc).attention_backward([&qc, &kc, &vc, &saved_out, &lse], d_out, &shape, scale)?;
            // the kernels' gradients have q, k, v's shapes (as contiguous copies)
            Ok(vec![Some(dq), Some(dk), Some(dv)])
        }))
    }
}
