//! Elementwise ops, unary and binary: forward values against naive f64 references (loops over
//! indices, written here without the engine's ops), in f64 and f32, on odd sizes, strided views
//! and broadcast shapes; and finite-difference gradient checks in f64 for every input. Every
//! test runs on each device of the build (`cpu::…`, `cuda::…`; f32 kernels on a CUDA device).

use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Result, Tensor};

#[macro_use]
mod common;
use common::*;

// ---- naive helpers ---------------------------------------------------------------------------

/// The NumPy broadcast shape, computed here per axis.
fn naive_broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
            let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
            assert!(da == db || da == 1 || db == 1, "test bug: {a:?} and {b:?} do not broadcast");
            da.max(db)
        })
        .collect()
}

/// The position in a contiguous tensor of `shape` that element `out_index` of a broadcast reads.
fn broadcast_source(out_index: &[usize], shape: &[usize]) -> usize {
    let lead = out_index.len() - shape.len();
    let index: Vec<usize> = shape.iter().enumerate().map(|(i, &n)| if n == 1 { 0 } else { out_index[lead + i] }).collect();
    ravel(&index, shape)
}

/// `f(a, b)` elementwise with broadcasting, by loops.
fn naive_binary(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize], f: fn(f64, f64) -> f64) -> (Vec<f64>, Vec<usize>) {
    let shape = naive_broadcast_shape(sa, sb);
    let out = (0..numel(&shape))
        .map(|flat| {
            let index = unravel(flat, &shape);
            f(a[broadcast_source(&index, sa)], b[broadcast_source(&index, sb)])
        })
        .collect();
    (out, shape)
}

