//! scaled_dot_product_attention: forward values against a naive f64 reference (per batch/head:
//! scores, a max-subtracted softmax, the weighted sum — index loops written here), with explicit
//! and default (1/√d) scales, Sq ≠ Sk, Dv ≠ D, ranks 2, 3 and 4, sizes of 1 and odd sizes; f32 on
//! a larger case; f64 finite-difference gradient checks for q, k and v, including the strided
//! q/k/v a UNet passes (a [B, S, H, D] tensor transposed to [B, H, S, D]). With a key-padding
//! mask: forward values against the same reference (ranks 3, 4 and 5, several heads, masks
//! across the CUDA kernels' 32-key tiles, a first tile all masked, fully masked queries giving
//! exact zeros), equal to dropping the masked keys, equal to no mask when nothing is masked;
//! f64 finite-difference gradient checks with a mask (a fully masked query passes exactly zero
//! gradient, the mask none); the errors for a wrong mask. With the causal mask, alone and with
//! key padding: forward values against the reference (ranks 2, 3 and 4, Sq = Sk of 1, 7, 33, 70
//! across the CUDA kernels' 32-tiles, Sq ≠ Sk both ways), each query equal to attention over its
//! key prefix alone (top-left alignment), queries that see no key giving exact zeros; f64
//! finite-difference gradient checks (exact zeros where nothing is seen) and f32 gradients
//! against f64 across tiles. Every test runs on each device of the build (`cpu::…`, `cuda::…`;
//! f32 kernels on a CUDA device); the CUDA kernels are also checked against the CPU kernels
//! directly with key and causal masks (`kernels::…`).

#[macro_use]
mod common;

use common::TestDevice;
use ember::tensor::ops::attention::AttentionMask;
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Device, Result, Tensor, TensorError};

// ---- naive reference -----------------------------------------------------------------------------

/// `softmax(scale · q·kᵀ + M) · v` for row-major `q [bh, sq, d]`, `k [bh, sk, d]`, `v [bh, sk, dv]`,
/// with `key_mask = (values [bh / heads, sk], heads)`: slice b ignores key j (`M = −∞`) where
/// `values[b / heads][j]` is 0, and with `causal` query i ignores every key j > i; a query with
/// every key ignored gives 0. `dims` = `[bh, sq, sk, d, dv]`.
fn naive_attention(q: &[f64], k: &[f64], v: &[f64], key_mask: Option<(&[f64], usize)>, causal: bool, dims: [usize; 5], scale: f64) -> Vec<f64> {
    let [bh, sq, sk, d, dv] = dims;
    let mut out = vec![0.0; bh * sq * dv];
    for b in 0..bh {
        let key_attended = |j: usize| key_mask.is_none_or(|(values, heads)| values[b / heads * sk + j] != 0.0);
        for i in 0..sq {
            let attended = |j: usize| key_attended(j) && !(causal && j > i);
            let mut scores = vec![0.0; sk];
            for (j, s) in scores.iter_mut().enumerate() {
                let mut acc = 0.0;
                for e in 0..d {
                    acc += q[(b * sq + i) * d + e] * k[(b * sk + j) * d + e];
                }
                *s = if attended(j) { scale * acc } else { f64::NEG_INFINITY };
            }
            let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
            if max == f64::NEG_INFINITY {
                continue; // every key ignored: the output row stays 0
            }
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for j in 0..sk {
                let p = scores[j] / sum;
                for e in 0..dv {
                    out[(b * sq + i) * dv + e] += p * v[(b * sk + j) * dv + e];
                }
            }
        }
    }
    out
}

/// Checks the op on q, k, v (any rank ≥ 2, any layout) against the reference, in `dtype` on `dev`.
#[allow(clippy::too_many_arguments)] // the check's own parameters plus the device
fn check_attention(dev: TestDevice, q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f64>, dtype: DType, tolerance: f64, what: &str) {
    check_masked_attention(dev, [q, k, v], AttentionMask::default(), scale, dtype, tolerance, what);
}

/// [`check_attention`] with a mask (its key-padding mask `[B, Sk]` of any layout); returns the
/// output's values.
#[allow(clippy::too_many_arguments)] // as check_attention
fn check_masked_attention(
    dev: TestDevice,
    [q, k, v]: [&Tensor; 3],
    mask: AttentionMask<'_>,
    scale: Option<f64>,
    dtype: DType,
    tolerance: f64,
    what: &str,
) -> Vec<f64> {
    let (dtype, tolerance) = (dev.dtype(dtype), dev.tolerance(tolerance));
    let rank = q.rank();
    let lead = &q.shape()[..rank - 2];
    let bh: usize = lead.iter().product();
    let (sq, d) = (q.shape()[rank - 2], q.shape()[rank - 1]);
    let (sk, dv) = (k.shape()[rank - 2], v.shape()[rank - 1]);
    let effective_scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let mask_values = mask.key_padding.map(|m| m.to_vec_f64());
    let key_mask = mask_values.as_deref().map(|values| (values, bh / q.shape()[0]));
    let expected = naive_attention(&q.to_vec_f64(), &k.to_vec_f64(), &v.to_vec_f64(), key_mask, mask.causal, [bh, sq, sk, d, dv], effective_scale);
    // a view already on the device is used as it is (its strides kept)
    let on_device = |t: &Tensor| if dev.is_cuda() && t.device() == dev.0 { t.clone() } else { dev.put(&t.to_dtype(dtype).unwrap()) };
    let [qd, kd, vd] = [q, k, v].map(on_device);
    let paddingd = mask.key_padding.map(on_device);
    let maskd = AttentionMask { key_padding: paddingd.as_ref(), ..mask };
    let out = Tensor::scaled_dot_product_attention_masked(&qd, &kd, &vd, maskd, scale).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut expected_shape = lead.to_vec();
    expected_shape.extend([sq, dv]);
    assert_eq!(out.shape(), expected_shape, "{what}: output shape");
    assert_eq!(out.dtype(), dtype, "{what}: dtype");
    let values = out.to_vec_f64();
    assert!(values.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let err = relative_error(&values, &expected);
    assert!(err < tolerance, "{what} ({dtype:?}): relative error {err:.3e}");
    values
}

fn sdpa(t: &[Tensor], scale: Option<f64>) -> Result<Tensor> {
    Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], scale)
}

/// The op on `t = [q, k, v]` with `mask` (its key-padding mask moved to q's dtype and device).
fn sdpa_masked(t: &[Tensor], mask: AttentionMask<'_>, scale: Option<f64>) -> Result<Tensor> {
    let padding = mask.key_padding.map(|m| m.to_dtype(t[0].dtype())?.to_device(t[0].device())).transpose()?;
    Tensor::scaled_dot_product_attention_masked(&t[0], &t[1], &t[2], AttentionMask { key_padding: padding.as_ref(), ..mask }, scale)
}

