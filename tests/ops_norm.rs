//! group_norm and layer_norm: forward values against naive f64 references (explicit loops over
//! groups/rows computing the mean and biased variance), over group counts 1, 2, C and in
//! between, ranks 1–4, one to three normalized axes, with and without weight/bias, strided
//! inputs, in f64 and f32; f64 finite-difference gradient checks for x, weight and bias (rows of
//! one element too), f32 gradients against f64 ones, layer_norm against its composition of
//! primitive ops, and the CPU kernels' dweight/dbias independent of the thread count. Every test
//! but the CPU kernels' own runs on each device of the build (`cpu::…`, `cuda::…`; f32 kernels
//! on a CUDA device).

#[macro_use]
mod common;

use common::TestDevice;
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Tensor};

const EPS: f64 = 1e-5;

// ---- naive references ----------------------------------------------------------------------------

/// Group norm of row-major `x [n, c, *spatial]`: for each sample and group of `c/groups`
/// channels, `(x − mean)/√(var + eps)` over the group's channels and positions (biased variance),
/// then `·weight[c] + bias[c]`.
fn naive_group_norm(x: &[f64], shape: &[usize], groups: usize, weight: Option<&[f64]>, bias: Option<&[f64]>, eps: f64) -> Vec<f64> {
    let (n, c) = (shape[0], shape[1]);
    let spatial: usize = shape[2..].iter().product();
    let per_group = c / groups;
    let mut y = vec![0.0; x.len()];
    for s in 0..n {
        for g in 0..groups {
            let channels = g * per_group..(g + 1) * per_group;
            let count = (per_group * spatial) as f64;
            let mut mean = 0.0;
            for ch in channels.clone() {
                for p in 0..spatial {
                    mean += x[(s * c + ch) * spatial + p];
                }
            }
            mean /= count;
            let mut var = 0.0;
            for ch in channels.clone() {
                for p in 0..spatial {
                    var += (x[(s * c + ch) * spatial + p] - mean).powi(2);
                }
            }
            var /= count;
            let inv_std = 1.0 / (var + eps).sqrt();
            for ch in channels {
                for p in 0..spatial {
                    let i = (s * c + ch) * spatial + p;
                    let mut v = (x[i] - mean) * inv_std;
                    if let Some(w) = weight {
                        v *= w[ch];
                    }
                    if let Some(b) = bias {
                        v += b[ch];
                    }
                    y[i] = v;
                }
            }
        }
    }
    y
}

/// Layer norm of row-major `x` over its trailing `row_len` elements (the normalized axes,
/// flattened): `(x − mean)/√(var + eps) · weight[j] + bias[j]`.
fn naive_layer_norm(x: &[f64], row_len: usize, weight: Option<&[f64]>, bias: Option<&[f64]>, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for r in 0..x.len() / row_len {
        let row = &x[r * row_len..(r + 1) * row_len];
        let mut mean = 0.0;
        for &v in row {
            mean += v;
        }
        mean /= row_len as f64;
        let mut var = 0.0;
        for &v in row {
            var += (v - mean) * (v - mean);
        }
        var /= row_len as f64;
        let inv_std = 1.0 / (var + eps).sqrt();
        for j in 0..row_len {
            let mut v = (row[j] - mean) * inv_std;
            if let Some(w) = weight {
                v *= w[j];
            }
            if let Some(b) = bias {
                v += b[j];
            }
            y[r * row_len + j] = v;
        }
    }
    y
}