/// erf by its Maclaurin series (accurate to ~1e-14 for |x| ≤ 3, the range used here).
fn erf(x: f64) -> f64 {
    assert!(x.abs() <= 3.0, "test erf is only accurate for |x| <= 3");
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        let next = term / (2 * n + 1) as f64;
        sum += next;
        if next.abs() < 1e-18 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[track_caller]
fn assert_values(actual: &Tensor, expected: &[f64], shape: &[usize], tolerance: f64, what: &str) {
    assert_eq!(actual.shape(), shape, "{what}: shape");
    let values = actual.to_vec_f64();
    assert!(values.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let err = relative_error(&values, expected);
    assert!(err < tolerance, "{what}: relative error {err:.3e} >= {tolerance:.1e}");
}

// ---- inputs ----------------------------------------------------------------------------------

/// Where an op's inputs must lie.
#[derive(Clone, Copy)]
enum Domain {
    /// Uniform in [-2, 2).
    Any,
    /// Uniform in [0.5, 2) (log, sqrt, powf, a pow base, a divisor).
    Positive,
    /// |x| in [0.1, 1) with a fixed sign pattern: away from the kink of relu/abs.
    Kinked,
    /// |x| in [0.5, 2) with a fixed sign pattern: away from a pole (divisors).
    NonZero,
}

/// The fixed sign pattern: negative at positions 0, 2, 3, 5, 6, 8, ... (two out of three).
fn sign(i: usize) -> f64 {
    if i % 3 == 1 { 1.0 } else { -1.0 }
}

fn input(shape: &[usize], seed: u64, domain: Domain) -> Tensor {
    let signed = |low: f64, high: f64| {
        let values: Vec<f64> = random(shape, low, high, seed).to_vec_f64().iter().enumerate().map(|(i, v)| v * sign(i)).collect();
        Tensor::from_f64(&values, shape, DType::F64).unwrap()
    };
    match domain {
        Domain::Any => random(shape, -2.0, 2.0, seed),
        Domain::Positive => random(shape, 0.5, 2.0, seed),
        Domain::Kinked => signed(0.1, 1.0),
        Domain::NonZero => signed(0.5, 2.0),
    }
}

// ---- unary ops -------------------------------------------------------------------------------

type UnaryFn = fn(&Tensor) -> Result<Tensor>;

/// Proves one unary op: f64 forward on odd sizes (1, 7, 33x7, rank 0), on a permuted and a
/// narrowed view; f32 forward against the f64 reference on 33x7 and on a size above the
/// kernels' chunk (contiguous and transposed); gradchecks on contiguous, rank-0, transposed,
/// narrowed and permuted inputs.
fn check_unary(dev: TestDevice, what: &str, op: UnaryFn, reference: fn(f64) -> f64, domain: Domain) {
    // f64 forward, contiguous odd sizes
    for (k, shape) in [vec![1], vec![7], vec![33, 7], vec![]].into_iter().enumerate() {
        let x = input(&shape, 10 + k as u64, domain);
        let expected: Vec<f64> = x.to_vec_f64().iter().map(|&v| reference(v)).collect();
        assert_values(&op(&dev.put(&x)).unwrap(), &expected, &shape, dev.tolerance(1e-12), &format!("{what}: f64 forward {shape:?}"));
    }

    // f64 forward, permuted view [9,5,3] -> [3,9,5]
    let base = input(&[9, 5, 3], 20, domain);
    let view = dev.put(&base).permute(&[2, 0, 1]).unwrap();
    assert!(!view.is_contiguous());
    let expected: Vec<f64> = naive_permute(&base.to_vec_f64(), &[9, 5, 3], &[2, 0, 1]).into_iter().map(reference).collect();
    assert_values(&op(&view).unwrap(), &expected, &[3, 9, 5], dev.tolerance(1e-12), &format!("{what}: f64 forward, permuted"));

    // f64 forward, narrowed view [7,33] -> [7,17]
    let base = input(&[7, 33], 21, domain);
    let view = dev.put(&base).narrow(1, 3, 17).unwrap();
    let expected: Vec<f64> = naive_narrow(&base.to_vec_f64(), &[7, 33], 1, 3, 17).into_iter().map(reference).collect();
    assert_values(&op(&view).unwrap(), &expected, &[7, 17], dev.tolerance(1e-12), &format!("{what}: f64 forward, narrowed"));

    // f32 forward against the f64 reference on the f32-rounded inputs
    for (shape, transposed) in [(vec![33, 7], false), (vec![33, 7], true), (vec![129, 131], false), (vec![131, 129], true)] {
        let x = dev.put(&input(&shape, 30, domain).to_dtype(DType::F32).unwrap());
        let (x, values, out_shape) = if transposed {
            let v = naive_permute(&x.to_vec_f64(), &shape, &[1, 0]);
            (x.transpose(0, 1).unwrap(), v, vec![shape[1], shape[0]])
        } else {
            let v = x.to_vec_f64();
            (x, v, shape.clone())
        };
        let out = op(&x).unwrap();
        assert_eq!(out.dtype(), DType::F32, "{what}: f32 in, f32 out");
        let expected: Vec<f64> = values.into_iter().map(reference).collect();
        assert_values(&out, &expected, &out_shape, dev.tolerance(1e-5), &format!("{what}: f32 forward {shape:?} transposed={transposed}"));
    }

    // gradient checks
    dev.assert_gradcheck(&format!("{what}: [7]"), |x| op(&x[0]), &[input(&[7], 40, domain)]);
    dev.assert_gradcheck(&format!("{what}: [1]"), |x| op(&x[0]), &[input(&[1], 41, domain)]);
    dev.assert_gradcheck(&format!("{what}: []"), |x| op(&x[0]), &[input(&[], 42, domain)]);
    dev.assert_gradcheck(&format!("{what}: transposed"), |x| op(&x[0].transpose(0, 1)?), &[input(&[5, 3], 43, domain)]);
    dev.assert_gradcheck(&format!("{what}: narrowed"), |x| op(&x[0].narrow(1, 2, 5)?), &[input(&[4, 9], 44, domain)]);
    dev.assert_gradcheck(&format!("{what}: permuted"), |x| op(&x[0].permute(&[2, 0, 1])?), &[input(&[3, 1, 5], 45, domain)]);
}

fn sigmoid_ref(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// ---- binary ops ------------------------------------------------------------------------------

type BinaryFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

/// Proves one binary op: f64 forward and gradchecks (both inputs) over broadcasting in both
/// directions, rank-0 and [1] operands, odd same-shape inputs, strided (transposed, narrowed)
/// inputs with and without broadcasting; f32 forward against the f64 reference on 33x7 and on
/// a size above the kernels' chunk, including a transposed operand.
fn check_binary(dev: TestDevice, what: &str, op: BinaryFn, reference: fn(f64, f64) -> f64, da: Domain, db: Domain) {
    let cases: [(&[usize], &[usize]); 11] = [
        (&[3, 1, 5], &[4, 1]),
        (&[4, 1], &[3, 1, 5]),
        (&[7], &[]),
        (&[], &[7]),
        (&[2, 3], &[1]),
        (&[1], &[2, 3]),
        (&[], &[]),
        (&[1], &[1]),
        (&[7, 5], &[7, 5]),
        (&[1, 5], &[7, 1]),
        (&[33], &[33]),
    ];
    for (k, (sa, sb)) in cases.iter().enumerate() {
        let a = input(sa, 100 + k as u64, da);
        let b = input(sb, 200 + k as u64, db);
        let (expected, shape) = naive_binary(&a.to_vec_f64(), sa, &b.to_vec_f64(), sb, reference);
        let case = format!("{what}: {sa:?} with {sb:?}");
        assert_values(&op(&dev.put(&a), &dev.put(&b)).unwrap(), &expected, &shape, dev.tolerance(1e-12), &case);
        dev.assert_gradcheck(&case, |x| op(&x[0], &x[1]), &[a, b]);
    }

    // strided operands: a = [5,3]ᵀ, b = [3,9] narrowed to [3,5]; and b a narrowed [8] -> [5]
    let base_a = input(&[5, 3], 300, da);
    let base_b = input(&[3, 9], 301, db);
    let a_values = naive_permute(&base_a.to_vec_f64(), &[5, 3], &[1, 0]);
    let b_values = naive_narrow(&base_b.to_vec_f64(), &[3, 9], 1, 2, 5);
    let (expected, shape) = naive_binary(&a_values, &[3, 5], &b_values, &[3, 5], reference);
    let out = op(&dev.put(&base_a).transpose(0, 1).unwrap(), &dev.put(&base_b).narrow(1, 2, 5).unwrap()).unwrap();
    assert_values(&out, &expected, &shape, dev.tolerance(1e-12), &format!("{what}: strided"));
    dev.assert_gradcheck(&format!("{what}: strided"), |x| op(&x[0].transpose(0, 1)?, &x[1].narrow(1, 2, 5)?), &[base_a.clone(), base_b.clone()]);
    let base_c = input(&[8], 302, db);
    let c_values = naive_narrow(&base_c.to_vec_f64(), &[8], 0, 3, 5);
    let (expected, shape) = naive_binary(&a_values, &[3, 5], &c_values, &[5], reference);
    let out = op(&dev.put(&base_a).transpose(0, 1).unwrap(), &dev.put(&base_c).narrow(0, 3, 5).unwrap()).unwrap();
    assert_values(&out, &expected, &shape, dev.tolerance(1e-12), &format!("{what}: strided and broadcast"));
    dev.assert_gradcheck(&format!("{what}: strided and broadcast"), |x| op(&x[0].transpose(0, 1)?, &x[1].narrow(0, 3, 5)?), &[base_a.clone(), base_c.clone()]);
    // the broadcast (narrowed) operand on the left, the transposed one on the right
    let base_l = input(&[8], 303, da);
    let base_r = input(&[5, 3], 304, db);
    let l_values = naive_narrow(&base_l.to_vec_f64(), &[8], 0, 3, 5);
    let r_values = naive_permute(&base_r.to_vec_f64(), &[5, 3], &[1, 0]);
    let (expected, shape) = naive_binary(&l_values, &[5], &r_values, &[3, 5], reference);
    let out = op(&dev.put(&base_l).narrow(0, 3, 5).unwrap(), &dev.put(&base_r).transpose(0, 1).unwrap()).unwrap();
    assert_values(&out, &expected, &shape, dev.tolerance(1e-12), &format!("{what}: broadcast and strided"));
    dev.assert_gradcheck(&format!("{what}: broadcast and strided"), |x| op(&x[0].narrow(0, 3, 5)?, &x[1].transpose(0, 1)?), &[base_l, base_r]);

    // f32 forward against the f64 reference on the f32-rounded inputs
    let f32_cases: [(&[usize], &[usize], bool); 6] = [
        (&[33, 7], &[7], false),
        (&[33, 7], &[33, 1], false),
        (&[33, 7], &[33, 7], true),
        (&[129, 131], &[131], false),
        (&[129, 131], &[129, 1], true),
        (&[129, 131], &[129, 131], true),
    ];
    for (sa, sb, transpose_a) in f32_cases {
        let a = dev.put(&if transpose_a { input(&[sa[1], sa[0]], 400, da) } else { input(sa, 400, da) }.to_dtype(DType::F32).unwrap());
        let b = dev.put(&input(sb, 401, db).to_dtype(DType::F32).unwrap());
        let (a, a_values) = if transpose_a {
            let v = naive_permute(&a.to_vec_f64(), &[sa[1], sa[0]], &[1, 0]);
            (a.transpose(0, 1).unwrap(), v)
        } else {
            let v = a.to_vec_f64();
            (a, v)
        };
        let (expected, shape) = naive_binary(&a_values, sa, &b.to_vec_f64(), sb, reference);
        let out = op(&a, &b).unwrap();
        assert_eq!(out.dtype(), DType::F32);
        assert_values(&out, &expected, &shape, dev.tolerance(1e-5), &format!("{what}: f32 {sa:?} with {sb:?}, a transposed={transpose_a}"));
    }
}

per_device! {
// ---- unary ops (each through check_unary) ----------------------------------------------------

fn neg_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(neg_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.neg(), |x| -x, Domain::Any);
}

fn exp_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(exp_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.exp(), |x| x.exp(), Domain::Any);
}

fn log_forward_matches_reference_and_gradient_checks_on_odd_and_strided_positive_inputs(dev) {
    check_unary(dev, stringify!(log_forward_matches_reference_and_gradient_checks_on_odd_and_strided_positive_inputs), |t| t.log(), |x| x.ln(), Domain::Positive);
}

fn sqrt_forward_matches_reference_and_gradient_checks_on_odd_and_strided_positive_inputs(dev) {
    check_unary(dev, stringify!(sqrt_forward_matches_reference_and_gradient_checks_on_odd_and_strided_positive_inputs), |t| t.sqrt(), |x| x.sqrt(), Domain::Positive);
}

fn sqr_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(sqr_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.sqr(), |x| x * x, Domain::Any);
}

fn abs_forward_matches_reference_and_gradient_checks_on_signed_inputs_away_from_zero(dev) {
    check_unary(dev, stringify!(abs_forward_matches_reference_and_gradient_checks_on_signed_inputs_away_from_zero), |t| t.abs(), |x| x.abs(), Domain::Kinked);
}

fn relu_forward_matches_reference_and_gradient_checks_on_signed_inputs_away_from_zero(dev) {
    check_unary(dev, stringify!(relu_forward_matches_reference_and_gradient_checks_on_signed_inputs_away_from_zero), |t| t.relu(), |x| if x > 0.0 { x } else { 0.0 }, Domain::Kinked);
}

fn silu_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(silu_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.silu(), |x| x * sigmoid_ref(x), Domain::Any);
}

