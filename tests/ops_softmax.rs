//! softmax and log_softmax: forward values against naive f64 references (index loops written
//! here) along the first, middle, last and negative axes, on rows of length 1 and odd lengths, on
//! strided views, and on large-magnitude inputs; in f64 and f32; and f64 finite-difference
//! gradient checks along every axis, including through strided views. Every test runs on each
//! device of the build (`cpu::…`, `cuda::…`; f32 kernels on a CUDA device).

#[macro_use]
mod common;

use common::TestDevice;
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Tensor};

// ---- naive reference -----------------------------------------------------------------------------

/// Softmax (or log-softmax) of the row-major `x` of `shape` along `axis` (non-negative), computed
/// row by row with explicit strides: `exp(xᵢ − m) / Σⱼ exp(xⱼ − m)`, `m` the row max.
fn naive_softmax(x: &[f64], shape: &[usize], axis: usize, log: bool) -> Vec<f64> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut y = vec![0.0; x.len()];
    for o in 0..outer {
        for r in 0..inner {
            let at = |i: usize| (o * len + i) * inner + r;
            let mut max = f64::NEG_INFINITY;
            for i in 0..len {
                max = max.max(x[at(i)]);
            }
            let mut sum = 0.0;
            for i in 0..len {
                sum += (x[at(i)] - max).exp();
            }
            for i in 0..len {
                y[at(i)] = if log { x[at(i)] - max - sum.ln() } else { (x[at(i)] - max).exp() / sum };
            }
        }
    }
    y
}

fn axis_index(axis: isize, rank: usize) -> usize {
    if axis < 0 { (axis + rank as isize) as usize } else { axis as usize }
}

/// Softmax and log-softmax of `x` in `dtype` on `dev` against the f64 reference.
fn check_forward(dev: TestDevice, x: &Tensor, axis: isize, dtype: DType, tolerance: f64, what: &str) {
    let (dtype, tolerance) = (dev.dtype(dtype), dev.tolerance(tolerance));
    let expected_soft = naive_softmax(&x.to_vec_f64(), x.shape(), axis_index(axis, x.rank()), false);
    let expected_log = naive_softmax(&x.to_vec_f64(), x.shape(), axis_index(axis, x.rank()), true);
    // a view already on the device is used as it is (its strides kept)
    let xd = if dev.is_cuda() && x.device() == dev.0 { x.clone() } else { dev.put(&x.to_dtype(dtype).unwrap()) };
    let soft = xd.softmax(axis).unwrap();
    let log = xd.log_softmax(axis).unwrap();
    for (name, y, expected) in [("softmax", &soft, &expected_soft), ("log_softmax", &log, &expected_log)] {
        assert_eq!(y.shape(), x.shape(), "{what} {name}: shape");
        assert_eq!(y.dtype(), dtype, "{what} {name}: dtype");
        let values = y.to_vec_f64();
        assert!(values.iter().all(|v| v.is_finite()), "{what} {name} axis {axis}: non-finite output");
        let err = relative_error(&values, expected);
        assert!(err < tolerance, "{what} {name} axis {axis} ({dtype:?}): relative error {err:.3e}");
    }
}

/// Sums of `y` along `axis` (one per row).
fn row_sums(y: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut sums = Vec::new();
    for o in 0..outer {
        for r in 0..inner {
            sums.push((0..len).map(|i| y[(o * len + i) * inner + r]).sum());
        }
    }
    sums
}

// ---- forward ----------------------------------------------------------------------------------------