/// Group norm of `x` in `dtype` on `dev` against the f64 reference.
fn check_group_norm(dev: TestDevice, x: &Tensor, groups: usize, affine: (bool, bool), dtype: DType, tolerance: f64, seed: u64) {
    let (dtype, tolerance) = (dev.dtype(dtype), dev.tolerance(tolerance));
    let c = x.shape()[1];
    let w = random(&[c], 0.5, 1.5, seed);
    let b = random(&[c], -1.0, 1.0, seed + 1);
    let (wv, bv) = (w.to_vec_f64(), b.to_vec_f64());
    let expected = naive_group_norm(&x.to_vec_f64(), x.shape(), groups, affine.0.then_some(&wv[..]), affine.1.then_some(&bv[..]), EPS);
    // a view already on the device is used as it is (its strides kept)
    let xd = if dev.is_cuda() && x.device() == dev.0 { x.clone() } else { dev.put(&x.to_dtype(dtype).unwrap()) };
    let [wd, bd] = [&w, &b].map(|t| dev.put(&t.to_dtype(dtype).unwrap()));
    let y = xd.group_norm(groups, affine.0.then_some(&wd), affine.1.then_some(&bd), EPS).unwrap();
    let what = format!("group_norm {:?} groups {groups} affine {affine:?} ({dtype:?})", x.shape());
    assert_eq!(y.shape(), x.shape(), "{what}: shape");
    assert_eq!(y.dtype(), dtype, "{what}: dtype");
    let err = relative_error(&y.to_vec_f64(), &expected);
    assert!(err < tolerance, "{what}: relative error {err:.3e}");
}

/// Layer norm of `x` in `dtype` on `dev` against the f64 reference.
fn check_layer_norm(dev: TestDevice, x: &Tensor, normalized: &[usize], affine: (bool, bool), dtype: DType, tolerance: f64, seed: u64) {
    let (dtype, tolerance) = (dev.dtype(dtype), dev.tolerance(tolerance));
    let w = random(normalized, 0.5, 1.5, seed);
    let b = random(normalized, -1.0, 1.0, seed + 1);
    let (wv, bv) = (w.to_vec_f64(), b.to_vec_f64());
    let row_len: usize = normalized.iter().product();
    let expected = naive_layer_norm(&x.to_vec_f64(), row_len, affine.0.then_some(&wv[..]), affine.1.then_some(&bv[..]), EPS);
    // a view already on the device is used as it is (its strides kept)
    let xd = if dev.is_cuda() && x.device() == dev.0 { x.clone() } else { dev.put(&x.to_dtype(dtype).unwrap()) };
    let [wd, bd] = [&w, &b].map(|t| dev.put(&t.to_dtype(dtype).unwrap()));
    let y = xd.layer_norm(normalized, affine.0.then_some(&wd), affine.1.then_some(&bd), EPS).unwrap();
    let what = format!("layer_norm {:?} over {normalized:?} affine {affine:?} ({dtype:?})", x.shape());
    assert_eq!(y.shape(), x.shape(), "{what}: shape");
    assert_eq!(y.dtype(), dtype, "{what}: dtype");
    let err = relative_error(&y.to_vec_f64(), &expected);
    assert!(err < tolerance, "{what}: relative error {err:.3e}");
}

const AFFINES: [(bool, bool); 4] = [(false, false), (true, true), (true, false), (false, true)];