fn quick_gelu_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(quick_gelu_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.quick_gelu(), |x| x * sigmoid_ref(1.702 * x), Domain::Any);
}

fn geglu_is_the_first_half_times_gelu_of_the_second_and_gradient_checks(dev) {
    let x = random(&[3, 5, 8], -2.5, 2.5, 70);
    let y = dev.put(&x).geglu().unwrap();
    assert_eq!(y.shape(), &[3, 5, 4]);
    let (v, got) = (x.to_vec_f64(), y.to_vec_f64());
    for row in 0..15 {
        for j in 0..4 {
            let (h, g) = (v[row * 8 + j], v[row * 8 + 4 + j]);
            let want = h * 0.5 * g * (1.0 + erf(g / std::f64::consts::SQRT_2));
            assert!((got[row * 4 + j] - want).abs() <= dev.tolerance(1e-13) * want.abs().max(1.0), "row {row} column {j}: {} vs {want}", got[row * 4 + j]);
        }
    }
    dev.assert_gradcheck("geglu", |t| t[0].geglu(), &[x]);
    dev.assert_gradcheck("geglu of a transposed view", |t| t[0].transpose(1, 2)?.geglu(), &[random(&[2, 6, 3], -2.5, 2.5, 71)]);
    assert!(dev.put(&random(&[2, 5], -1.0, 1.0, 72)).geglu().is_err(), "an odd last axis has no halves");
}