/// The causal mask alone.
const CAUSAL: AttentionMask<'static> = AttentionMask { key_padding: None, causal: true };

/// The key-padding mask `key_padding` alone.
fn padding(key_padding: &Tensor) -> AttentionMask<'_> {
    AttentionMask { key_padding: Some(key_padding), causal: false }
}

/// The key-padding mask `key_padding` and the causal mask.
fn causal_padding(key_padding: &Tensor) -> AttentionMask<'_> {
    AttentionMask { key_padding: Some(key_padding), causal: true }
}

/// A `[batch, sk]` f64 key mask: 1 where `attend(row, key)`, else 0.
fn key_mask(batch: usize, sk: usize, attend: impl Fn(usize, usize) -> bool) -> Tensor {
    let values = (0..batch * sk).map(|e| if attend(e / sk, e % sk) { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec::<f64>(values, &[batch, sk], Device::Cpu).unwrap()
}

/// The gradients (of `Σ out ⊙ r` for a fixed random `r`) of q, k, v, in `dtype` on `dev`.
fn attention_grads(dev: TestDevice, dtype: DType, inputs: &[Tensor], mask: AttentionMask<'_>, scale: Option<f64>) -> Vec<Vec<f64>> {
    let vars: Vec<Tensor> = inputs.iter().map(|t| dev.put(&t.to_dtype(dtype).unwrap()).variable()).collect();
    let out = sdpa_masked(&vars, mask, scale).unwrap();
    let r = dev.put(&random(out.shape(), -1.0, 1.0, 999).to_dtype(dtype).unwrap());
    let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter().map(|v| grads.get(v).expect("gradient").to_vec_f64()).collect()
}

per_device! {
// ---- forward ----------------------------------------------------------------------------------------

fn attention_rank3_matches_reference_with_default_and_explicit_scale_sq_ne_sk_dv_ne_d(dev) {
    let q = random(&[3, 5, 7], -1.0, 1.0, 1);
    let k = random(&[3, 9, 7], -1.0, 1.0, 2);
    let v = random(&[3, 9, 11], -1.0, 1.0, 3);
    check_attention(dev, &q, &k, &v, None, DType::F64, 1e-13, "rank 3 default scale");
    check_attention(dev, &q, &k, &v, Some(0.3), DType::F64, 1e-13, "rank 3 scale 0.3");
    check_attention(dev, &q, &k, &v, Some(2.5), DType::F64, 1e-13, "rank 3 scale 2.5");
}

fn attention_default_scale_is_one_over_sqrt_d(dev) {
    let q = dev.put(&random(&[2, 4, 7], -1.0, 1.0, 4));
    let k = dev.put(&random(&[2, 6, 7], -1.0, 1.0, 5));
    let v = dev.put(&random(&[2, 6, 3], -1.0, 1.0, 6));
    let default = Tensor::scaled_dot_product_attention(&q, &k, &v, None).unwrap().to_vec_f64();
    let explicit = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(1.0 / 7f64.sqrt())).unwrap().to_vec_f64();
    assert!(relative_error(&default, &explicit) < dev.tolerance(1e-15));
    let other = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(1.0)).unwrap().to_vec_f64();
    assert!(relative_error(&other, &explicit) > 1e-6, "the scale must matter");
}

fn attention_rank4_batch_heads_matches_reference(dev) {
    let q = random(&[2, 3, 7, 5], -1.0, 1.0, 7);
    let k = random(&[2, 3, 4, 5], -1.0, 1.0, 8);
    let v = random(&[2, 3, 4, 9], -1.0, 1.0, 9);
    check_attention(dev, &q, &k, &v, None, DType::F64, 1e-13, "rank 4");
    check_attention(dev, &q, &k, &v, Some(0.7), DType::F64, 1e-13, "rank 4 scale 0.7");
}

fn attention_rank2_single_head_matches_reference(dev) {
    let q = random(&[7, 3], -1.0, 1.0, 10);
    let k = random(&[5, 3], -1.0, 1.0, 11);
    let v = random(&[5, 2], -1.0, 1.0, 12);
    check_attention(dev, &q, &k, &v, None, DType::F64, 1e-13, "rank 2");
}

fn attention_with_sizes_of_one_matches_reference(dev) {
    // one key: every query attends to it with probability 1, so out = v broadcast over queries
    let q = random(&[2, 5, 3], -1.0, 1.0, 13);
    let k = random(&[2, 1, 3], -1.0, 1.0, 14);
    let v = random(&[2, 1, 4], -1.0, 1.0, 15);
    check_attention(dev, &q, &k, &v, None, DType::F64, 1e-14, "Sk = 1");
    let [qd, kd, vd] = [&q, &k, &v].map(|t| dev.put(t));
    let out = Tensor::scaled_dot_product_attention(&qd, &kd, &vd, None).unwrap().to_vec_f64();
    let vv = vd.to_vec_f64();
    for b in 0..2 {
        for i in 0..5 {
            for e in 0..4 {
                assert!((out[(b * 5 + i) * 4 + e] - vv[b * 4 + e]).abs() < dev.tolerance(1e-15));
            }
        }
    }
    // one query, D = 1, Dv = 1, one batch-head
    let q = random(&[1, 1, 1, 1], -1.0, 1.0, 16);
    let k = random(&[1, 1, 7, 1], -1.0, 1.0, 17);
    let v = random(&[1, 1, 7, 1], -1.0, 1.0, 18);
    check_attention(dev, &q, &k, &v, None, DType::F64, 1e-14, "Sq = D = Dv = 1");
    check_attention(dev, &q, &k, &v, Some(3.0), DType::F64, 1e-14, "Sq = D = Dv = 1, scale 3");
}

fn attention_f32_larger_odd_case_matches_reference(dev) {
    let q = random(&[2, 2, 65, 24], -1.0, 1.0, 19);
    let k = random(&[2, 2, 33, 24], -1.0, 1.0, 20);
    let v = random(&[2, 2, 33, 40], -1.0, 1.0, 21);
    check_attention(dev, &q, &k, &v, None, DType::F32, 1e-5, "[2,2,65,24] Sk 33 Dv 40");
    check_attention(dev, &q, &k, &v, Some(0.5), DType::F32, 1e-5, "[2,2,65,24] Sk 33 Dv 40 scale 0.5");
    // longer sequences (bigger GEMMs per head)
    let q = random(&[1, 3, 257, 33], -1.0, 1.0, 22);
    let k = random(&[1, 3, 129, 33], -1.0, 1.0, 23);
    let v = random(&[1, 3, 129, 17], -1.0, 1.0, 24);
    check_attention(dev, &q, &k, &v, None, DType::F32, 1e-5, "[1,3,257,33] Sk 129 Dv 17");
}

fn attention_with_large_scores_stays_finite_and_matches_reference(dev) {
    // scores up to ~|q||k| = 24·100 with scale 1: exp would overflow without the max shift
    let q = random(&[2, 5, 24], -10.0, 10.0, 25);
    let k = random(&[2, 7, 24], -10.0, 10.0, 26);
    let v = random(&[2, 7, 3], -1.0, 1.0, 27);
    check_attention(dev, &q, &k, &v, Some(1.0), DType::F64, 1e-12, "large scores");
    check_attention(dev, &q, &k, &v, Some(1.0), DType::F32, 1e-4, "large scores (f32)");
}

fn attention_reads_strided_q_k_v_like_their_contiguous_copies(dev) {
    // a UNet holds [B, S, H, D] and transposes to [B, H, S, D]
    let q_bshd = random(&[2, 7, 3, 5], -1.0, 1.0, 28);
    let k_bshd = random(&[2, 9, 3, 5], -1.0, 1.0, 29);
    let v_bshd = random(&[2, 9, 3, 4], -1.0, 1.0, 30);
    let [q, k, v] = [&q_bshd, &k_bshd, &v_bshd].map(|t| dev.put(t).transpose(1, 2).unwrap());
    assert!(!q.is_contiguous() && !k.is_contiguous() && !v.is_contiguous());
    check_attention(dev, &q, &k, &v, None, DType::F64, 1e-13, "transposed q, k, v");
    check_attention(dev, &q, &k, &v, None, DType::F32, 1e-5, "transposed q, k, v (f32)");
    // k given as the transpose of a [B, H, D, S] tensor, and a narrowed v
    let k_t = dev.put(&random(&[2, 3, 5, 9], -1.0, 1.0, 31)).transpose(-1, -2).unwrap();
    let v_wide = dev.put(&random(&[2, 3, 9, 10], -1.0, 1.0, 32)).narrow(-1, 3, 4).unwrap();
    check_attention(dev, &q, &k_t, &v_wide, Some(0.4), DType::F64, 1e-13, "k transposed last axes, v narrowed");
}

// ---- gradients ----------------------------------------------------------------------------------------

fn attention_gradcheck_q_k_v_rank3_default_scale_sq_ne_sk_dv_ne_d(dev) {
    let q = random(&[2, 3, 4], -1.0, 1.0, 41);
    let k = random(&[2, 5, 4], -1.0, 1.0, 42);
    let v = random(&[2, 5, 3], -1.0, 1.0, 43);
    dev.assert_gradcheck("sdpa rank 3", |t| sdpa(t, None), &[q, k, v]);
}

fn attention_gradcheck_q_k_v_rank4_explicit_scale(dev) {
    let q = random(&[1, 2, 3, 5], -1.0, 1.0, 44);
    let k = random(&[1, 2, 7, 5], -1.0, 1.0, 45);
    let v = random(&[1, 2, 7, 2], -1.0, 1.0, 46);
    dev.assert_gradcheck("sdpa rank 4 scale 0.8", |t| sdpa(t, Some(0.8)), &[q, k, v]);
}

fn attention_gradcheck_with_sizes_of_one(dev) {
    let q = random(&[2, 3, 2], -1.0, 1.0, 47);
    let k = random(&[2, 1, 2], -1.0, 1.0, 48);
    let v = random(&[2, 1, 3], -1.0, 1.0, 49);
    if dev.is_cuda() {
        // f32 on a CUDA device: with one key P ≡ 1, so dq = dk = 0 exactly and the f64 central
        // differences give exactly 0; the kernels form dS = scale·P·(dO·Vᵀ − Σ dO⊙O) from two f32
        // dot products summed in different orders (fmaf along the row, a warp sum), which leaves
        // ~1e-7 there, an unbounded error relative to 0. So dv is gradchecked with q and k held
        // constant, and dq, dk must be 0 to 1e-6 (absolute; the gradients here are ~1).
        dev.assert_gradcheck("sdpa Sk = 1, dv", |t| sdpa(&[t[0].detach(), t[1].detach(), t[2].clone()], None), &[q.clone(), k.clone(), v.clone()]);
        let vars = [&q, &k, &v].map(|t| dev.put(t).variable());
        let out = sdpa(&vars, None).unwrap();
        let r = dev.put(&random(out.shape(), -1.0, 1.0, 999));
        let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("dq", &vars[0]), ("dk", &vars[1])] {
            let g = grads.get(var).expect("gradient").to_vec_f64();
            assert!(g.iter().all(|x| x.abs() < 1e-6), "sdpa Sk = 1 on {:?}: {name} should be 0, got {g:?}", dev.0);
        }
    } else {
        dev.assert_gradcheck("sdpa Sk = 1", |t| sdpa(t, None), &[q, k, v]);
    }
    let q = random(&[3, 1, 1], -1.0, 1.0, 50);
    let k = random(&[3, 4, 1], -1.0, 1.0, 51);
    let v = random(&[3, 4, 1], -1.0, 1.0, 52);
    dev.assert_gradcheck("sdpa Sq = D = Dv = 1", |t| sdpa(t, Some(1.7)), &[q, k, v]);
}