per_device! {
// ---- group_norm forward ------------------------------------------------------------------------------

fn group_norm_rank4_f64_matches_reference_for_groups_1_2_3_c_with_and_without_affine(dev) {
    let x = random(&[3, 6, 5, 7], -2.0, 3.0, 1);
    for (i, groups) in [1, 2, 3, 6].into_iter().enumerate() {
        for (j, affine) in AFFINES.into_iter().enumerate() {
            check_group_norm(dev, &x, groups, affine, DType::F64, 1e-13, 10 * i as u64 + j as u64);
        }
    }
}

fn group_norm_rank3_and_rank2_f64_match_reference(dev) {
    let x = random(&[2, 4, 9], -1.0, 2.0, 2);
    for groups in [1, 2, 4] {
        check_group_norm(dev, &x, groups, (true, true), DType::F64, 1e-13, 3);
        check_group_norm(dev, &x, groups, (false, false), DType::F64, 1e-13, 3);
    }
    let x = random(&[5, 6], -1.0, 2.0, 4);
    check_group_norm(dev, &x, 2, (true, true), DType::F64, 1e-13, 5);
    check_group_norm(dev, &x, 3, (false, true), DType::F64, 1e-13, 5);
}

fn group_norm_with_batch_1_and_one_channel_matches_reference(dev) {
    let x = random(&[1, 1, 7, 3], -1.0, 1.0, 6);
    check_group_norm(dev, &x, 1, (true, true), DType::F64, 1e-13, 7);
    let x = random(&[1, 7, 1, 1], -1.0, 1.0, 8); // groups of 7 channels × 1 position
    check_group_norm(dev, &x, 1, (true, false), DType::F64, 1e-13, 9);
}

fn group_norm_f32_on_larger_odd_shapes_matches_reference(dev) {
    let x = random(&[2, 33, 17, 19], -2.0, 3.0, 10);
    for groups in [1, 3, 11, 33] {
        check_group_norm(dev, &x, groups, (true, true), DType::F32, 1e-5, 11);
    }
    let x = random(&[3, 64, 9, 7], -2.0, 3.0, 12); // a UNet-like 32 groups of 2 channels
    check_group_norm(dev, &x, 32, (true, true), DType::F32, 1e-5, 13);
}

fn group_norm_f32_stays_accurate_when_a_group_varies_little_around_a_large_mean(dev) {
    // One element per group: x̂ = 0 and y = bias exactly, while x·(rstd·w) is ~1000 (rstd =
    // 1/√eps); computing y as x·scale + (b − μ·scale) cancels those and leaves ~1e-4 of
    // rounding (a GPU's fused multiply-adds found it), (x − μ)·scale + b does not.
    let x = random(&[3, 32, 1, 1], 2.0, 5.0, 50);
    check_group_norm(dev, &x, 32, (true, true), DType::F32, 1e-6, 51);
}

fn group_norm_of_a_strided_view_matches_reference_on_its_values(dev) {
    let base = dev.put(&random(&[2, 5, 4, 6], -1.0, 2.0, 14)); // [N, H, C, W]
    let x = base.permute(&[0, 2, 1, 3]).unwrap(); // [N, C, H, W]
    assert!(!x.is_contiguous());
    check_group_norm(dev, &x, 2, (true, true), DType::F64, 1e-13, 15);
    check_group_norm(dev, &x, 4, (false, false), DType::F32, 1e-5, 16);
    let narrowed = dev.put(&random(&[2, 6, 5, 9], -1.0, 2.0, 17)).narrow(3, 2, 5).unwrap();
    check_group_norm(dev, &narrowed, 3, (true, true), DType::F64, 1e-13, 18);
}

fn group_norm_without_affine_gives_zero_mean_unit_variance_groups(dev) {
    let x = dev.put(&random(&[2, 6, 4, 5], 3.0, 9.0, 19));
    let y = x.group_norm(3, None, None, 0.0).unwrap().to_vec_f64();
    let group_len = 2 * 4 * 5;
    for group in y.chunks(group_len) {
        let mean = group.iter().sum::<f64>() / group_len as f64;
        let var = group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / group_len as f64;
        assert!(mean.abs() < dev.tolerance(1e-14), "mean {mean}");
        assert!((var - 1.0).abs() < dev.tolerance(1e-12), "var {var}");
    }
}

// ---- layer_norm forward ------------------------------------------------------------------------------

fn layer_norm_over_last_axis_f64_matches_reference_with_and_without_weight_bias(dev) {
    let x = random(&[4, 7, 33], -2.0, 3.0, 21);
    for (j, affine) in AFFINES.into_iter().enumerate() {
        check_layer_norm(dev, &x, &[33], affine, DType::F64, 1e-13, 22 + j as u64);
    }
    let x = random(&[33], -2.0, 3.0, 23); // rank 1: one row
    check_layer_norm(dev, &x, &[33], (true, true), DType::F64, 1e-13, 24);
    let x = random(&[5, 1, 7], -2.0, 3.0, 25);
    check_layer_norm(dev, &x, &[7], (true, true), DType::F64, 1e-13, 26);
}

fn layer_norm_over_last_two_axes_f64_matches_reference_with_and_without_weight_bias(dev) {
    let x = random(&[4, 7, 9], -2.0, 3.0, 31);
    for (j, affine) in AFFINES.into_iter().enumerate() {
        check_layer_norm(dev, &x, &[7, 9], affine, DType::F64, 1e-13, 32 + j as u64);
    }
    let x = random(&[2, 3, 5, 7], -2.0, 3.0, 33);
    check_layer_norm(dev, &x, &[5, 7], (true, true), DType::F64, 1e-13, 34);
    check_layer_norm(dev, &x, &[3, 5, 7], (true, false), DType::F64, 1e-13, 35);
}

fn layer_norm_f32_on_larger_odd_shapes_matches_reference(dev) {
    let x = random(&[65, 257], -2.0, 3.0, 36);
    check_layer_norm(dev, &x, &[257], (true, true), DType::F32, 1e-5, 37);
    let x = random(&[9, 33, 17], -2.0, 3.0, 38);
    check_layer_norm(dev, &x, &[33, 17], (true, true), DType::F32, 1e-5, 39);
    check_layer_norm(dev, &x, &[17], (false, false), DType::F32, 1e-5, 40);
}

fn layer_norm_of_a_strided_view_matches_reference_on_its_values(dev) {
    let x = dev.put(&random(&[7, 5, 3], -1.0, 2.0, 41)).transpose(0, 2).unwrap(); // [3, 5, 7]
    assert!(!x.is_contiguous());
    check_layer_norm(dev, &x, &[7], (true, true), DType::F64, 1e-13, 42);
    check_layer_norm(dev, &x, &[5, 7], (true, true), DType::F64, 1e-13, 43);
    check_layer_norm(dev, &x, &[5, 7], (false, false), DType::F32, 1e-5, 44);
}

fn layer_norm_of_rows_with_a_large_common_offset_stays_accurate(dev) {
    // values 1000 ± 1: the mean is subtracted before squaring, so no catastrophic cancellation
    let x = random(&[5, 33], 999.0, 1001.0, 45);
    // f32 on a CUDA device: 1000 ± 1 holds only ~6e-5 (an ulp of 1000) of each value and the f32
    // row mean is off by as much, divided by the row's std ≈ 0.58: ~1e-4 of error in any f32
    // kernel (the CPU's f32 path gives 7.4e-5 here, the CUDA one 1.1e-4); a var computed as
    // E[x²] − E[x]² in f32 would be off by percents.
    let tolerance = if dev.is_cuda() { 3e-4 } else { 1e-10 };
    check_layer_norm(dev, &x, &[33], (true, true), DType::F64, tolerance, 46);
}

// ---- gradients ----------------------------------------------------------------------------------------

fn group_norm_gradcheck_x_weight_bias_for_groups_1_2_and_c(dev) {
    let x = random(&[2, 4, 3, 5], -1.0, 2.0, 51);
    let w = random(&[4], 0.5, 1.5, 52);
    let b = random(&[4], -1.0, 1.0, 53);
    for groups in [1, 2, 4] {
        dev.assert_gradcheck(
            &format!("group_norm groups {groups}"),
            |t| t[0].group_norm(groups, Some(&t[1]), Some(&t[2]), EPS),
            &[x.clone(), w.clone(), b.clone()],
        );
    }
}

fn group_norm_gradcheck_without_affine_and_with_weight_only(dev) {
    let x = random(&[3, 6, 7], -1.0, 2.0, 54);
    dev.assert_gradcheck("group_norm no affine rank 3", |t| t[0].group_norm(3, None, None, EPS), std::slice::from_ref(&x));
    let w = random(&[6], 0.5, 1.5, 55);
    dev.assert_gradcheck("group_norm weight only rank 3", |t| t[0].group_norm(2, Some(&t[1]), None, EPS), &[x, w]);
}

fn group_norm_gradcheck_rank3_with_odd_sizes(dev) {
    let x = random(&[1, 7, 5], -1.0, 2.0, 56);
    let w = random(&[7], 0.5, 1.5, 57);
    let b = random(&[7], -1.0, 1.0, 58);
    dev.assert_gradcheck("group_norm [1,7,5] groups 7", |t| t[0].group_norm(7, Some(&t[1]), Some(&t[2]), EPS), &[x.clone(), w.clone(), b.clone()]);
    dev.assert_gradcheck("group_norm [1,7,5] groups 1", |t| t[0].group_norm(1, Some(&t[1]), Some(&t[2]), EPS), &[x, w, b]);
}

fn group_norm_gradcheck_through_a_permuted_input(dev) {
    let x = random(&[2, 3, 4, 5], -1.0, 2.0, 59); // [N, H, C, W]
    let w = random(&[4], 0.5, 1.5, 60);
    let b = random(&[4], -1.0, 1.0, 61);
    dev.assert_gradcheck("group_norm permuted", |t| t[0].permute(&[0, 2, 1, 3])?.group_norm(2, Some(&t[1]), Some(&t[2]), EPS), &[x, w, b]);
}

fn layer_norm_gradcheck_x_weight_bias_over_last_axis(dev) {
    let x = random(&[3, 2, 7], -1.0, 2.0, 62);
    let w = random(&[7], 0.5, 1.5, 63);
    let b = random(&[7], -1.0, 1.0, 64);
    dev.assert_gradcheck("layer_norm [7]", |t| t[0].layer_norm(&[7], Some(&t[1]), Some(&t[2]), EPS), &[x.clone(), w.clone(), b]);
    dev.assert_gradcheck("layer_norm [7] no affine", |t| t[0].layer_norm(&[7], None, None, EPS), std::slice::from_ref(&x));
    dev.assert_gradcheck("layer_norm [7] weight only", |t| t[0].layer_norm(&[7], Some(&t[1]), None, EPS), &[x, w]);
}

fn layer_norm_gradcheck_x_weight_bias_over_last_two_axes(dev) {
    let x = random(&[3, 5, 4], -1.0, 2.0, 65);
    let w = random(&[5, 4], 0.5, 1.5, 66);
    let b = random(&[5, 4], -1.0, 1.0, 67);
    dev.assert_gradcheck("layer_norm [5,4]", |t| t[0].layer_norm(&[5, 4], Some(&t[1]), Some(&t[2]), EPS), &[x.clone(), w, b.clone()]);
    dev.assert_gradcheck("layer_norm [5,4] bias only", |t| t[0].layer_norm(&[5, 4], None, Some(&t[1]), EPS), &[x, b]);
}

fn layer_norm_gradcheck_through_strided_input_and_weight(dev) {
    let x = random(&[5, 3, 4], -1.0, 2.0, 68); // transposed to [4, 3, 5]
    let w = random(&[5, 2], 0.5, 1.5, 69); // narrowed to [5]
    let b = random(&[5], -1.0, 1.0, 70);
    dev.assert_gradcheck(
        "layer_norm strided",
        |t| t[0].transpose(0, 2)?.layer_norm(&[5], Some(&t[1].narrow(1, 1, 1)?.reshape(&[5])?), Some(&t[2]), EPS),
        &[x.clone(), w, b],
    );
    dev.assert_gradcheck("layer_norm strided, two axes", |t| t[0].permute(&[2, 0, 1])?.layer_norm(&[5, 3], None, None, EPS), &[x]);
}

fn norm_f32_gradients_match_f64_gradients_on_larger_odd_shapes(dev) {
    let inputs = [random(&[2, 33, 9, 7], -2.0, 3.0, 71), random(&[33], 0.5, 1.5, 72), random(&[33], -1.0, 1.0, 73)];
    let f = |t: &[Tensor]| t[0].group_norm(3, Some(&t[1]), Some(&t[2]), EPS);
    // the reference: the f64 gradients on the CPU
    for (i, (a, e)) in dev.grads_in(DType::F32, &inputs, f).iter().zip(&TestDevice::CPU.grads_in(DType::F64, &inputs, f)).enumerate() {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "group_norm input {i}: f32 gradient relative error {err:.3e}");
    }
    let inputs = [random(&[17, 65], -2.0, 3.0, 74), random(&[65], 0.5, 1.5, 75), random(&[65], -1.0, 1.0, 76)];
    let f = |t: &[Tensor]| t[0].layer_norm(&[65], Some(&t[1]), Some(&t[2]), EPS);
    // the reference: the f64 gradients on the CPU
    for (i, (a, e)) in dev.grads_in(DType::F32, &inputs, f).iter().zip(&TestDevice::CPU.grads_in(DType::F64, &inputs, f)).enumerate() {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "layer_norm input {i}: f32 gradient relative error {err:.3e}");
    }
}

