//! The host side of attention's CUDA kernels (kernels/attention.cu).

use super::{AttentionKernels, AttentionShape, KeyMask};
use crate::cuda::launch::{F32, THREADS, check_len, invalid, kernel, output, to_i32};
use crate::cuda::{DeviceBuffer, KernelArg, LaunchConfig};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::ops::dense;
use crate::precision::Precision;
use crate::{Result, Tensor};

impl AttentionKernels for Cuda {
    fn attention_forward(
        &self,
        [q, k, v]: [&Tensor; 3],
        key_mask: Option<KeyMask<&Tensor>>,
        shape: &AttentionShape,
        scale: f64,
        out_shape: &[usize],
    ) -> Result<[Tensor; 2]> {
        let (q, k, v) = (dense(q)?, dense(k)?, dense(v)?);
        // (q stands in for the mask when there is none, so that one buffer list serves both)
        let mask_tensor = key_mask.map_or(Ok(q.clone()), |m| dense(m.values))?;
        let (out, lse) = with_device_buffers("scaled_dot_product_attention", [&q, &k, &v, &mask_tensor], |[qs, ks, vs, ms]| {
            attention_forward(qs, ks, vs, key_mask.map(|m| m.with_values(ms)), shape, scale)
        })?;
        let device = q.device();
        Ok([device_tensor(out, device, out_shape), device_tensor(lse, device, &[shape.bh, shape.sq])])
    }

    fn attention_backward(
        &self,
        saved: [&Tensor; 5],
        key_mask: Option<KeyMask<&Tensor>>,
        d_out: &Tensor,
        shape: &AttentionShape,
        scale: f64,
    ) -> Result<[Tensor; 3]> {
        let [q, k, v, out, lse] = saved.map(dense);
        let (q, k, v, out, lse, d_out) = (q?, k?, v?, out?, lse?, dense(d_out)?);
        let mask_tensor = key_mask.map_or(Ok(q.clone()), |m| dense(m.values))?;
        let (dq, dk, dv) =
            with_device_buffers("scaled_dot_product_attention", [&q, &k, &v, &mask_tensor, &out, &lse, &d_out], |[qs, ks, vs, ms, os, ls, ds]| {
                attention_backward(qs, ks, vs, key_mask.map(|m| m.with_values(ms)), os, ls, ds, shape, scale)
            })?;
        let device = q.device();
        Ok([device_tensor(dq, device, q.shape()), device_tensor(dk, device, k.shape()), device_tensor(dv, device, v.shape())])
    }
}

