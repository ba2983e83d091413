//! Scaled dot-product attention as one fused op (kernels in `cpu.rs`, kernels/attention.cu).

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, TensorError, invalid};
use crate::ops::check_same;

/// Sizes of a batched attention, `q [bh, sq, d]`, `k [bh, sk, d]`, `v [bh, sk, dv]`, and
/// whether it is causal (query i sees only keys j ≤ i).
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub bh: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
    pub causal: bool,
}

/// Which keys each query may attend to (see [`Tensor::scaled_dot_product_attention_masked`]):
/// a key is attended iff both masks allow it. The default masks nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionMask<'a> {
    /// `[B, Sk]`: nonzero = attend (see the op's doc).
    pub key_padding: Option<&'a Tensor>,
    /// Query i attends only to keys j ≤ i (PyTorch's `is_causal`, top-left aligned: with
    /// Sq ≠ Sk, still j ≤ i).
    pub causal: bool,
}

/// A key-padding mask as the kernels take it: `values` holds `[bh / heads, sk]` numbers (a
/// `&[T]` on the CPU, a device buffer on CUDA), nonzero where the key is attended to, and slice
/// `i` of the `bh` (batch, head) slices reads row `i / heads`.
#[derive(Clone, Copy, Debug)]
pub struct KeyMask<M> {
    pub values: M,
    pub heads: usize,
}

impl<M> KeyMask<M> {
    /// The same mask over other values (the tensor's host slice or device buffer).
    pub fn with_values<N>(&self, values: N) -> KeyMask<N> {
        KeyMask { values, heads: self.heads }
    }
}

impl KeyMask<Tensor> {
    fn by_ref(&self) -> KeyMask<&Tensor> {
        self.with_values(&self.values)
    }
}

/// The attention kernels, one implementation per device (`cpu.rs`, `cuda.rs`). Inputs are
/// contiguous `q [bh, sq, d]`, `k [bh, sk, d]`, `v [bh, sk, dv]`, and the mask's values a
/// contiguous `[bh / heads, sk]` tensor of q's dtype.
pub(crate) trait AttentionKernels {
    /// `[out, lse]` from `inputs = [q, k, v]`: `out = softmax(scale·q·kᵀ + mask)·v` as a tensor
    /// of `out_shape` (the mask: `key_mask`, and `shape.causal`), and the row log-sum-exp of the
    /// scores `[bh, sq]` (+∞ for a row whose keys are all masked).
    fn attention_forward(
        &self,
        inputs: [&Tensor; 3],
        key_mask: Option<KeyMask<&Tensor>>,
        shape: &AttentionShape,
        scale: f64,
        out_shape: &[usize],
    ) -> Result<[Tensor; 2]>;
    /// `[dq, dk, dv]` (in the shapes of q, k, v) from `saved = [q, k, v, out, lse]` and `d_out`.
    fn attention_backward(
        &self,
        saved: [&Tensor; 5],
        key_mask: Option<KeyMask<&Tensor>>,
        d_out: &Tensor,
        shape: &AttentionShape,
        scale: f64,
    ) -> Result<[Tensor; 3]>;
}