fn layer_norm_gradcheck_over_three_axes_of_one_row_and_of_one_element_rows(dev) {
    let x = random(&[2, 3, 2, 4], -1.0, 2.0, 77);
    let w = random(&[3, 2, 4], 0.5, 1.5, 78);
    let b = random(&[3, 2, 4], -1.0, 1.0, 79);
    dev.assert_gradcheck("layer_norm [3,2,4]", |t| t[0].layer_norm(&[3, 2, 4], Some(&t[1]), Some(&t[2]), EPS), &[x, w, b]);
    let x = random(&[9], -1.0, 2.0, 80); // rank 1: one row
    let w = random(&[9], 0.5, 1.5, 81);
    let b = random(&[9], -1.0, 1.0, 82);
    dev.assert_gradcheck("layer_norm one row", |t| t[0].layer_norm(&[9], Some(&t[1]), Some(&t[2]), EPS), &[x, w, b]);
    // rows of one element: x̂ = 0 and y = bias whatever x, so dx and dweight are exactly 0
    // (g − mean(g) must cancel exactly: rstd = 1/√eps would magnify any rounding)
    let x = random(&[4, 1], -1.0, 2.0, 83);
    let w = random(&[1], 0.5, 1.5, 84);
    let b = random(&[1], -1.0, 1.0, 85);
    dev.assert_gradcheck("layer_norm rows of one", |t| t[0].layer_norm(&[1], Some(&t[1]), Some(&t[2]), EPS), &[x, w, b]);
}

