//! Scaled dot-product attention for one (batch, head) slice at a time, fused: the scores
//! `S = scale·QKᵀ` (−∞ where the key mask is 0 and, if causal, for keys j > i) and the
//! probabilities `P = softmax(S)` live only in a per-thread scratch buffer. The forward saves
//! the row log-sum-exp `lse = ln Σⱼ exp(Sᵢⱼ)`; the backward recomputes `P = exp(S − lse)` from
//! it instead of storing P (FlashAttention's trade: S·S floats of memory for one more GEMM). A
//! row whose keys are all masked outputs 0 and saves `lse = +∞`, so that its recomputed P is 0
//! as well.

use rayon::prelude::*;

use super::{AttentionKernels, AttentionShape, KeyMask};
use crate::cpu::gemm::{MatRef, gemm};
use crate::cpu::pool::Scratch;
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_elements, wrap};
use crate::{FloatElem, Result, Tensor};

const OP: &str = "scaled_dot_product_attention";

impl AttentionKernels for Cpu {
    fn attention_forward(
        &self,
        [q, k, v]: [&Tensor; 3],
        key_mask: Option<KeyMask<&Tensor>>,
        shape: &AttentionShape,
        scale: f64,
        out_shape: &[usize],
    ) -> Result<[Tensor; 2]> {
        // (q stands in for the mask when there is none, so that the macro binds a slice either way)
        let mask_tensor = key_mask.map_or(q, |m| m.values);
        let (out, lse) = with_host_elements!(OP, [q => qs, k => ks, v => vs, mask_tensor => ms], {
            let (out, lse) = attention_forward(qs, ks, vs, key_mask.map(|m| m.with_values(ms)), shape, FloatElem::from_f64(scale));
            (wrap(out), wrap(lse))
        });
        Ok([host_tensor(out, out_shape), host_tensor(lse, &[shape.bh, shape.sq])])
    }

    fn attention_backward(
        &self,
        saved: [&Tensor; 5],
        key_mask: Option<KeyMask<&Tensor>>,
        d_out: &Tensor,
        shape: &AttentionShape,
        scale: f64,
    ) -> Result<[Tensor; 3]> {
        let [q, k, v, out, lse] = saved;
        let d_out = d_out.contiguous()?;
        let mask_tensor = key_mask.map_or(q, |m| m.values);
        let (dq, dk, dv) = with_host_elements!(OP, [q => qs, k => ks, v => vs, out => os, lse => ls, &d_out => ds, mask_tensor => ms], {
            let mask = key_mask.map(|m| m.with_values(ms));
            let (dq, dk, dv) = attention_backward(qs, ks, vs, mask, os, ls, ds, shape, FloatElem::from_f64(scale));
            (wrap(dq), wrap(dk), wrap(dv))
        });
        Ok([host_tensor(dq, q.shape()), host_tensor(dk, k.shape()), host_tensor(dv, v.shape())])
    }
}

fn rows<T>(data: &[T], row_len: usize) -> MatRef<'_, T> {
    MatRef { data, row_stride: row_len, col_stride: 1 }
}
fn rows_transposed<T>(data: &[T], row_len: usize) -> MatRef<'_, T> {
    MatRef { data, row_stride: 1, col_stride: row_len }
}

/// The mask row (`[sk]`) of (batch, head) slice `b`, if there is a mask.
fn mask_row<'a, T>(key_mask: Option<KeyMask<&'a [T]>>, b: usize, s: &AttentionShape) -> Option<&'a [T]> {
    key_mask.map(|m| &m.values[b / m.heads * s.sk..][..s.sk])
}

/// `scores = scale · q · kᵀ` (`[sq, sk]`), −∞ in the columns of the keys that `mask` (`[sk]`)
/// holds 0 for and, if `s.causal`, right of the diagonal (row i, columns j > i).
fn scores<T: FloatElem>(q: &[T], k: &[T], mask: Option<&[T]>, s: &AttentionShape, scale: T, out: &mut [T]) {
    gemm(s.sq, s.sk, s.d, rows(q, s.d), rows_transposed(k, s.d), out, s.sk, false);
    out.iter_mut().for_each(|v| *v *= scale);
    for (i, row) in out.chunks_exact_mut(s.sk).enumerate() {
        if let Some(mask) = mask {
            row.iter_mut().zip(mask).filter(|(_, m)| m.is_zero()).for_each(|(x, _)| *x = T::neg_infinity());
        }
        if s.causal && i + 1 < s.sk {
            row[i + 1..].fill(T::neg_infinity());
        }
    }
}