fn gelu_erf_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(gelu_erf_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.gelu(), |x| 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)), Domain::Any);
}

fn sigmoid_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(sigmoid_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.sigmoid(), sigmoid_ref, Domain::Any);
}

fn tanh_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(tanh_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.tanh(), |x| x.tanh(), Domain::Any);
}

fn sin_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(sin_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.sin(), |x| x.sin(), Domain::Any);
}

fn cos_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(cos_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.cos(), |x| x.cos(), Domain::Any);
}

fn powf_fractional_exponent_forward_matches_reference_and_gradient_checks_on_positive_inputs(dev) {
    check_unary(dev, stringify!(powf_fractional_exponent_forward_matches_reference_and_gradient_checks_on_positive_inputs), |t| t.powf(2.5), |x| x.powf(2.5), Domain::Positive);
}

fn powf_negative_exponent_forward_matches_reference_and_gradient_checks_on_positive_inputs(dev) {
    check_unary(dev, stringify!(powf_negative_exponent_forward_matches_reference_and_gradient_checks_on_positive_inputs), |t| t.powf(-1.5), |x| x.powf(-1.5), Domain::Positive);
}

fn powf_integer_exponent_forward_matches_reference_and_gradient_checks_on_signed_inputs(dev) {
    check_unary(dev, stringify!(powf_integer_exponent_forward_matches_reference_and_gradient_checks_on_signed_inputs), |t| t.powf(3.0), |x| x * x * x, Domain::NonZero);
}