fn attention_gradcheck_with_large_scores(dev) {
    let q = random(&[1, 3, 6], -3.0, 3.0, 53);
    let k = random(&[1, 4, 6], -3.0, 3.0, 54);
    let v = random(&[1, 4, 2], -1.0, 1.0, 55);
    dev.assert_gradcheck("sdpa large scores", |t| sdpa(t, Some(1.0)), &[q, k, v]);
}

fn attention_gradcheck_through_bshd_to_bhsd_transposes(dev) {
    // the UNet call: q, k, v held as [B, S, H, D], transposed to [B, H, S, D] inside the graph
    let q = random(&[2, 3, 2, 4], -1.0, 1.0, 56);
    let k = random(&[2, 5, 2, 4], -1.0, 1.0, 57);
    let v = random(&[2, 5, 2, 3], -1.0, 1.0, 58);
    dev.assert_gradcheck(
        "sdpa transposed q, k, v",
        |t| Tensor::scaled_dot_product_attention(&t[0].transpose(1, 2)?, &t[1].transpose(1, 2)?, &t[2].transpose(1, 2)?, None)?.transpose(1, 2),
        &[q, k, v],
    );
}

fn attention_gradcheck_with_only_q_strided_and_k_from_a_last_axes_transpose(dev) {
    let q = random(&[1, 5, 2, 3], -1.0, 1.0, 59); // [B, S, H, D]
    let k = random(&[1, 2, 3, 4], -1.0, 1.0, 60); // [B, H, D, Sk]
    let v = random(&[1, 2, 4, 5], -1.0, 1.0, 61);
    dev.assert_gradcheck(
        "sdpa strided q, kᵀ",
        |t| Tensor::scaled_dot_product_attention(&t[0].transpose(1, 2)?, &t[1].transpose(-1, -2)?, &t[2], Some(0.6)),
        &[q, k, v],
    );
}