fn layer_norm_f32_gradients_match_f64_over_many_rows_and_a_transposed_input(dev) {
    // 300 rows of 96: several chunks of rows in the dweight and dbias sums, the last one short
    let inputs = [random(&[2, 96, 150], -2.0, 3.0, 86), random(&[96], 0.5, 1.5, 87), random(&[96], -1.0, 1.0, 88)];
    let f = |t: &[Tensor]| t[0].transpose(1, 2)?.layer_norm(&[96], Some(&t[1]), Some(&t[2]), EPS);
    for (i, (a, e)) in dev.grads_in(DType::F32, &inputs, f).iter().zip(&TestDevice::CPU.grads_in(DType::F64, &inputs, f)).enumerate() {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "layer_norm input {i}: f32 gradient relative error {err:.3e}");
    }
}

/// The fused kernels against layer norm composed of primitive ops (mean, sub, sqr, powf, mul,
/// add), which autograd differentiates part by part: values and gradients.
fn layer_norm_equals_its_composition_of_primitive_ops_forward_and_backward(dev) {
    let x = random(&[3, 4, 5, 6], -2.0, 3.0, 89);
    let (w, b) = (random(&[5, 6], 0.5, 1.5, 97), random(&[5, 6], -1.0, 1.0, 98));
    let composed = |t: &[Tensor]| {
        let centered = t[0].sub(&t[0].mean(&[-2, -1], true)?)?;
        let rstd = centered.sqr()?.mean(&[-2, -1], true)?.add_scalar(EPS)?.powf(-0.5)?;
        centered.mul(&rstd)?.mul(&t[1])?.add(&t[2])
    };
    let fused = |t: &[Tensor]| t[0].layer_norm(&[5, 6], Some(&t[1]), Some(&t[2]), EPS);
    let dtype = dev.dtype(DType::F64);
    let vars: Vec<Tensor> = [&x, &w, &b].iter().map(|t| dev.put(t)).collect();
    let err = relative_error(&fused(&vars).unwrap().to_vec_f64(), &composed(&vars).unwrap().to_vec_f64());
    assert!(err < dev.tolerance(1e-13), "layer_norm against its composition: relative error {err:.3e}");
    let inputs = [x, w, b];
    for (i, (a, e)) in dev.grads_in(dtype, &inputs, fused).iter().zip(&dev.grads_in(dtype, &inputs, composed)).enumerate() {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-12), "layer_norm input {i}: gradient against the composition's, relative error {err:.3e}");
    }
}