fn affine_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(affine_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.affine(-0.7, 0.3), |x| -0.7 * x + 0.3, Domain::Any);
}

fn add_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(add_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.add_scalar(0.75), |x| x + 0.75, Domain::Any);
}

fn sub_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(sub_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.sub_scalar(1.25), |x| x - 1.25, Domain::Any);
}

fn mul_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(mul_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.mul_scalar(-1.5), |x| x * -1.5, Domain::Any);
}

fn div_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs(dev) {
    check_unary(dev, stringify!(div_scalar_forward_matches_reference_and_gradient_checks_on_odd_and_strided_inputs), |t| t.div_scalar(0.4), |x| x / 0.4, Domain::Any);
}

fn sigmoid_silu_and_tanh_stay_finite_and_saturate_at_large_magnitudes_in_f32_and_f64(dev) {
    let values = [-800.0, -30.0, 30.0, 800.0];
    for dtype in [DType::F32, DType::F64] {
        let tolerance = dev.tolerance(if dtype == DType::F32 { 1e-6 } else { 1e-14 });
        let x = dev.put(&Tensor::from_f64(&values, &[4], dtype).unwrap());
        let s = x.sigmoid().unwrap().to_vec_f64();
        let t = x.tanh().unwrap().to_vec_f64();
        let silu = x.silu().unwrap().to_vec_f64();
        // exact saturation at ±800 (no inf/NaN from exp overflow)
        assert_eq!((s[0], s[3]), (0.0, 1.0), "sigmoid {dtype:?}: {s:?}");
        assert_eq!((t[0], t[3]), (-1.0, 1.0), "tanh {dtype:?}: {t:?}");
        assert_eq!((silu[0], silu[3]), (0.0, 800.0), "silu {dtype:?}: {silu:?}");
        // ±30: each value within a relative tolerance of the reference
        for i in 1..3 {
            let x = values[i];
            for (got, want, name) in [(s[i], sigmoid_ref(x), "sigmoid"), (t[i], x.tanh(), "tanh"), (silu[i], x * sigmoid_ref(x), "silu")] {
                assert!((got - want).abs() <= tolerance * want.abs(), "{name}({x}) {dtype:?}: {got} vs {want}");
            }
        }
    }
}