fn attention_gradcheck_when_q_k_v_are_views_of_one_tensor(dev) {
    // self-attention from one packed [S, 3·D] projection: gradients of the three narrows add up
    let qkv = random(&[2, 5, 9], -1.0, 1.0, 62);
    dev.assert_gradcheck(
        "sdpa packed qkv",
        |t| Tensor::scaled_dot_product_attention(&t[0].narrow(-1, 0, 3)?, &t[0].narrow(-1, 3, 3)?, &t[0].narrow(-1, 6, 3)?, None),
        &[qkv],
    );
}

fn attention_f32_gradients_match_f64_gradients_on_the_larger_case(dev) {
    // the reference: the f64 gradients on the CPU, proven by the finite-difference checks above
    let inputs = [random(&[2, 2, 65, 24], -1.0, 1.0, 63), random(&[2, 2, 33, 24], -1.0, 1.0, 64), random(&[2, 2, 33, 40], -1.0, 1.0, 65)];
    let (g32, g64) = (attention_grads(dev, DType::F32, &inputs, AttentionMask::default(), None), attention_grads(TestDevice::CPU, DType::F64, &inputs, AttentionMask::default(), None));
    for (name, (a, e)) in ["dq", "dk", "dv"].iter().zip(g32.iter().zip(&g64)) {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "{name}: f32 gradient relative error {err:.3e}");
    }
}

fn attention_gradient_of_q_alone_matches_the_full_backward(dev) {
    // k, v constants (no gradient wanted): only dq comes back, equal to the all-variable dq
    let inputs = [random(&[2, 5, 3], -1.0, 1.0, 66), random(&[2, 4, 3], -1.0, 1.0, 67), random(&[2, 4, 6], -1.0, 1.0, 68)];
    // (the full backward on the same device, so that the two must agree exactly)
    let full = attention_grads(dev, DType::F64, &inputs, AttentionMask::default(), None);
    let inputs = inputs.map(|t| dev.put(&t));
    let q = inputs[0].variable();
    let out = Tensor::scaled_dot_product_attention(&q, &inputs[1], &inputs[2], None).unwrap();
    let r = dev.put(&random(out.shape(), -1.0, 1.0, 999));
    let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.len(), 1);
    assert_eq!(grads.get(&q).unwrap().to_vec_f64(), full[0]);
    // and v alone
    let v = inputs[2].variable();
    let out = Tensor::scaled_dot_product_attention(&inputs[0], &inputs[1], &v, None).unwrap();
    let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&v).unwrap().to_vec_f64(), full[2]);
}

// ---- key mask: forward --------------------------------------------------------------------------------

fn attention_with_key_mask_rank3_matches_reference_and_fully_masked_queries_give_exact_zeros(dev) {
    let q = random(&[3, 5, 7], -1.0, 1.0, 70);
    let k = random(&[3, 9, 7], -1.0, 1.0, 71);
    let v = random(&[3, 9, 11], -1.0, 1.0, 72);
    // batch 0 ignores keys 0, 4, 8; batch 1 every key; batch 2 only key 3
    let mask = key_mask(3, 9, |b, j| match b {
        0 => j % 4 != 0,
        1 => false,
        _ => j != 3,
    });
    for scale in [None, Some(0.3)] {
        let out = check_masked_attention(dev, [&q, &k, &v], padding(&mask), scale, DType::F64, 1e-13, "rank 3 masked");
        assert!(out[5 * 11..2 * 5 * 11].iter().all(|&x| x == 0.0), "batch 1 has no key: its output must be exactly 0");
        check_masked_attention(dev, [&q, &k, &v], padding(&mask), scale, DType::F32, 1e-5, "rank 3 masked (f32)");
    }
    // the mask must matter
    let [qd, kd, vd] = [&q, &k, &v].map(|t| dev.put(t));
    let masked = sdpa_masked(&[qd.clone(), kd.clone(), vd.clone()], padding(&mask), None).unwrap().narrow(0, 0, 1).unwrap().to_vec_f64();
    let unmasked = sdpa(&[qd, kd, vd], None).unwrap().narrow(0, 0, 1).unwrap().to_vec_f64();
    assert!(relative_error(&masked, &unmasked) > 1e-3, "masking keys must change the output");
    // any nonzero entry attends, and a strided mask (a transposed [Sk, B] tensor) reads the same
    let mask_t = dev.put(&mask.mul_scalar(-2.5).unwrap().transpose(0, 1).unwrap().contiguous().unwrap()).transpose(0, 1).unwrap();
    assert!(!mask_t.is_contiguous());
    check_masked_attention(dev, [&q, &k, &v], padding(&mask_t), None, DType::F64, 1e-13, "transposed mask of −2.5 and 0");
}

fn attention_with_key_mask_rank4_and_rank5_reads_row_batch_over_heads(dev) {
    // [B, H, S, D]: slice (b, h) reads mask row b; rows differ, so another row order fails
    let q = random(&[2, 3, 7, 5], -1.0, 1.0, 73);
    let k = random(&[2, 3, 4, 5], -1.0, 1.0, 74);
    let v = random(&[2, 3, 4, 9], -1.0, 1.0, 75);
    let mask = key_mask(2, 4, |b, j| if b == 0 { j != 1 } else { j == 1 || j == 2 });
    check_masked_attention(dev, [&q, &k, &v], padding(&mask), None, DType::F64, 1e-13, "rank 4 masked");
    check_masked_attention(dev, [&q, &k, &v], padding(&mask), Some(0.7), DType::F64, 1e-13, "rank 4 masked scale 0.7");
    // q, k, v as the transposes of [B, S, H, D] tensors, as the UNet passes them
    let [qt, kt, vt] = [&q, &k, &v].map(|t| dev.put(&t.transpose(1, 2).unwrap().contiguous().unwrap()).transpose(1, 2).unwrap());
    check_masked_attention(dev, [&qt, &kt, &vt], padding(&mask), None, DType::F64, 1e-13, "rank 4 masked, transposed q, k, v");
    // [B, H1, H2, S, D]: 6 slices per mask row
    let q = random(&[2, 2, 3, 3, 4], -1.0, 1.0, 76);
    let k = random(&[2, 2, 3, 6, 4], -1.0, 1.0, 77);
    let v = random(&[2, 2, 3, 6, 2], -1.0, 1.0, 78);
    let mask = key_mask(2, 6, |b, j| (b + j) % 3 != 0);
    check_masked_attention(dev, [&q, &k, &v], padding(&mask), None, DType::F64, 1e-13, "rank 5 masked");
}