impl Tensor {
    /// `softmax(scale · Q·Kᵀ) · V` over the last two axes, with `scale` defaulting to `1/√d`:
    /// [`Tensor::scaled_dot_product_attention_masked`] with no mask.
    pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f64>) -> Result<Tensor> {
        Tensor::scaled_dot_product_attention_masked(q, k, v, AttentionMask::default(), scale)
    }

    /// `O = softmax(S) · V` with `S = scale · Q·Kᵀ + M` over the last two axes, `scale`
    /// defaulting to `1/√d`, and `M` the mask: `Mᵢⱼ = 0` where query i attends to key j, `−∞`
    /// where `mask` rules the pair out, that is where the key-padding mask holds 0 for key j, or,
    /// with `mask.causal`, where `j > i` (top-left aligned, as PyTorch's `is_causal`: with
    /// `Sq > Sk` the last queries see every key, with `Sq < Sk` the last keys are seen by none).
    /// No mask (`AttentionMask::default()`): `M = 0`.
    ///
    /// Shapes: `q [..., Sq, D]`, `k [..., Sk, D]`, `v [..., Sk, Dv]` with equal leading (batch,
    /// head) axes → `[..., Sq, Dv]`. `mask.key_padding` is `[B, Sk]` with `B = q.shape()[0]` (so
    /// q has rank ≥ 3), of q's dtype and device: a nonzero entry attends to the key, 0 ignores
    /// it. The leading axes are read as `[B, heads, ...]`: the `bh` (batch × head) slices of q,
    /// in order, use mask row `i / heads` with `heads = bh / B`.
    ///
    /// A query whose keys are all masked out (a padded key 0 with `causal` makes query 0 one)
    /// has no distribution to attend with; its output row is 0 and it passes no gradient to q,
    /// k or v. (PyTorch gives NaN there, and an additive −10000 mask, as in diffusers, a uniform
    /// average over the keys; we choose 0.)
    ///
    /// Backward, with `P = softmax(S)` recomputed from the saved row log-sum-exp
    /// `lse = ln Σⱼ exp(Sᵢⱼ)` (masked entries, padded or causal, have `Pᵢⱼ = 0`; a fully masked
    /// row keeps `lse = +∞`, so its recomputed row of P is 0 too): `dV = Pᵀ·dO`,
    /// `dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O))`, `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`. The mask gets
    /// no gradient.
    ///
    /// Errors: `InvalidArgument` for a rank below 2 (below 3 with a key-padding mask), `Sk = 0`
    /// or an empty q or v; `ShapeMismatch` for k, v or the key-padding mask not fitting q;
    /// `DTypeMismatch` / `DeviceMismatch` for inputs (the mask included) of another dtype or
    /// device.
    pub fn scaled_dot_product_attention_masked(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttentionMask<'_>, scale: Option<f64>) -> Result<Tensor> {
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
        let shape =
            AttentionShape { bh: lead.iter().product(), sq: q.shape()[rank - 2], sk: k.shape()[rank - 2], d, dv: v.shape()[rank - 1], causal: mask.causal };
        if shape.sk == 0 {
            return invalid(op, "no keys to attend to (Sk = 0)");
        }
        if shape.bh * shape.sq * shape.dv == 0 || d == 0 {
            return invalid(op, format!("empty attention: q {:?}, v {:?}", q.shape(), v.shape()));
        }
        let key_mask = match mask.key_padding {
            None => None,
            Some(mask) => {
                if rank < 3 {
                    return invalid(op, format!("a key-padding mask needs q of rank ≥ 3 ([B, ..., Sq, D]), got {:?}", q.shape()));
                }
                check_same(op, &[q, mask])?;
                let batch = q.shape()[0];
                if mask.shape() != [batch, shape.sk] {
                    return Err(TensorError::ShapeMismatch { op, lhs: vec![batch, shape.sk], rhs: mask.shape().to_vec() });
                }
                Some(KeyMask { values: mask.detach().contiguous()?, heads: shape.bh / batch })
            }
        };
        let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
        let (qc, kc, vc) = (q.detach().contiguous()?, k.detach().contiguous()?, v.detach().contiguous()?);
        let out_shape: Vec<usize> = lead.iter().copied().chain([shape.sq, shape.dv]).collect();
        let [out, lse] = kernels(q).attention_forward([&qc, &kc, &vc], key_mask.as_ref().map(KeyMask::by_ref), &shape, scale, &out_shape)?;
        let saved_out = out.detach();
        Ok(out.with_backward(op, &[q, k, v], move |d_out| {
            let saved = [&qc, &kc, &vc, &saved_out, &lse];
            let [dq, dk, dv] = kernels(&qc).attention_backward(saved, key_mask.as_ref().map(KeyMask::by_ref), d_out, &shape, scale)?;
            // the kernels' gradients have q, k, v's shapes (as contiguous copies)
            Ok(vec![Some(dq), Some(dk), Some(dv)])
        }))
    }
}