fn relu_and_abs_gradients_at_exactly_zero_are_zero_like_pytorch(dev) {
    // The documented subgradient at the kink: relu'(0) = 0, abs'(0) = sign(0) = 0.
    let x = dev.put(&Tensor::from_f64(&[0.0, 0.5, -0.5], &[3], DType::F64).unwrap()).variable();
    let relu_grad = x.relu().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(relu_grad.get(&x).unwrap().to_vec_f64(), vec![0.0, 1.0, 0.0], "relu'");
    let abs_grad = x.abs().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(abs_grad.get(&x).unwrap().to_vec_f64(), vec![0.0, 1.0, -1.0], "abs'");
}

fn unary_op_on_an_empty_strided_tensor_returns_an_empty_tensor(dev) {
    // [0, 3] transposed is a non-contiguous view with zero elements.
    let x = dev.put(&Tensor::zeros(&[0, 3], DType::F64)).transpose(0, 1).unwrap();
    assert_eq!(x.shape(), &[3, 0]);
    assert!(!x.is_contiguous());
    let y = x.exp().unwrap();
    assert_eq!((y.shape(), y.numel()), (&[3usize, 0][..], 0));
}

fn binary_op_on_an_empty_strided_tensor_returns_an_empty_tensor(dev) {
    let x = dev.put(&Tensor::zeros(&[0, 3], DType::F64)).transpose(0, 1).unwrap();
    let z = x.add(&dev.put(&Tensor::ones(&[3, 1], DType::F64))).unwrap();
    assert_eq!((z.shape(), z.numel()), (&[3usize, 0][..], 0));
}

// ---- binary ops (each through check_binary) ---------------------------------------------------

fn add_forward_matches_reference_and_gradient_checks_with_broadcasting_scalars_and_strided_inputs(dev) {
    check_binary(dev, "add", |a, b| a.add(b), |a, b| a + b, Domain::Any, Domain::Any);
}

fn sub_forward_matches_reference_and_gradient_checks_with_broadcasting_scalars_and_strided_inputs(dev) {
    check_binary(dev, "sub", |a, b| a.sub(b), |a, b| a - b, Domain::Any, Domain::Any);
}

fn mul_forward_matches_reference_and_gradient_checks_with_broadcasting_scalars_and_strided_inputs(dev) {
    check_binary(dev, "mul", |a, b| a.mul(b), |a, b| a * b, Domain::Any, Domain::Any);
}

fn div_forward_matches_reference_and_gradient_checks_with_broadcasting_scalars_and_strided_inputs(dev) {
    check_binary(dev, "div", |a, b| a.div(b), |a, b| a / b, Domain::Any, Domain::NonZero);
}

fn pow_tensor_exponent_forward_matches_reference_and_gradient_checks_with_broadcasting_and_strided_inputs(dev) {
    check_binary(dev, "pow", |a, b| a.pow(b), |a, b| a.powf(b), Domain::Positive, Domain::Any);
}