fn attention_with_key_mask_f32_across_key_tiles_matches_reference(dev) {
    // Sk = 70: three of the CUDA kernels' 32-key tiles. Batch 0 ignores keys at the tile edges;
    // batch 1 attends only key 40, so its first tile is all masked (the online softmax starts
    // from a running max of −∞ there); batch 2 only key 0; batch 3 none.
    let q = random(&[4, 2, 65, 24], -1.0, 1.0, 79);
    let k = random(&[4, 2, 70, 24], -1.0, 1.0, 80);
    let v = random(&[4, 2, 70, 40], -1.0, 1.0, 81);
    let mask = key_mask(4, 70, |b, j| match b {
        0 => ![0, 31, 32, 33, 63, 64, 69].contains(&j),
        1 => j == 40,
        2 => j == 0,
        _ => false,
    });
    let out = check_masked_attention(dev, [&q, &k, &v], padding(&mask), None, DType::F32, 1e-5, "[4,2,65,24] Sk 70 masked");
    let per_batch = 2 * 65 * 40;
    assert!(out[3 * per_batch..].iter().all(|&x| x == 0.0), "batch 3 has no key: its output must be exactly 0");
    // one attended key: every query's output is that key's value row
    let vv = v.to_vec_f64();
    for h in 0..2 {
        for i in 0..65 {
            for c in 0..40 {
                let (got, want) = (out[per_batch + (h * 65 + i) * 40 + c], vv[((2 + h) * 70 + 40) * 40 + c]);
                assert!((got - want).abs() < dev.tolerance(1e-6), "batch 1, head {h}, query {i}: {got} vs {want}");
            }
        }
    }
    // a masked key with by far the largest score is ignored all the same
    let q = random(&[2, 5, 24], -10.0, 10.0, 82);
    let k = random(&[2, 7, 24], -10.0, 10.0, 83);
    let v = random(&[2, 7, 3], -1.0, 1.0, 84);
    let mask = key_mask(2, 7, |b, j| j != 2 + b);
    check_masked_attention(dev, [&q, &k, &v], padding(&mask), Some(1.0), DType::F64, 1e-12, "large scores masked");
    check_masked_attention(dev, [&q, &k, &v], padding(&mask), Some(1.0), DType::F32, 1e-4, "large scores masked (f32)");
}

fn attention_key_mask_equals_dropping_the_masked_keys_and_a_full_mask_equals_none(dev) {
    // masking the last keys of every batch row = attending to the keys before them
    for (sk, kept) in [(10, 7), (40, 33)] {
        let inputs = [random(&[2, 6, 4], -1.0, 1.0, 85), random(&[2, sk, 4], -1.0, 1.0, 86), random(&[2, sk, 3], -1.0, 1.0, 87)].map(|t| dev.put(&t));
        let mask = key_mask(2, sk, |_, j| j < kept);
        let masked = sdpa_masked(&inputs, padding(&mask), None).unwrap().to_vec_f64();
        let [k, v] = [&inputs[1], &inputs[2]].map(|t| t.narrow(1, 0, kept).unwrap());
        let dropped = sdpa(&[inputs[0].clone(), k, v], None).unwrap().to_vec_f64();
        let err = relative_error(&masked, &dropped);
        assert!(err < dev.tolerance(1e-14), "Sk {sk}, {kept} kept: masked vs dropped keys, relative error {err:.3e}");
    }
    // no entry 0 (any nonzero value attends): the same numbers as no mask at all
    let inputs = [random(&[2, 3, 5, 4], -1.0, 1.0, 88), random(&[2, 3, 6, 4], -1.0, 1.0, 89), random(&[2, 3, 6, 2], -1.0, 1.0, 90)].map(|t| dev.put(&t));
    let nonzero = random(&[2, 6], 0.5, 2.0, 91);
    assert_eq!(sdpa_masked(&inputs, padding(&nonzero), None).unwrap().to_vec_f64(), sdpa(&inputs, None).unwrap().to_vec_f64());
}

// ---- key mask: gradients ------------------------------------------------------------------------------

fn attention_gradcheck_with_key_mask_rank3_sq_ne_sk(dev) {
    let q = random(&[2, 3, 4], -1.0, 1.0, 92);
    let k = random(&[2, 5, 4], -1.0, 1.0, 93);
    let v = random(&[2, 5, 3], -1.0, 1.0, 94);
    let mask = key_mask(2, 5, |b, j| if b == 0 { j != 1 && j != 4 } else { j != 0 });
    dev.assert_gradcheck("sdpa masked rank 3", |t| sdpa_masked(t, padding(&mask), None), &[q, k, v]);
}

fn attention_gradcheck_with_key_mask_heads_and_a_fully_masked_batch_row_passes_zero_gradient(dev) {
    let q = random(&[2, 2, 3, 4], -1.0, 1.0, 95);
    let k = random(&[2, 2, 5, 4], -1.0, 1.0, 96);
    let v = random(&[2, 2, 5, 3], -1.0, 1.0, 97);
    // batch 0: no key; batch 1: keys 0, 2, 4
    let mask = key_mask(2, 5, |b, j| b == 1 && j % 2 == 0);
    dev.assert_gradcheck("sdpa masked rank 4, a fully masked row", |t| sdpa_masked(t, padding(&mask), Some(0.9)), &[q.clone(), k.clone(), v.clone()]);
    // exactly zero: the gradients of batch 0, and of batch 1's masked keys; the mask gets none
    let vars = [&q, &k, &v].map(|t| dev.put(t).variable());
    let mask_var = dev.put(&mask).variable();
    let out = Tensor::scaled_dot_product_attention_masked(&vars[0], &vars[1], &vars[2], padding(&mask_var), None).unwrap();
    assert!(out.narrow(0, 0, 1).unwrap().to_vec_f64().iter().all(|&x| x == 0.0));
    let r = dev.put(&random(out.shape(), -1.0, 1.0, 999));
    let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&mask_var).is_none(), "the mask gets no gradient");
    for (name, var) in [("dq", &vars[0]), ("dk", &vars[1]), ("dv", &vars[2])] {
        let g = grads.get(var).expect("gradient");
        let batch0 = g.narrow(0, 0, 1).unwrap().to_vec_f64();
        assert!(batch0.iter().all(|&x| x == 0.0), "{name} of the fully masked batch: {batch0:?}");
        assert!(g.narrow(0, 1, 1).unwrap().to_vec_f64().iter().any(|&x| x != 0.0), "{name} of batch 1 must not vanish");
        if name != "dq" {
            for j in [1, 3] {
                let masked_key = g.narrow(0, 1, 1).unwrap().narrow(2, j, 1).unwrap().to_vec_f64();
                assert!(masked_key.iter().all(|&x| x == 0.0), "{name} of masked key {j}: {masked_key:?}");
            }
        }
    }
}

