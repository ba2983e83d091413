//! Scaled dot-product attention as one fused op (kernels in [`crate::cpu::attention`]).

use crate::cpu::attention::{AttentionShape, attention_backward, attention_forward};
use crate::error::{Result, TensorError, invalid};
use crate::cuda::kernels as gpu;
use crate::ops::{check_same, dense, gpu_tensor, new_tensor, on_gpu, with_gpu, wrap};
use crate::storage::{CpuStorage, with_float_slices3};
use crate::{FloatElem, Tensor};

/// The contiguous elements of a tensor that is known to be contiguous.
fn elements<'a, T: FloatElem>(storage: &'a CpuStorage, t: &Tensor) -> &'a [T] {
    &T::slice(storage).expect("dtype checked")[t.layout().contiguous_range().expect("contiguous")]
}

fn backward_kernel<T: FloatElem>(
    saved: [&Tensor; 6],
    shape: &AttentionShape,
    scale: f64,
) -> (CpuStorage, CpuStorage, CpuStorage) {
    let guards = saved.map(|t| t.storage());
    let [q, k, v, out, lse, d_out] = [0, 1, 2, 3, 4, 5].map(|i| elements::<T>(guards[i].cpu("attention_backward").expect("attention runs on the CPU"), saved[i]));
    let (dq, dk, dv) = attention_backward(q, k, v, out, lse, d_out, shape, T::from_f64(scale));
    (wrap(dq), wrap(dk), wrap(dv))
}

/// The CUDA path of [`Tensor::scaled_dot_product_attention`] on dense copies of q, k, v.
fn gpu_attention(q: &Tensor, k: &Tensor, v: &Tensor, dense_qkv: [Tensor; 3], shape: AttentionShape, scale: f64, out_shape: &[usize]) -> Result<Tensor> {
    let op = "scaled_dot_product_attention";
    let [qc, kc, vc] = dense_qkv;
    let device = q.device();
    let (out, lse) = with_gpu(op, &qc, |qb| with_gpu(op, &kc, |kb| with_gpu(op, &vc, |vb| gpu::attention_forward(qb, kb, vb, &shape, scale))))?;
    let (out, lse) = (gpu_tensor(out, device, out_shape), gpu_tensor(lse, device, &[shape.bh, shape.sq]));
    let saved_out = out.detach();
    let (q_shape, k_shape, v_shape) = (q.shape().to_vec(), k.shape().to_vec(), v.shape().to_vec());
    Ok(out.with_backward(op, &[q, k, v], move |d_out| {
        let d_out = dense(d_out)?;
        let (dq, dk, dv) = with_gpu(op, &qc, |qb| {
            with_gpu(op, &kc, |kb| {
                with_gpu(op, &vc, |vb| {
                    with_gpu(op, &saved_out, |ob| {
                        with_gpu(op, &lse, |lb| with_gpu(op, &d_out, |db| gpu::attention_backward(qb, kb, vb, ob, lb, db, &shape, scale)))
                    })
                })
            })
        })?;
        Ok(vec![Some(gpu_tensor(dq, device, &q_shape)), Some(gpu_tensor(dk, device, &k_shape)), Some(gpu_tensor(dv, device, &v_shape))])
    }))
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
        let shape = AttentionShape {
            bh: lead.iter().product(),
            sq: q.shape()[rank - 2],
            sk: k.shape()[rank - 2],
            d,
            dv: v.shape()[rank - 1],
        };
        if shape.sk == 0 {
            return invalid(op, "no keys to attend to (Sk = 0)");
        }
        if shape.bh * shape.sq * shape.dv == 0 || d == 0 {
            return invalid(op, format!("empty attention: q {:?}, v {:?}", q.shape(), v.shape()));
        }
        let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
        let (qc, kc, vc) = (q.detach().contiguous()?, k.detach().contiguous()?, v.detach().contiguous()?);
        let out_shape: Vec<usize> = lead.iter().copied().chain([shape.sq, shape.dv]).collect();
        if on_gpu(q) {
            return gpu_attention(q, k, v, [dense(&qc)?, dense(&kc)?, dense(&vc)?], shape, scale, &out_shape);
        }
        let (out, lse) = {
            let (sq, sk, sv) = (qc.storage(), kc.storage(), vc.storage());
            with_float_slices3!(op, sq.cpu(op)?, sk.cpu(op)?, sv.cpu(op)?, (qs, ks, vs) => {
                let range = |t: &Tensor| t.layout().contiguous_range().unwrap();
                let (o, l) = attention_forward(&qs[range(&qc)], &ks[range(&kc)], &vs[range(&vc)], &shape, FloatElem::from_f64(scale));
                (wrap(o), wrap(l))
            })
        };
        let out = new_tensor(out, &out_shape);
        let lse = new_tensor(lse, &[shape.bh, shape.sq]);
        let saved_out = out.clone();
        let (q_shape, k_shape, v_shape) = (q.shape().to_vec(), k.shape().to_vec(), v.shape().to_vec());
        Ok(out.with_backward(op, &[q, k, v], move |d_out| {
            let d_out = d_out.contiguous()?;
            let saved = [&qc, &kc, &vc, &saved_out, &lse, &d_out];
            let (dq, dk, dv) = match qc.dtype() {
                crate::DType::F32 => backward_kernel::<f32>(saved, &shape, scale),
                crate::DType::F64 => backward_kernel::<f64>(saved, &shape, scale),
                dtype => return Err(TensorError::UnsupportedDType { op, dtype }),
            };
            Ok(vec![
                Some(new_tensor(dq, &q_shape)),
                Some(new_tensor(dk, &k_shape)),
                Some(new_tensor(dv, &v_shape)),
            ])
        }))
    }
}