fn binary_op_of_a_tensor_with_itself_matches_reference_and_gradient_checks(dev) {
    // Both operands are the same variable: the gradient of each use is summed.
    let x = input(&[7, 3], 500, Domain::NonZero);
    let v = x.to_vec_f64();
    let xd = dev.put(&x);
    assert_values(&xd.mul(&xd).unwrap(), &v.iter().map(|a| a * a).collect::<Vec<_>>(), &[7, 3], dev.tolerance(1e-12), "x*x");
    assert_values(&xd.div(&xd).unwrap(), &[1.0; 21], &[7, 3], dev.tolerance(1e-12), "x/x");
    dev.assert_gradcheck("x*x", |t| t[0].mul(&t[0]), std::slice::from_ref(&x));
    dev.assert_gradcheck("x*xᵀᵀ+x", |t| t[0].mul(&t[0].transpose(0, 1)?.transpose(0, 1)?)?.add(&t[0]), std::slice::from_ref(&x));
    dev.assert_gradcheck("x/(x+3)", |t| t[0].div(&t[0].add_scalar(3.0)?), std::slice::from_ref(&x));
}

fn eq_mask_marks_equal_elements_with_broadcasting_and_records_no_gradient(dev) {
    // quarter-integers in a small range, so that equal pairs occur
    let a_values: Vec<f64> = (0..15).map(|i| ((i * 7) % 5) as f64 * 0.25).collect();
    let b_values: Vec<f64> = (0..5).map(|j| j as f64 * 0.25).collect();
    let a = dev.put(&Tensor::from_f64(&a_values, &[3, 5], DType::F64).unwrap()).variable();
    let b = dev.put(&Tensor::from_f64(&b_values, &[5], DType::F64).unwrap());
    let (expected, shape) = naive_binary(&a_values, &[3, 5], &b_values, &[5], |x, y| if x == y { 1.0 } else { 0.0 });
    assert!(expected.contains(&1.0) && expected.contains(&0.0));
    let mask = a.eq_mask(&b).unwrap();
    assert_eq!(mask.shape(), &shape[..]);
    assert_eq!(mask.to_vec_f64(), expected);
    assert!(!mask.requires_grad(), "eq_mask is not differentiable");
    let mask_t = a.transpose(0, 1).unwrap().eq_mask(&b.reshape(&[5, 1]).unwrap()).unwrap();
    let (expected_t, _) = naive_binary(&naive_permute(&a_values, &[3, 5], &[1, 0]), &[5, 3], &b_values, &[5, 1], |x, y| if x == y { 1.0 } else { 0.0 });
    assert_eq!(mask_t.to_vec_f64(), expected_t);
}

#[allow(clippy::manual_clamp)] // the reference is written as the definition, max then min
fn clamp_forward_matches_reference_and_gradient_checks_away_from_the_bounds(dev) {
    // values strictly inside, below and above [-0.5, 0.7], none within 0.05 of a bound
    let values: Vec<f64> = (0..33).map(|i| -1.6 + 0.1 * i as f64 + 0.02).collect();
    let x = Tensor::from_f64(&values, &[3, 11], DType::F64).unwrap();
    let xd = dev.put(&x);
    let y = xd.clamp(-0.5, 0.7).unwrap().to_vec_f64();
    // the reference on the values the device holds, rounded to its dtype (on a CUDA device the
    // input and the bounds are f32)
    let round = |r: f64| if xd.dtype() == DType::F32 { r as f32 as f64 } else { r };
    for (v, y) in xd.to_vec_f64().iter().zip(&y) {
        assert_eq!(*y, round(v.max(-0.5).min(0.7)));
    }
    dev.assert_gradcheck("clamp", |t| t[0].transpose(0, 1)?.clamp(-0.5, 0.7), &[x]);
    assert!(dev.put(&Tensor::ones(&[2], DType::F64)).clamp(1.0, 0.0).is_err());
}
}