fn attention_f32_masked_gradients_match_f64_gradients_on_the_larger_case(dev) {
    let inputs = [random(&[2, 2, 65, 24], -1.0, 1.0, 98), random(&[2, 2, 70, 24], -1.0, 1.0, 99), random(&[2, 2, 70, 40], -1.0, 1.0, 100)];
    let mask = key_mask(2, 70, |b, j| if b == 0 { j % 5 != 2 && j != 32 } else { j >= 35 });
    let g32 = attention_grads(dev, DType::F32, &inputs, padding(&mask), None);
    let g64 = attention_grads(TestDevice::CPU, DType::F64, &inputs, padding(&mask), None);
    for (name, (a, e)) in ["dq", "dk", "dv"].iter().zip(g32.iter().zip(&g64)) {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "{name}: f32 masked gradient relative error {err:.3e}");
    }
}

// ---- causal mask: forward -----------------------------------------------------------------------------

fn attention_causal_matches_reference_rank3_and_rank4_with_sq_eq_sk_across_tiles(dev) {
    // S = 1 and 7: one partial tile; 33 and 70: across the CUDA kernels' 32-query and 32-key
    // tiles, with the key tiles right of the diagonal skipped
    for (n, seed) in [(1, 110), (7, 113), (33, 116), (70, 119)] {
        let [q, k, v] = [random(&[3, n, 5], -1.0, 1.0, seed), random(&[3, n, 5], -1.0, 1.0, seed + 1), random(&[3, n, 4], -1.0, 1.0, seed + 2)];
        check_masked_attention(dev, [&q, &k, &v], CAUSAL, None, DType::F64, 1e-13, &format!("causal rank 3, S {n}"));
        let [q, k, v] = [random(&[2, 2, n, 9], -1.0, 1.0, seed), random(&[2, 2, n, 9], -1.0, 1.0, seed + 1), random(&[2, 2, n, 6], -1.0, 1.0, seed + 2)];
        check_masked_attention(dev, [&q, &k, &v], CAUSAL, Some(0.6), DType::F64, 1e-13, &format!("causal rank 4, S {n}, scale 0.6"));
        check_masked_attention(dev, [&q, &k, &v], CAUSAL, None, DType::F32, 1e-5, &format!("causal rank 4, S {n} (f32)"));
    }
}

fn attention_causal_with_sq_ne_sk_is_top_left_aligned_each_query_attending_to_its_key_prefix(dev) {
    // Sq < Sk: the last keys are seen by no query; Sq > Sk: the queries from Sk − 1 on see every key
    for (sq, sk, seed) in [(5, 9, 122), (9, 5, 125), (37, 70, 128), (70, 40, 131)] {
        let [q, k, v] = [random(&[2, sq, 6], -1.0, 1.0, seed), random(&[2, sk, 6], -1.0, 1.0, seed + 1), random(&[2, sk, 3], -1.0, 1.0, seed + 2)];
        let what = format!("causal Sq {sq} Sk {sk}");
        let out = check_masked_attention(dev, [&q, &k, &v], CAUSAL, None, DType::F64, 1e-13, &what);
        // without the reference: query i gives the unmasked attention over keys 0..=i alone
        let [qd, kd, vd] = [&q, &k, &v].map(|t| dev.put(t));
        for i in [0, sq / 2, sq - 1] {
            let seen = (i + 1).min(sk);
            let alone = sdpa(&[qd.narrow(1, i, 1).unwrap(), kd.narrow(1, 0, seen).unwrap(), vd.narrow(1, 0, seen).unwrap()], None).unwrap();
            let row: Vec<f64> = (0..2).flat_map(|b| out[(b * sq + i) * 3..][..3].to_vec()).collect();
            let err = relative_error(&row, &alone.to_vec_f64());
            assert!(err < dev.tolerance(1e-14), "{what}: query {i} against attention over its {seen} keys, relative error {err:.3e}");
        }
    }
    // rank 2 (no batch axis, which only a key-padding mask needs)
    let [q, k, v] = [random(&[7, 3], -1.0, 1.0, 134), random(&[5, 3], -1.0, 1.0, 135), random(&[5, 2], -1.0, 1.0, 136)];
    check_masked_attention(dev, [&q, &k, &v], CAUSAL, None, DType::F64, 1e-13, "causal rank 2");
}

fn attention_causal_with_key_padding_matches_reference_and_a_query_with_no_key_gives_zeros(dev) {
    // batch 0 pads key 0, so its query 0 sees no key, and keys 50..; batch 1 pads keys 32..40
    let [q, k, v] = [random(&[2, 70, 8], -1.0, 1.0, 137), random(&[2, 70, 8], -1.0, 1.0, 138), random(&[2, 70, 5], -1.0, 1.0, 139)];
    let mask = key_mask(2, 70, |b, j| if b == 0 { j != 0 && j < 50 } else { !(32..40).contains(&j) });
    let out = check_masked_attention(dev, [&q, &k, &v], causal_padding(&mask), None, DType::F64, 1e-13, "causal + padding rank 3");
    assert!(out[..5].iter().all(|&x| x == 0.0), "batch 0, query 0 has no key: its output must be exactly 0");
    assert!(out[5..10].iter().any(|&x| x != 0.0), "batch 0, query 1 sees key 1");
    check_masked_attention(dev, [&q, &k, &v], causal_padding(&mask), None, DType::F32, 1e-5, "causal + padding rank 3 (f32)");
    // [B, H, Sq, D] with Sq ≠ Sk; batch 1 pads key 0 (b + j = 1), so its query 0 sees no key
    let [q, k, v] = [random(&[2, 3, 37, 6], -1.0, 1.0, 140), random(&[2, 3, 45, 6], -1.0, 1.0, 141), random(&[2, 3, 45, 4], -1.0, 1.0, 142)];
    let mask = key_mask(2, 45, |b, j| (b + j) % 4 != 1);
    let out = check_masked_attention(dev, [&q, &k, &v], causal_padding(&mask), Some(0.8), DType::F64, 1e-13, "causal + padding rank 4");
    for h in 0..3 {
        let row = ((3 + h) * 37) * 4;
        assert!(out[row..row + 4].iter().all(|&x| x == 0.0), "batch 1, head {h}, query 0 has no key: its output must be exactly 0");
    }
}