/// The kernel for this thread's precision ([`crate::precision`]) of `[f32, tf32, bf16]`: its
/// products in f32 FMAs or on tensor cores in TF32 or with bf16 inputs.
fn by_precision(kernels: [&'static str; 3]) -> &'static str {
    match crate::precision::precision() {
        Precision::F32 => kernels[0],
        Precision::Tf32 => kernels[1],
        Precision::Bf16 => kernels[2],
    }
}

/// Rows of q (and keys) per attention tile (kernels/attention.cu).
const ATTENTION_TILE: usize = 32;

/// The attention kernels' launch: `tiles` row tiles × `bh`, 256 threads, `floats` of dynamic
/// shared memory.
fn attention_launch(op: &'static str, tiles: usize, bh: usize, floats: usize) -> Result<LaunchConfig> {
    if bh > 65535 {
        return Err(invalid(op, format!("{bh} (batch × heads) slices exceed CUDA's grid")));
    }
    Ok(LaunchConfig { grid: [tiles as u32, bh as u32, 1], block: [256, 1, 1], shared_bytes: (floats * F32) as u32 })
}

/// The kernels' arguments after their buffers: the sizes, the scale, the mask's heads (1 with
/// no mask) and whether the attention is causal.
fn attention_sizes(op: &'static str, s: &AttentionShape, scale: f64, heads: usize) -> Result<[KernelArg; 7]> {
    Ok([
        KernelArg::I32(to_i32(op, "sq", s.sq)?),
        KernelArg::I32(to_i32(op, "sk", s.sk)?),
        KernelArg::I32(to_i32(op, "d", s.d)?),
        KernelArg::I32(to_i32(op, "dv", s.dv)?),
        KernelArg::F32(scale as f32),
        KernelArg::I32(to_i32(op, "heads", heads)?),
        KernelArg::I32(s.causal.into()),
    ])
}

/// The mask's pointer argument (null with no mask) and its heads, after checking its size.
fn mask_arg(op: &'static str, key_mask: Option<KeyMask<&DeviceBuffer>>, s: &AttentionShape) -> Result<(KernelArg, usize)> {
    match key_mask {
        None => Ok((KernelArg::Ptr(0), 1)),
        Some(mask) => {
            if mask.heads == 0 || !s.bh.is_multiple_of(mask.heads) {
                return Err(invalid(op, format!("{} slices are not a whole number of batches of {} heads", s.bh, mask.heads)));
            }
            check_len(op, "key_mask", mask.values, s.bh / mask.heads * s.sk)?;
            Ok((mask.values.arg(), mask.heads))
        }
    }
}

/// `(out, lse)` of `softmax(scale·q·kᵀ + mask)·v` (the key mask and, if `s.causal`, the causal
/// one), q `[bh, sq, d]`, k `[bh, sk, d]`, v `[bh, sk, dv]` contiguous, as the CPU kernel
/// (`cpu.rs`) (kernels/attention.cu).
pub fn attention_forward(
    q: &DeviceBuffer,
    k: &DeviceBuffer,
    v: &DeviceBuffer,
    key_mask: Option<KeyMask<&DeviceBuffer>>,
    s: &AttentionShape,
    scale: f64,
) -> Result<(DeviceBuffer, DeviceBuffer)> {
    let op = "scaled_dot_product_attention";
    check_len(op, "q", q, s.bh * s.sq * s.d)?;
    check_len(op, "k", k, s.bh * s.sk * s.d)?;
    check_len(op, "v", v, s.bh * s.sk * s.dv)?;
    let (mask, heads) = mask_arg(op, key_mask, s)?;
    let (out, lse) = (output(q.backend(), s.bh * s.sq * s.dv)?, output(q.backend(), s.bh * s.sq)?);
    let t = ATTENTION_TILE;
    let floats = 2 * t * (s.d + 1) + 2 * t * s.dv + t * (t + 1) + 3 * t;
    let config = attention_launch(op, s.sq.div_ceil(t), s.bh, floats)?;
    let mut args = vec![q.arg(), k.arg(), v.arg(), mask, out.arg(), lse.arg()];
    args.extend(attention_sizes(op, s, scale, heads)?);
    let name = by_precision(["attention_forward_f32", "attention_forward_tf32", "attention_forward_bf16"]);
    q.backend().launch(kernel("attention.cu", name), &config, &args)?;
    Ok((out, lse))
}

/// `(dq, dk, dv)` of attention from the forward's inputs, mask, output, lse and `d_out`, as
/// the CPU kernel (`cpu.rs`) (kernels/attention.cu).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &DeviceBuffer,
    k: &DeviceBuffer,
    v: &DeviceBuffer,
    key_mask: Option<KeyMask<&DeviceBuffer>>,
    out: &DeviceBuffer,
    lse: &DeviceBuffer,
    d_out: &DeviceBuffer,
    s: &AttentionShape,
    scale: f64,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "scaled_dot_product_attention_backward";
    check_len(op, "q", q, s.bh * s.sq * s.d)?;
    check_len(op, "k", k, s.bh * s.sk * s.d)?;
    check_len(op, "v", v, s.bh * s.sk * s.dv)?;
    check_len(op, "out", out, s.bh * s.sq * s.dv)?;
    check_len(op, "d_out", d_out, s.bh * s.sq * s.dv)?;
    check_len(op, "lse", lse, s.bh * s.sq)?;
    let (mask, heads) = mask_arg(op, key_mask, s)?;
    let backend = q.backend();
    let rows = s.bh * s.sq;
    let delta = output(backend, rows)?;
    let warps_per_block = (THREADS / 32) as usize;
    let delta_args = [out.arg(), d_out.arg(), delta.arg(), KernelArg::I64(rows as i64), KernelArg::I32(to_i32(op, "dv", s.dv)?)];
    backend.launch(kernel("attention.cu", "attention_delta_f32"), &LaunchConfig::linear(rows.div_ceil(warps_per_block) as u32, THREADS), &delta_args)?;

    let (dq, dk, dv) = (output(backend, s.bh * s.sq * s.d)?, output(backend, s.bh * s.sk * s.d)?, output(backend, s.bh * s.sk * s.dv)?);
    let t = ATTENTION_TILE;
    let tiles = 2 * t * (s.d + 1) + 2 * t * (s.dv + 1);
    let dkdv_floats = tiles + t * s.d + t * s.dv + 2 * t * (t + 1) + 2 * t;
    let mut args = vec![q.arg(), k.arg(), v.arg(), mask, lse.arg(), delta.arg(), d_out.arg(), dk.arg(), dv.arg()];
    args.extend(attention_sizes(op, s, scale, heads)?);
    let name = by_precision(["attention_backward_dkdv_f32", "attention_backward_dkdv_tf32", "attention_backward_dkdv_bf16"]);
    backend.launch(kernel("attention.cu", name), &attention_launch(op, s.sk.div_ceil(t), s.bh, dkdv_floats)?, &args)?;
    let dq_floats = tiles + t * s.d + 2 * t * (t + 1) + 2 * t;
    let mut args = vec![q.arg(), k.arg(), v.arg(), mask, lse.arg(), delta.arg(), d_out.arg(), dq.arg()];
    args.extend(attention_sizes(op, s, scale, heads)?);
    let name = by_precision(["attention_backward_dq_f32", "attention_backward_dq_tf32", "attention_backward_dq_bf16"]);
    backend.launch(kernel("attention.cu", name), &attention_launch(op, s.sq.div_ceil(t), s.bh, dq_floats)?, &args)?;
    Ok((dq, dk, dv))
}
