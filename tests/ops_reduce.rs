//! Reductions (sum, mean, max, var, sum_all, mean_all, sum_to_shape): forward values against
//! naive f64 loops over every axis set (single, multiple, negative, all), with and without
//! keepdim, on contiguous and strided inputs, in f64 and f32; gradient checks in f64. Every test
//! runs on each device of the build (`cpu::…`, `cuda::…`; f32 kernels on a CUDA device).

#[macro_use]
mod common;

use common::*;
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Result, Tensor, TensorError};

// ---- naive helpers ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sum,
    Mean,
    Max,
    Var(usize),
}

/// The reduction of `values` (row-major, `shape`) over `axes` (possibly negative; empty = all),
/// by loops: returns (values, shape).
fn naive_reduce(values: &[f64], shape: &[usize], axes: &[isize], keepdim: bool, kind: Kind) -> (Vec<f64>, Vec<usize>) {
    let rank = shape.len() as isize;
    let reduced: Vec<bool> = (0..shape.len()).map(|i| axes.is_empty() || axes.iter().any(|&a| (if a < 0 { a + rank } else { a }) == i as isize)).collect();
    let kept_shape: Vec<usize> = shape.iter().zip(&reduced).map(|(&n, &r)| if r { 1 } else { n }).collect();
    let count: usize = shape.iter().zip(&reduced).filter(|(_, r)| **r).map(|(&n, _)| n).product();
    let out_index_of = |flat: usize| {
        let index = unravel(flat, shape);
        let kept: Vec<usize> = index.iter().zip(&reduced).map(|(&i, &r)| if r { 0 } else { i }).collect();
        ravel(&kept, &kept_shape)
    };
    let mut sums = vec![0.0; numel(&kept_shape)];
    let mut maxes = vec![f64::NEG_INFINITY; numel(&kept_shape)];
    for (flat, &v) in values.iter().enumerate() {
        let o = out_index_of(flat);
        sums[o] += v;
        maxes[o] = maxes[o].max(v);
    }
    let out = match kind {
        Kind::Sum => sums,
        Kind::Mean => sums.iter().map(|s| s / count as f64).collect(),
        Kind::Max => maxes,
        Kind::Var(correction) => {
            let means: Vec<f64> = sums.iter().map(|s| s / count as f64).collect();
            let mut squares = vec![0.0; means.len()];
            for (flat, &v) in values.iter().enumerate() {
                let o = out_index_of(flat);
                squares[o] += (v - means[o]) * (v - means[o]);
            }
            squares.iter().map(|s| s / (count - correction) as f64).collect()
        }
    };
    let out_shape = if keepdim { kept_shape } else { shape.iter().zip(&reduced).filter(|(_, r)| !**r).map(|(&n, _)| n).collect() };
    (out, out_shape)
}