// ---- causal mask: gradients ---------------------------------------------------------------------------

fn attention_gradcheck_causal_rank3_and_rank4_with_sq_eq_and_ne_sk(dev) {
    for (sq, sk, seed) in [(4, 4, 143), (3, 5, 146), (5, 3, 149)] {
        let [q, k, v] = [random(&[2, sq, 4], -1.0, 1.0, seed), random(&[2, sk, 4], -1.0, 1.0, seed + 1), random(&[2, sk, 3], -1.0, 1.0, seed + 2)];
        dev.assert_gradcheck(&format!("sdpa causal Sq {sq} Sk {sk}"), |t| sdpa_masked(t, CAUSAL, None), &[q, k, v]);
    }
    let [q, k, v] = [random(&[1, 2, 5, 3], -1.0, 1.0, 152), random(&[1, 2, 5, 3], -1.0, 1.0, 153), random(&[1, 2, 5, 2], -1.0, 1.0, 154)];
    dev.assert_gradcheck("sdpa causal rank 4 scale 1.3", |t| sdpa_masked(t, CAUSAL, Some(1.3)), &[q, k, v]);
}

fn attention_gradcheck_causal_with_key_padding_and_zero_gradient_where_nothing_is_seen(dev) {
    let [q, k, v] = [random(&[2, 2, 4, 3], -1.0, 1.0, 155), random(&[2, 2, 5, 3], -1.0, 1.0, 156), random(&[2, 2, 5, 2], -1.0, 1.0, 157)];
    // batch 0 pads keys 0 (so its query 0 sees no key) and 3; batch 1 key 2
    let mask = key_mask(2, 5, |b, j| if b == 0 { j != 0 && j != 3 } else { j != 2 });
    dev.assert_gradcheck("sdpa causal + padding", |t| sdpa_masked(t, causal_padding(&mask), Some(0.9)), &[q.clone(), k.clone(), v.clone()]);
    // exactly zero: dq of batch 0's query 0; dk and dv of the padded keys and of key 4, after
    // the last query
    let vars = [&q, &k, &v].map(|t| dev.put(t).variable());
    let out = sdpa_masked(&vars, causal_padding(&mask), None).unwrap();
    let r = dev.put(&random(out.shape(), -1.0, 1.0, 999));
    let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let grad_rows = |var: &Tensor, b: usize, row: usize| grads.get(var).unwrap().narrow(0, b, 1).unwrap().narrow(2, row, 1).unwrap().to_vec_f64();
    assert!(grad_rows(&vars[0], 0, 0).iter().all(|&x| x == 0.0), "dq of a query with no key");
    assert!(grad_rows(&vars[0], 1, 1).iter().any(|&x| x != 0.0), "dq of batch 1's query 1 must not vanish");
    for (name, var) in [("dk", &vars[1]), ("dv", &vars[2])] {
        for (b, j) in [(0, 0), (0, 3), (1, 2), (0, 4), (1, 4)] {
            assert!(grad_rows(var, b, j).iter().all(|&x| x == 0.0), "{name} of batch {b}, unseen key {j}");
        }
        assert!(grad_rows(var, 1, 3).iter().any(|&x| x != 0.0), "{name} of batch 1, key 3 must not vanish");
    }
}

fn attention_f32_causal_gradients_match_f64_gradients_across_tiles(dev) {
    for (sq, sk, seed) in [(70, 70, 158), (37, 70, 161), (70, 40, 164)] {
        let inputs = [random(&[2, 2, sq, 24], -1.0, 1.0, seed), random(&[2, 2, sk, 24], -1.0, 1.0, seed + 1), random(&[2, 2, sk, 16], -1.0, 1.0, seed + 2)];
        // batch 0 pads key 0 (its query 0 sees no key) and keys 30..36, across a tile edge
        let mask = key_mask(2, sk, |b, j| b == 1 || (j != 0 && !(30..36).contains(&j)));
        for (mask, what) in [(CAUSAL, "causal"), (causal_padding(&mask), "causal + padding")] {
            let g32 = attention_grads(dev, DType::F32, &inputs, mask, None);
            let g64 = attention_grads(TestDevice::CPU, DType::F64, &inputs, mask, None);
            for (name, (a, e)) in ["dq", "dk", "dv"].iter().zip(g32.iter().zip(&g64)) {
                let err = relative_error(a, e);
                assert!(err < dev.tolerance(1e-5), "{what} Sq {sq} Sk {sk}: f32 {name} relative error {err:.3e}");
            }
        }
    }
}

// ---- key mask: errors ---------------------------------------------------------------------------------

fn attention_rejects_a_key_mask_of_wrong_rank_shape_dtype_or_device(dev) {
    let [q, k, v] = [random(&[2, 3, 5, 4], -1.0, 1.0, 101), random(&[2, 3, 6, 4], -1.0, 1.0, 102), random(&[2, 3, 6, 2], -1.0, 1.0, 103)].map(|t| dev.put(&t));
    let sdpa = |mask: &Tensor| Tensor::scaled_dot_product_attention_masked(&q, &k, &v, padding(mask), None);
    let mask = |shape: &[usize]| dev.put(&Tensor::ones(shape, DType::F64));
    assert!(sdpa(&mask(&[2, 6])).is_ok());
    for shape in [&[2, 5][..], &[3, 6], &[6, 6], &[2, 1, 6], &[6], &[2, 3, 6]] {
        assert!(matches!(sdpa(&mask(shape)), Err(TensorError::ShapeMismatch { .. })), "mask {shape:?}");
    }
    // rank 2: no batch axis to index the mask with
    let [q2, k2, v2] = [&q, &k, &v].map(|t| t.reshape(&[t.shape()[0] * t.shape()[1] * t.shape()[2], t.shape()[3]]).unwrap().narrow(0, 0, 6).unwrap());
    let invalid = Tensor::scaled_dot_product_attention_masked(&q2, &k2, &v2, padding(&mask(&[6, 6])), None);
    assert!(matches!(invalid, Err(TensorError::InvalidArgument { .. })), "rank 2 with a mask: {invalid:?}");
    if !dev.is_cuda() {
        // (a CUDA device holds only f32)
        let f32_mask = mask(&[2, 6]).to_dtype(DType::F32).unwrap();
        assert!(matches!(sdpa(&f32_mask), Err(TensorError::DTypeMismatch { .. })), "dtype");
    }
    let other_device = if dev.is_cuda() { Some(Device::Cpu) } else { TestDevice::cuda().map(|d| d.0) };
    if let Some(other) = other_device {
        let elsewhere = Tensor::ones(&[2, 6], q.dtype()).to_device(other).unwrap();
        assert!(matches!(sdpa(&elsewhere), Err(TensorError::DeviceMismatch { .. })), "device");
    }
}
}

