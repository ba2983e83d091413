//! scaled_dot_product_attention: forward values against a naive f64 reference (per batch/head:
//! scores, a max-subtracted softmax, the weighted sum — index loops written here), with explicit
//! and default (1/√d) scales, Sq ≠ Sk, Dv ≠ D, ranks 2, 3 and 4, sizes of 1 and odd sizes; f32 on
//! a larger case; f64 finite-difference gradient checks for q, k and v, including the strided
//! q/k/v a UNet passes (a [B, S, H, D] tensor transposed to [B, H, S, D]). Every test runs on
//! each device of the build (`cpu::…`, `cuda::…`; f32 kernels on a CUDA device).

#[macro_use]
mod common;

use common::TestDevice;
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Result, Tensor};

// ---- naive reference -----------------------------------------------------------------------------

/// `softmax(scale · q·kᵀ) · v` for row-major `q [bh, sq, d]`, `k [bh, sk, d]`, `v [bh, sk, dv]`.
/// `dims` = `[bh, sq, sk, d, dv]`.
fn naive_attention(q: &[f64], k: &[f64], v: &[f64], dims: [usize; 5], scale: f64) -> Vec<f64> {
    let [bh, sq, sk, d, dv] = dims;
    let mut out = vec![0.0; bh * sq * dv];
    for b in 0..bh {
        for i in 0..sq {
            let mut scores = vec![0.0; sk];
            for (j, s) in scores.iter_mut().enumerate() {
                let mut acc = 0.0;
                for e in 0..d {
                    acc += q[(b * sq + i) * d + e] * k[(b * sk + j) * d + e];
                }
                *s = scale * acc;
            }
            let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
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
    let (dtype, tolerance) = (dev.dtype(dtype), dev.tolerance(tolerance));
    let rank = q.rank();
    let lead = &q.shape()[..rank - 2];
    let bh: usize = lead.iter().product();
    let (sq, d) = (q.shape()[rank - 2], q.shape()[rank - 1]);
    let (sk, dv) = (k.shape()[rank - 2], v.shape()[rank - 1]);
    let effective_scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let expected = naive_attention(&q.to_vec_f64(), &k.to_vec_f64(), &v.to_vec_f64(), [bh, sq, sk, d, dv], effective_scale);
    // a view already on the device is used as it is (its strides kept)
    let [qd, kd, vd] = [q, k, v].map(|t| if dev.is_cuda() && t.device() == dev.0 { t.clone() } else { dev.put(&t.to_dtype(dtype).unwrap()) });
    let out = Tensor::scaled_dot_product_attention(&qd, &kd, &vd, scale).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut expected_shape = lead.to_vec();
    expected_shape.extend([sq, dv]);
    assert_eq!(out.shape(), expected_shape, "{what}: output shape");
    assert_eq!(out.dtype(), dtype, "{what}: dtype");
    let values = out.to_vec_f64();
    assert!(values.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let err = relative_error(&values, &expected);
    assert!(err < tolerance, "{what} ({dtype:?}): relative error {err:.3e}");
}

fn sdpa(t: &[Tensor], scale: Option<f64>) -> Result<Tensor> {
    Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], scale)
}

/// The gradients (of `Σ out ⊙ r` for a fixed random `r`) of q, k, v, in `dtype` on `dev`.
fn attention_grads(dev: TestDevice, dtype: DType, inputs: &[Tensor], scale: Option<f64>) -> Vec<Vec<f64>> {
    let vars: Vec<Tensor> = inputs.iter().map(|t| dev.put(&t.to_dtype(dtype).unwrap()).variable()).collect();
    let out = sdpa(&vars, scale).unwrap();
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
    let (g32, g64) = (attention_grads(dev, DType::F32, &inputs, None), attention_grads(TestDevice::CPU, DType::F64, &inputs, None));
    for (name, (a, e)) in ["dq", "dk", "dv"].iter().zip(g32.iter().zip(&g64)) {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "{name}: f32 gradient relative error {err:.3e}");
    }
}

fn attention_gradient_of_q_alone_matches_the_full_backward(dev) {
    // k, v constants (no gradient wanted): only dq comes back, equal to the all-variable dq
    let inputs = [random(&[2, 5, 3], -1.0, 1.0, 66), random(&[2, 4, 3], -1.0, 1.0, 67), random(&[2, 4, 6], -1.0, 1.0, 68)];
    // (the full backward on the same device, so that the two must agree exactly)
    let full = attention_grads(dev, DType::F64, &inputs, None);
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
}