#[track_caller]
fn assert_values(actual: &Tensor, expected: &[f64], shape: &[usize], tolerance: f64, what: &str) {
    assert_eq!(actual.shape(), shape, "{what}: shape");
    let values = actual.to_vec_f64();
    assert!(values.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let err = relative_error(&values, expected);
    assert!(err < tolerance, "{what}: relative error {err:.3e} >= {tolerance:.1e}\n got {values:?}\nwant {expected:?}");
}

fn apply(t: &Tensor, axes: &[isize], keepdim: bool, kind: Kind) -> Result<Tensor> {
    match kind {
        Kind::Sum => t.sum(axes, keepdim),
        Kind::Mean => t.mean(axes, keepdim),
        Kind::Max => t.max(axes, keepdim),
        Kind::Var(correction) => t.var(axes, keepdim, correction),
    }
}

/// Axis sets over a rank-3 tensor: single, negative, multiple (adjacent and not), all.
const AXIS_SETS: [&[isize]; 10] = [&[0], &[1], &[2], &[-1], &[-3], &[0, 2], &[2, 0], &[-3, -1], &[1, 2], &[0, 1, 2]];

/// Proves one reduction: f64 forward over every axis set with and without keepdim, on a
/// contiguous [3,5,7], a permuted view and a narrowed view; the all-axes (empty) form; f32
/// forward on a bigger odd tensor (contiguous and transposed); gradchecks on contiguous and
/// strided inputs for several axis sets and both keepdims; all on `dev`.
fn check_reduce(dev: TestDevice, kind: Kind) {
    let what = format!("{kind:?}");
    let shape = [3, 5, 7];
    let x = dev.put(&random(&shape, -2.0, 2.0, 1));
    let xv = x.to_vec_f64();
    // permuted view: base [7,3,5] -> [5,7,3]; narrowed view: base [3,9,7] -> [3,5,7]
    let base_p = dev.put(&random(&[7, 3, 5], -2.0, 2.0, 2));
    let (permuted, pv) = (base_p.permute(&[2, 0, 1]).unwrap(), naive_permute(&base_p.to_vec_f64(), &[7, 3, 5], &[2, 0, 1]));
    let base_n = dev.put(&random(&[3, 9, 7], -2.0, 2.0, 3));
    let (narrowed, nv) = (base_n.narrow(1, 2, 5).unwrap(), naive_narrow(&base_n.to_vec_f64(), &[3, 9, 7], 1, 2, 5));
    assert!(!permuted.is_contiguous() && !narrowed.is_contiguous());

    for axes in AXIS_SETS.iter().copied().chain([&[][..]]) {
        for keepdim in [false, true] {
            for (input, values, name) in [(&x, &xv, "contiguous"), (&permuted, &pv, "permuted"), (&narrowed, &nv, "narrowed")] {
                let (expected, out_shape) = naive_reduce(values, input.shape(), axes, keepdim, kind);
                let out = apply(input, axes, keepdim, kind).unwrap();
                assert_values(&out, &expected, &out_shape, dev.tolerance(1e-12), &format!("{what} {name} axes={axes:?} keepdim={keepdim}"));
            }
        }
    }

    // f32 on an odd size bigger than the SIMD width and with many outputs, contiguous and transposed
    let big = dev.put(&random(&[33, 7, 129], -1.0, 1.0, 4).to_dtype(DType::F32).unwrap());
    let bv = big.to_vec_f64();
    let big_t = big.transpose(0, 2).unwrap();
    let btv = naive_permute(&bv, &[33, 7, 129], &[2, 1, 0]);
    for axes in [&[-1][..], &[0], &[1], &[0, 2], &[]] {
        for (input, values, name) in [(&big, &bv, "contiguous"), (&big_t, &btv, "transposed")] {
            let (expected, out_shape) = naive_reduce(values, input.shape(), axes, false, kind);
            let out = apply(input, axes, false, kind).unwrap();
            assert_eq!(out.dtype(), DType::F32);
            assert_values(&out, &expected, &out_shape, dev.tolerance(1e-5), &format!("{what} f32 {name} axes={axes:?}"));
        }
    }

    // gradients: contiguous, permuted, narrowed; several axis sets; both keepdims
    let small = random(&[3, 5, 7], -2.0, 2.0, 5);
    for (axes, keepdim) in [(&[1][..], false), (&[-1], true), (&[0, 2], false), (&[2, 0], true), (&[], false), (&[], true)] {
        let case = format!("{what} axes={axes:?} keepdim={keepdim}");
        dev.assert_gradcheck(&case, |t| apply(&t[0], axes, keepdim, kind), std::slice::from_ref(&small));
    }
    let base = random(&[7, 3, 5], -2.0, 2.0, 6);
    dev.assert_gradcheck(&format!("{what} permuted"), |t| apply(&t[0].permute(&[2, 0, 1])?, &[0, -1], false, kind), &[base]);
    let base = random(&[3, 9, 5], -2.0, 2.0, 7);
    dev.assert_gradcheck(&format!("{what} narrowed"), |t| apply(&t[0].narrow(1, 2, 5)?, &[1], true, kind), &[base]);
    dev.assert_gradcheck(&format!("{what} [7] all"), |t| apply(&t[0], &[0], false, kind), &[random(&[7], -2.0, 2.0, 8)]);
}

/// Naive adjoint of broadcasting `target` to `shape`: sum over the repeated positions.
fn naive_sum_to_shape(values: &[f64], shape: &[usize], target: &[usize]) -> Vec<f64> {
    let lead = shape.len() - target.len();
    let mut out = vec![0.0; numel(target)];
    for (flat, &v) in values.iter().enumerate() {
        let index = unravel(flat, shape);
        let t: Vec<usize> = target.iter().enumerate().map(|(i, &n)| if n == 1 { 0 } else { index[lead + i] }).collect();
        out[ravel(&t, target)] += v;
    }
    out
}

per_device! {
fn sum_matches_reference_over_all_axis_sets_keepdims_and_strided_inputs_and_gradient_checks(dev) {
    check_reduce(dev, Kind::Sum);
}

fn mean_matches_reference_over_all_axis_sets_keepdims_and_strided_inputs_and_gradient_checks(dev) {
    check_reduce(dev, Kind::Mean);
}

fn max_matches_reference_over_all_axis_sets_keepdims_and_strided_inputs_and_gradient_checks(dev) {
    check_reduce(dev, Kind::Max);
}

fn var_population_matches_reference_over_all_axis_sets_keepdims_and_strided_inputs_and_gradient_checks(dev) {
    check_reduce(dev, Kind::Var(0));
}

fn var_unbiased_matches_reference_over_all_axis_sets_keepdims_and_strided_inputs_and_gradient_checks(dev) {
    check_reduce(dev, Kind::Var(1));
}

fn sum_all_and_mean_all_return_rank0_totals_and_gradient_checks_on_strided_input(dev) {
    let x = random(&[5, 3, 7], -2.0, 2.0, 10);
    let values = x.to_vec_f64();
    let total: f64 = values.iter().sum();
    let xd = dev.put(&x);
    let s = xd.sum_all().unwrap();
    assert_values(&s, &[total], &[], dev.tolerance(1e-12), "sum_all");
    assert_values(&xd.mean_all().unwrap(), &[total / 105.0], &[], dev.tolerance(1e-12), "mean_all");
    let permuted = xd.permute(&[2, 0, 1]).unwrap();
    assert_values(&permuted.sum_all().unwrap(), &[total], &[], dev.tolerance(1e-12), "sum_all permuted");
    assert_values(&permuted.mean_all().unwrap(), &[total / 105.0], &[], dev.tolerance(1e-12), "mean_all permuted");
    dev.assert_gradcheck("sum_all", |t| t[0].sum_all(), std::slice::from_ref(&x));
    dev.assert_gradcheck("mean_all", |t| t[0].mean_all(), std::slice::from_ref(&x));
    dev.assert_gradcheck("sum_all transposed", |t| t[0].transpose(0, 2)?.sum_all(), std::slice::from_ref(&x));
    dev.assert_gradcheck("mean_all narrowed", |t| t[0].narrow(2, 1, 5)?.mean_all(), &[x]);
    // rank 0 and size 1
    let r0 = random(&[], -2.0, 2.0, 11);
    assert_values(&dev.put(&r0).sum_all().unwrap(), &r0.to_vec_f64(), &[], dev.tolerance(0.0 + 1e-15), "sum_all of rank 0");
    dev.assert_gradcheck("sum of rank 0", |t| t[0].sum(&[], true), &[r0]);
    let one = random(&[1, 1], -2.0, 2.0, 12);
    assert_values(&dev.put(&one).mean(&[0], false).unwrap(), &one.to_vec_f64(), &[1], dev.tolerance(1e-15), "mean of [1,1] over axis 0");
}

fn max_splits_the_gradient_equally_between_tied_maxima(dev) {
    // rows: [1, 3, 3] (tie) and [2, 0.5, -1] (unique)
    let x = dev.put(&Tensor::from_f64(&[1.0, 3.0, 3.0, 2.0, 0.5, -1.0], &[2, 3], DType::F64).unwrap()).variable();
    let y = x.max(&[1], false).unwrap();
    assert_eq!(y.to_vec_f64(), vec![3.0, 2.0]);
    let w = dev.put(&Tensor::from_f64(&[10.0, 7.0], &[2], DType::F64).unwrap());
    let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec_f64(), vec![0.0, 5.0, 5.0, 7.0, 0.0, 0.0]);
}

fn reductions_over_repeated_axes_reduce_each_axis_once(dev) {
    // [1, -2] both name axis 1 of a rank-3 tensor: the engine dedups instead of erroring.
    let x = random(&[3, 5, 7], -2.0, 2.0, 13);
    let xd = dev.put(&x);
    let (expected, shape) = naive_reduce(&x.to_vec_f64(), &[3, 5, 7], &[1], false, Kind::Sum);
    assert_values(&xd.sum(&[1, -2], false).unwrap(), &expected, &shape, dev.tolerance(1e-12), "sum over [1, -2]");
    let (expected, shape) = naive_reduce(&x.to_vec_f64(), &[3, 5, 7], &[1], true, Kind::Mean);
    assert_values(&xd.mean(&[1, -2], true).unwrap(), &expected, &shape, dev.tolerance(1e-12), "mean over [1, -2]");
}

fn var_needs_more_elements_than_the_correction(dev) {
    let x = random(&[3, 1], -2.0, 2.0, 14);
    let xd = dev.put(&x);
    assert!(matches!(xd.var(&[1], false, 1), Err(TensorError::InvalidArgument { .. })));
    let (expected, shape) = naive_reduce(&x.to_vec_f64(), &[3, 1], &[1], false, Kind::Var(0));
    assert_values(&xd.var(&[1], false, 0).unwrap(), &expected, &shape, dev.tolerance(1e-15), "var of one element, correction 0");
    assert!(expected.iter().all(|&v| v == 0.0));
}

fn sum_to_shape_sums_over_broadcast_axes_and_gradient_checks_on_strided_input(dev) {
    let shape = [3, 4, 5];
    let x = random(&shape, -2.0, 2.0, 20);
    let base = random(&[5, 4, 3], -2.0, 2.0, 21);
    let xd = dev.put(&x);
    let xt = dev.put(&base).permute(&[2, 1, 0]).unwrap();
    let xtv = naive_permute(&base.to_vec_f64(), &[5, 4, 3], &[2, 1, 0]);
    let targets: [&[usize]; 9] = [&[3, 4, 5], &[4, 1], &[3, 1, 5], &[5], &[1, 5], &[], &[1, 1, 1], &[1], &[4, 5]];
    for target in targets {
        let expected = naive_sum_to_shape(&x.to_vec_f64(), &shape, target);
        assert_values(&xd.sum_to_shape(target).unwrap(), &expected, target, dev.tolerance(1e-12), &format!("sum_to_shape {target:?}"));
        let expected = naive_sum_to_shape(&xtv, &shape, target);
        assert_values(&xt.sum_to_shape(target).unwrap(), &expected, target, dev.tolerance(1e-12), &format!("sum_to_shape {target:?} strided"));
        dev.assert_gradcheck(&format!("sum_to_shape {target:?}"), |t| t[0].sum_to_shape(target), std::slice::from_ref(&x));
        dev.assert_gradcheck(&format!("sum_to_shape {target:?} strided"), |t| t[0].permute(&[2, 1, 0])?.sum_to_shape(target), std::slice::from_ref(&base));
    }
}
}