/// The fused op through the public API on each device (the CPU-only test below checks the CPU
/// kernel functions themselves): the same values as the two ops, and its own gradient check.
fn group_norm_silu_equals_group_norm_then_silu_and_gradient_checks(dev) {
    let x = random(&[2, 6, 3, 5], -2.0, 3.0, 94);
    let (w, b) = (random(&[6], 0.5, 1.5, 95), random(&[6], -1.0, 1.0, 96));
    let [xd, wd, bd] = [&x, &w, &b].map(|t| dev.put(t));
    let fused = xd.group_norm_silu(3, Some(&wd), Some(&bd), EPS).unwrap().to_vec_f64();
    let two_ops = xd.group_norm(3, Some(&wd), Some(&bd), EPS).unwrap().silu().unwrap().to_vec_f64();
    let err = relative_error(&fused, &two_ops);
    assert!(err < dev.tolerance(1e-12), "group_norm_silu against group_norm then silu: relative error {err:.3e}");
    let h = naive_group_norm(&x.to_vec_f64(), x.shape(), 3, Some(&w.to_vec_f64()), Some(&b.to_vec_f64()), EPS);
    let expected: Vec<f64> = h.iter().map(|h| h / (1.0 + (-h).exp())).collect();
    let err = relative_error(&fused, &expected);
    assert!(err < dev.tolerance(1e-13), "group_norm_silu against the f64 reference: relative error {err:.3e}");
    dev.assert_gradcheck("group_norm_silu", |t| t[0].group_norm_silu(3, Some(&t[1]), Some(&t[2]), EPS), &[x, w, b]);
}
}