per_device! {
fn softmax_and_log_softmax_f64_match_reference_along_every_axis(dev) {
    let x = random(&[5, 7, 33], -3.0, 3.0, 1);
    for axis in [0, 1, 2, -1, -2, -3] {
        check_forward(dev, &x, axis, DType::F64, 1e-14, "[5,7,33]");
    }
}

fn softmax_and_log_softmax_f64_match_reference_on_rank_1_and_rank_4(dev) {
    let x = random(&[33], -3.0, 3.0, 2);
    check_forward(dev, &x, 0, DType::F64, 1e-14, "[33]");
    check_forward(dev, &x, -1, DType::F64, 1e-14, "[33]");
    let x = random(&[2, 3, 7, 5], -3.0, 3.0, 3);
    for axis in [0, 1, 2, 3, -1, -4] {
        check_forward(dev, &x, axis, DType::F64, 1e-14, "[2,3,7,5]");
    }
}

fn softmax_and_log_softmax_f32_match_reference_on_larger_odd_shapes(dev) {
    let x = random(&[33, 65, 17], -4.0, 4.0, 4);
    for axis in [0, 1, 2, -1] {
        check_forward(dev, &x, axis, DType::F32, 1e-5, "[33,65,17]");
    }
    let x = random(&[7, 1025], -4.0, 4.0, 5);
    check_forward(dev, &x, -1, DType::F32, 1e-5, "[7,1025]");
}

fn rows_of_length_1_give_softmax_1_and_log_softmax_0(dev) {
    let x = random(&[4, 1, 3], -5.0, 5.0, 6);
    for dtype in [DType::F64, DType::F32] {
        let xd = dev.put(&x.to_dtype(dtype).unwrap());
        assert!(xd.softmax(1).unwrap().to_vec_f64().iter().all(|&v| v == 1.0));
        assert!(xd.log_softmax(1).unwrap().to_vec_f64().iter().all(|&v| v == 0.0));
    }
    check_forward(dev, &x, 1, DType::F64, 1e-15, "[4,1,3]");
    let x = random(&[3, 1], -5.0, 5.0, 7);
    check_forward(dev, &x, -1, DType::F64, 1e-15, "[3,1]");
    let x = dev.put(&random(&[1], -5.0, 5.0, 8));
    assert_eq!(x.softmax(0).unwrap().to_vec_f64(), [1.0]);
}

fn softmax_rows_sum_to_one_along_every_axis(dev) {
    let x = random(&[3, 33, 7], -10.0, 10.0, 9);
    for dtype in [DType::F64, DType::F32] {
        let tolerance = dev.tolerance(if dtype == DType::F64 { 1e-14 } else { 1e-6 });
        for axis in 0..3 {
            let y = dev.put(&x.to_dtype(dtype).unwrap()).softmax(axis as isize).unwrap();
            let values = y.to_vec_f64();
            assert!(values.iter().all(|&v| (0.0..=1.0).contains(&v)), "softmax outside [0, 1]");
            for s in row_sums(&values, x.shape(), axis) {
                assert!((s - 1.0).abs() < tolerance, "axis {axis} ({dtype:?}): row sums to {s}");
            }
            // and exp(log_softmax) sums to one as well
            let log = dev.put(&x.to_dtype(dtype).unwrap()).log_softmax(axis as isize).unwrap().to_vec_f64();
            let exp: Vec<f64> = log.iter().map(|v| v.exp()).collect();
            for s in row_sums(&exp, x.shape(), axis) {
                assert!((s - 1.0).abs() < tolerance, "axis {axis} ({dtype:?}): exp(log_softmax) row sums to {s}");
            }
        }
    }
}

fn large_magnitude_inputs_stay_finite_and_match_reference(dev) {
    // exp(1000) overflows f64 and f32; the max must be subtracted first
    for (low, high) in [(995.0, 1005.0), (-1005.0, -995.0)] {
        let x = random(&[3, 33], low, high, 10);
        check_forward(dev, &x, -1, DType::F64, 1e-12, "values ~±1000");
        check_forward(dev, &x, 0, DType::F64, 1e-12, "values ~±1000");
        check_forward(dev, &x, -1, DType::F32, 1e-4, "values ~±1000 (f32)");
    }
    // one dominant value: softmax is (numerically) one-hot, log_softmax of the others ≈ −1000
    let mut values = vec![0.0; 7];
    values[3] = 1000.0;
    let x = dev.put(&Tensor::from_f64(&values, &[7], DType::F64).unwrap());
    let y = x.softmax(0).unwrap().to_vec_f64();
    assert_eq!(y[3], 1.0);
    assert!(y.iter().enumerate().all(|(i, &v)| i == 3 || v == 0.0));
    let l = x.log_softmax(0).unwrap().to_vec_f64();
    assert_eq!(l[3], 0.0);
    assert!(l.iter().enumerate().all(|(i, &v)| i == 3 || (v + 1000.0).abs() < 1e-12), "{l:?}");
    for dtype in [DType::F32, DType::F64] {
        let l = dev.put(&x.to_dtype(dtype).unwrap()).log_softmax(0).unwrap().to_vec_f64();
        assert!(l.iter().all(|v| v.is_finite()), "{dtype:?}: {l:?}");
    }
}

fn softmax_of_strided_views_matches_reference_on_their_values(dev) {
    let base = dev.put(&random(&[7, 5, 9], -3.0, 3.0, 11));
    let permuted = base.permute(&[2, 0, 1]).unwrap(); // [9, 7, 5]
    let narrowed = base.narrow(2, 2, 5).unwrap(); // [7, 5, 5]
    let transposed = base.transpose(0, 2).unwrap(); // [9, 5, 7]
    for (name, view) in [("permuted", &permuted), ("narrowed", &narrowed), ("transposed", &transposed)] {
        assert!(!view.is_contiguous());
        for axis in [0, 1, -1] {
            check_forward(dev, view, axis, DType::F64, 1e-14, name);
            check_forward(dev, view, axis, DType::F32, 1e-5, name);
        }
    }
}

fn softmax_is_invariant_to_adding_a_constant_to_a_row(dev) {
    let x = dev.put(&random(&[4, 9], -2.0, 2.0, 12));
    let shifted = x.add_scalar(123.25).unwrap();
    let err = relative_error(&shifted.softmax(-1).unwrap().to_vec_f64(), &x.softmax(-1).unwrap().to_vec_f64());
    assert!(err < dev.tolerance(1e-12), "{err:.3e}");
}

// ---- gradients ----------------------------------------------------------------------------------------

fn softmax_gradcheck_along_first_middle_last_and_negative_axes(dev) {
    let x = random(&[3, 4, 5], -2.0, 2.0, 21);
    for axis in [0, 1, 2, -1, -3] {
        dev.assert_gradcheck(&format!("softmax axis {axis}"), |t| t[0].softmax(axis), std::slice::from_ref(&x));
    }
}

fn log_softmax_gradcheck_along_first_middle_last_and_negative_axes(dev) {
    let x = random(&[3, 4, 5], -2.0, 2.0, 22);
    for axis in [0, 1, 2, -1, -2] {
        dev.assert_gradcheck(&format!("log_softmax axis {axis}"), |t| t[0].log_softmax(axis), std::slice::from_ref(&x));
    }
}

fn softmax_and_log_softmax_gradcheck_on_rows_of_length_1_and_33(dev) {
    let x = random(&[3, 1, 2], -2.0, 2.0, 23);
    dev.assert_gradcheck("softmax rows of 1", |t| t[0].softmax(1), std::slice::from_ref(&x));
    dev.assert_gradcheck("log_softmax rows of 1", |t| t[0].log_softmax(1), &[x]);
    let x = random(&[2, 33], -2.0, 2.0, 24);
    dev.assert_gradcheck("softmax rows of 33", |t| t[0].softmax(-1), std::slice::from_ref(&x));
    dev.assert_gradcheck("log_softmax rows of 33", |t| t[0].log_softmax(-1), std::slice::from_ref(&x));
    dev.assert_gradcheck("softmax columns of 2", |t| t[0].softmax(0), &[x]);
}

fn softmax_and_log_softmax_gradcheck_through_strided_views(dev) {
    let x = random(&[5, 3, 4], -2.0, 2.0, 25);
    dev.assert_gradcheck("softmax of a permute", |t| t[0].permute(&[2, 0, 1])?.softmax(-1), std::slice::from_ref(&x));
    dev.assert_gradcheck("log_softmax of a transpose", |t| t[0].transpose(0, 2)?.log_softmax(1), std::slice::from_ref(&x));
    dev.assert_gradcheck("softmax of a narrow", |t| t[0].narrow(0, 1, 3)?.softmax(0), std::slice::from_ref(&x));
    // and a downstream op that consumes the (non-contiguous) output
    dev.assert_gradcheck("softmax then transpose then mul", |t| t[0].softmax(0)?.transpose(0, 2)?.mul(&t[0].transpose(0, 2)?), &[x]);
}

fn softmax_gradcheck_on_large_magnitude_inputs(dev) {
    let x = random(&[2, 7], 995.0, 1005.0, 26);
    dev.assert_gradcheck("softmax ~1000", |t| t[0].softmax(-1), std::slice::from_ref(&x));
    dev.assert_gradcheck("log_softmax ~1000", |t| t[0].log_softmax(-1), &[x]);
}

fn softmax_gives_negative_infinity_entries_zero_probability(dev) {
    // the masking idiom: −∞ logits get probability 0 and the rest renormalize
    let values = [0.5, f64::NEG_INFINITY, -1.0, f64::NEG_INFINITY, 2.0];
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let expected_finite = naive_softmax(&finite, &[3], 0, false);
    for dtype in [DType::F64, DType::F32] {
        let x = dev.put(&Tensor::from_f64(&values, &[5], dtype).unwrap());
        let y = x.softmax(0).unwrap().to_vec_f64();
        assert_eq!((y[1], y[3]), (0.0, 0.0), "{dtype:?}");
        let kept = [y[0], y[2], y[4]];
        assert!(relative_error(&kept, &expected_finite) < 1e-6, "{dtype:?}: {y:?}");
        let l = x.log_softmax(0).unwrap().to_vec_f64();
        assert_eq!((l[1], l[3]), (f64::NEG_INFINITY, f64::NEG_INFINITY), "{dtype:?}");
        assert!(l.iter().all(|v| !v.is_nan()), "{dtype:?}: {l:?}");
    }
    // and the gradient with respect to the finite logits is finite
    let x = dev.put(&Tensor::from_f64(&values, &[5], DType::F64).unwrap()).variable();
    let y = x.softmax(0).unwrap();
    let r = dev.put(&random(&[5], -1.0, 1.0, 13));
    let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap().to_vec_f64();
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    assert_eq!((g[1], g[3]), (0.0, 0.0));
}
}