// ---- the CUDA kernels against the CPU kernels, with masks ------------------------------------------------

#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
mod kernels {
    use ember::tensor::cuda::DeviceBuffer;
    use ember::tensor::ops::attention::{AttentionShape, KeyMask, cpu, cuda};
    use ember::tensor::testing::random;

    /// f32 values of a seeded uniform draw in [low, high).
    fn values(n: usize, low: f64, high: f64, seed: u64) -> Vec<f32> {
        random(&[n], low, high, seed).to_vec_f64().iter().map(|&x| x as f32).collect()
    }

    /// Equal infinities at the same places, no NaN (the emulator's outputs start as NaN, so an
    /// entry no thread wrote shows), and the finite entries within `tolerance` of the largest.
    fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: length");
        let scale = expected.iter().filter(|x| x.is_finite()).fold(1e-30f32, |m, x| m.max(x.abs()));
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            let close = if e.is_finite() { (a - e).abs() <= tolerance * scale } else { a == e };
            assert!(close, "{what}: element {i} is {a}, expected {e}");
        }
    }

    #[test]
    fn masked_and_causal_flash_attention_forward_and_backward_match_the_cpu_kernels() {
        let Ok(device) = ember::tensor::cuda::device(0) else {
            eprintln!("no CUDA device in this build: the masked kernel check did not run");
            return;
        };
        // (shape without causality, heads, key-padding mask row b attends key j), each case run
        // without and with the causal mask
        type Attend = fn(usize, usize) -> bool;
        let shape = |bh, sq, sk, d, dv| AttentionShape { bh, sq, sk, d, dv, causal: false };
        let cases: [(AttentionShape, usize, Option<Attend>); 8] = [
            // batch 0 skips the first key tile; batch 1 has no key
            (shape(6, 37, 45, 17, 9), 3, Some(|b, j| b == 0 && j >= 32 && j != 40)),
            (shape(2, 64, 64, 32, 32), 1, Some(|b, j| (j * 7 + b) % 3 != 0)),
            // one key, the last, in batch 0
            (shape(4, 5, 100, 64, 64), 2, Some(|b, j| if b == 0 { j == 99 } else { j % 2 == 1 })),
            (shape(3, 1, 1, 1, 1), 1, Some(|b, _| b != 1)),
            // causal across tiles: Sq = Sk, Sq > Sk, Sq < Sk (keys 33.. seen by no query)
            (shape(2, 70, 70, 16, 8), 1, None),
            (shape(2, 70, 40, 16, 8), 1, None),
            (shape(2, 33, 70, 16, 8), 1, None),
            // with causal, batch 1's query 0 sees no key (key 0 padded)
            (shape(4, 70, 70, 8, 12), 2, Some(|b, j| if b == 0 { j < 50 } else { j != 0 && j != 33 })),
        ];
        for (case, (s, heads, attend)) in cases.into_iter().enumerate() {
            let seed = 200 + 10 * case as u64;
            let q = values(s.bh * s.sq * s.d, -2.0, 2.0, seed);
            let k = values(s.bh * s.sk * s.d, -2.0, 2.0, seed + 1);
            let v = values(s.bh * s.sk * s.dv, -1.0, 1.0, seed + 2);
            let d_out = values(s.bh * s.sq * s.dv, -1.0, 1.0, seed + 3);
            let mask: Option<Vec<f32>> = attend.map(|attend| (0..s.bh / heads * s.sk).map(|e| if attend(e / s.sk, e % s.sk) { 1.0 } else { 0.0 }).collect());
            let scale = 1.0 / (s.d as f32).sqrt();
            let upload = |data: &[f32]| DeviceBuffer::from_slice(&device, data).unwrap();
            let download = |buffer: &DeviceBuffer| buffer.to_vec::<f32>().unwrap();
            let (qb, kb, vb, mb) = (upload(&q), upload(&k), upload(&v), mask.as_deref().map(upload));
            for causal in [false, true] {
                let s = AttentionShape { causal, ..s };
                let cpu_mask = mask.as_deref().map(|values| KeyMask { values, heads });
                let (out, lse) = cpu::attention_forward(&q, &k, &v, cpu_mask, &s, scale);
                let (dq, dk, dv) = cpu::attention_backward(&q, &k, &v, cpu_mask, &out, &lse, &d_out, &s, scale);

                let gpu_mask = mb.as_ref().map(|values| KeyMask { values, heads });
                let (gout, glse) = cuda::attention_forward(&qb, &kb, &vb, gpu_mask, &s, scale as f64).unwrap();
                let (gdq, gdk, gdv) = cuda::attention_backward(&qb, &kb, &vb, gpu_mask, &gout, &glse, &upload(&d_out), &s, scale as f64).unwrap();
                let what = format!("attention {s:?}, {heads} heads, key mask {}", mask.is_some());
                assert_close(&download(&gout), &out, 1e-5, &what);
                assert_close(&download(&glse), &lse, 1e-5, &format!("{what} lse"));
                assert_close(&download(&gdq), &dq, 1e-5, &format!("{what} dq"));
                assert_close(&download(&gdk), &dk, 1e-5, &format!("{what} dk"));
                assert_close(&download(&gdv), &dv, 1e-5, &format!("{what} dv"));
                // the queries that see no key: out 0 and lse +∞ on both
                let sees = |b: usize, i: usize, j: usize| attend.is_none_or(|attend| attend(b / heads, j)) && !(causal && j > i);
                for (b, i) in (0..s.bh).flat_map(|b| (0..s.sq).map(move |i| (b, i))).filter(|&(b, i)| (0..s.sk).all(|j| !sees(b, i, j))) {
                    assert!(out[(b * s.sq + i) * s.dv..][..s.dv].iter().all(|&x| x == 0.0), "{what}: slice {b}, query {i}: out");
                    assert_eq!(lse[b * s.sq + i], f32::INFINITY, "{what}: slice {b}, query {i}: lse");
                }
            }
        }
    }
}