// ---- the fused group norm + SiLU kernel (the CUDA kernel's reference) ------------------------

/// The fused CPU kernel against the two ops with autograd, forward and backward, in f64.
// CPU-only: calls the CPU kernel functions (ops::norm::cpu) directly and checks them to 1e-12 in f64.
#[test]
fn the_fused_group_norm_silu_kernel_equals_group_norm_then_silu_in_f64() {
    use ember::tensor::ops::norm::GroupNormShape;
    use ember::tensor::ops::norm::cpu::{group_norm_backward, group_norm_forward};
    let x = random(&[2, 6, 3, 5], -2.0, 3.0, 90);
    let (w, b) = (random(&[6], 0.5, 1.5, 91), random(&[6], -1.0, 1.0, 92));
    let dy = random(&[2, 6, 3, 5], -1.0, 1.0, 93);
    let shape = GroupNormShape { n: 2, channels: 6, groups: 3, positions: 15 };
    let (xv, wv, bv, dyv) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap(), dy.to_vec::<f64>().unwrap());
    let (y, mean, rstd) = group_norm_forward(&xv, &wv, &bv, &shape, EPS, true);
    let (dx, dw, db) = group_norm_backward(&xv, &dyv, &wv, &bv, &mean, &rstd, &shape, true);

    let (xs, ws, bs) = (x.variable(), w.variable(), b.variable());
    let two_ops = xs.group_norm(3, Some(&ws), Some(&bs), EPS).unwrap().silu().unwrap();
    let grads = two_ops.mul(&dy).unwrap().sum_all().unwrap().backward().unwrap();
    for (what, fused, reference) in [
        ("y", y, two_ops.to_vec_f64()),
        ("dx", dx, grads.get(&xs).unwrap().to_vec_f64()),
        ("dweight", dw, grads.get(&ws).unwrap().to_vec_f64()),
        ("dbias", db, grads.get(&bs).unwrap().to_vec_f64()),
    ] {
        let error = relative_error(&fused, &reference);
        assert!(error < 1e-12, "{what}: relative error {error:e}");
    }
}

// ---- the layer norm's CPU kernels ----------------------------------------------------------------

/// dweight and dbias are sums over the rows; the kernel adds per-chunk partial sums in a fixed
/// order, so one thread and many give the same bits.
// CPU-only: runs the CPU kernel functions (ops::norm::cpu) in rayon pools of different sizes.
#[test]
fn the_layer_norm_cpu_backward_gives_the_same_bits_on_one_thread_and_four() {
    use ember::tensor::ops::norm::cpu::{layer_norm_backward, layer_norm_forward};
    let (rows, cols) = (1000, 33);
    let [x, dy] = [1, 2].map(|seed| random(&[rows, cols], -2.0, 3.0, 100 + seed).to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap());
    let [w, b] = [3, 4].map(|seed| random(&[cols], 0.5, 1.5, 100 + seed).to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap());
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (y, mean, rstd) = layer_norm_forward(&x, &w, &b, rows, cols, EPS);
            let (dx, dw, db) = layer_norm_backward(&x, &dy, &w, &mean, &rstd, rows, cols);
            [y, mean, rstd, dx, dw, db].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
        })
    };
    let (one, four) = (run(1), run(4));
    for (what, (a, b)) in ["y", "mean", "rstd", "dx", "dweight", "dbias"].iter().zip(one.iter().zip(&four)) {
        assert!(a == b, "{what} differs between one thread and four");
    }
}