/// Returns `out [bh, sq, dv]` and `lse [bh, sq]` (0 and +∞ on rows whose keys are all masked).
pub fn attention_forward<T: FloatElem>(q: &[T], k: &[T], v: &[T], key_mask: Option<KeyMask<&[T]>>, s: &AttentionShape, scale: T) -> (Vec<T>, Vec<T>) {
    let mut out = crate::cpu::pool::for_overwrite::<T>(s.bh * s.sq * s.dv);
    let mut lse = crate::cpu::pool::for_overwrite::<T>(s.bh * s.sq);
    out.par_chunks_mut(s.sq * s.dv).zip(lse.par_chunks_mut(s.sq)).enumerate().for_each_init(
        || Scratch::<T>::for_overwrite(s.sq * s.sk),
        |p, (b, (out, lse))| {
            let (q, k, v) = (&q[b * s.sq * s.d..], &k[b * s.sk * s.d..], &v[b * s.sk * s.dv..]);
            scores(q, k, mask_row(key_mask, b, s), s, scale, p);
            for (row, lse) in p.chunks_exact_mut(s.sk).zip(lse.iter_mut()) {
                let max = row.iter().fold(T::neg_infinity(), |m, &x| m.max(x));
                if max == T::neg_infinity() {
                    // every key masked: P = 0, so out = 0 and the backward's exp(S − lse) = 0
                    row.fill(T::zero());
                    *lse = T::infinity();
                    continue;
                }
                let mut sum = T::zero();
                for x in row.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = sum.recip();
                row.iter_mut().for_each(|x| *x *= inv);
                *lse = max + sum.ln();
            }
            gemm(s.sq, s.dv, s.sk, rows(p, s.sk), rows(v, s.dv), out, s.dv, false);
        },
    );
    (out, lse)
}

/// Gradients `(dq, dk, dv)` given the forward's inputs, its mask, output, `lse` and `d_out`:
/// `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`, `dQ = scale·dS·K`,
/// `dK = scale·dSᵀ·Q`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: FloatElem>(
    q: &[T],
    k: &[T],
    v: &[T],
    key_mask: Option<KeyMask<&[T]>>,
    out: &[T],
    lse: &[T],
    d_out: &[T],
    s: &AttentionShape,
    scale: T,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut dq = crate::cpu::pool::for_overwrite::<T>(s.bh * s.sq * s.d);
    let mut dk = crate::cpu::pool::for_overwrite::<T>(s.bh * s.sk * s.d);
    let mut dv = crate::cpu::pool::for_overwrite::<T>(s.bh * s.sk * s.dv);
    dq.par_chunks_mut(s.sq * s.d).zip(dk.par_chunks_mut(s.sk * s.d)).zip(dv.par_chunks_mut(s.sk * s.dv)).enumerate().for_each_init(
        || (Scratch::<T>::for_overwrite(s.sq * s.sk), Scratch::<T>::for_overwrite(s.sq * s.sk)),
        |(p, dp), (b, ((dq, dk), dv))| {
            let (q, k, v) = (&q[b * s.sq * s.d..], &k[b * s.sk * s.d..], &v[b * s.sk * s.dv..]);
            let (o, d_o) = (&out[b * s.sq * s.dv..][..s.sq * s.dv], &d_out[b * s.sq * s.dv..][..s.sq * s.dv]);
            let lse = &lse[b * s.sq..][..s.sq];
            scores(q, k, mask_row(key_mask, b, s), s, scale, p);
            for (row, &l) in p.chunks_exact_mut(s.sk).zip(lse) {
                // masked: exp(−∞ − l) = 0; a fully masked row: exp(S − ∞) = 0
                row.iter_mut().for_each(|x| *x = (*x - l).exp());
            }
            gemm(s.sk, s.dv, s.sq, rows_transposed(p, s.sk), rows(d_o, s.dv), dv, s.dv, false);
            gemm(s.sq, s.sk, s.dv, rows(d_o, s.dv), rows_transposed(v, s.dv), dp, s.sk, false);
            for (i, (p_row, dp_row)) in p.chunks_exact(s.sk).zip(dp.chunks_exact_mut(s.sk)).enumerate() {
                let delta = o[i * s.dv..(i + 1) * s.dv].iter().zip(&d_o[i * s.dv..(i + 1) * s.dv]).fold(T::zero(), |acc, (&a, &b)| acc + a * b);
                for (ds, &p) in dp_row.iter_mut().zip(p_row) {
                    *ds = scale * p * (*ds - delta);
                }
            }
            // dp now holds scale·dS
            gemm(s.sq, s.d, s.sk, rows(dp, s.sk), rows(k, s.d), dq, s.d, false);
            gemm(s.sk, s.d, s.sq, rows_transposed(dp, s.sk), rows(q, s.d), dk, s.d, false);
        },
    );
    (dq, dk, dv)
}
