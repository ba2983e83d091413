//! Tools for proving ops right: finite-difference gradient checks in f64 and closeness
//! measures. Public so that the workspace's tests and other crates' tests share them.

use crate::error::Result;
use crate::rng::Rng;
use crate::{DType, Tensor, no_grad};

/// `max|actual − expected| / max|expected|`: the error relative to the tensor's scale (a
/// per-element ratio would blow up on values near zero).
pub fn relative_error(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "relative_error: lengths differ");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = actual.iter().zip(expected).fold(0.0f64, |m, (a, e)| m.max((a - e).abs()));
    if worst == 0.0 { 0.0 } else { worst / scale.max(f64::MIN_POSITIVE) }
}

/// Panics unless `actual` is within `tolerance` of `expected` ([`relative_error`]) and has the
/// same shape.
#[track_caller]
pub fn assert_close(actual: &Tensor, expected: &Tensor, tolerance: f64, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    assert!(a.iter().all(|v| v.is_finite()), "{what}: non-finite values in {a:?}");
    let err = relative_error(&a, &e);
    assert!(err < tolerance, "{what}: relative error {err:.3e} ≥ {tolerance:.1e}\n got {a:?}\nwant {e:?}");
}

/// A random f64 tensor with values uniform in [low, high), from a seeded stream.
pub fn random(shape: &[usize], low: f64, high: f64, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, low, high, DType::F64, &mut Rng::new(seed)).expect("low < high")
}

/// Per input, the worst relative error of the analytic gradient against central differences.
#[derive(Debug)]
pub struct GradcheckReport {
    pub errors: Vec<f64>,
}

/// Checks the gradients `backward` computes for `f` at `inputs` (f64 tensors) against central
/// finite differences `(L(x + εeᵢ) − L(x − εeᵢ)) / 2ε`, where the scalar is `L = Σ f(x) ⊙ w`
/// for fixed random weights `w` (so that every output element's gradient path is exercised).
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], epsilon: f64) -> Result<GradcheckReport> {
    let variables: Vec<Tensor> = inputs.iter().map(|t| t.variable()).collect();
    let output = f(&variables)?;
    let weights = random(output.shape(), -1.0, 1.0, 0x5eed);
    let loss = output.mul(&weights)?.sum_all()?;
    let grads = loss.backward()?;
    let numeric = numeric_gradients(&f, inputs, &weights, epsilon)?;
    let errors = inputs
        .iter()
        .zip(&variables)
        .zip(&numeric)
        .map(|((input, variable), numeric)| {
            let analytic = match grads.get(variable) {
                Some(g) => g.to_vec_f64(),
                None => vec![0.0; input.numel()],
            };
            relative_error(&analytic, numeric)
        })
        .collect();
    Ok(GradcheckReport { errors })
}

/// The central differences `(L(x + εeᵢ) − L(x − εeᵢ)) / 2ε` of `L = Σ f(x) ⊙ weights` with
/// respect to every element of every input, in f64 on the CPU (the reference a device's
/// analytic gradients are checked against, too).
pub fn numeric_gradients(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], weights: &Tensor, epsilon: f64) -> Result<Vec<Vec<f64>>> {
    let _guard = no_grad();
    let scalar = |xs: &[Tensor]| -> Result<f64> { f(xs)?.mul(weights)?.sum_all()?.item() };
    let mut gradients = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let values = input.to_vec_f64();
        let mut numeric = Vec::with_capacity(values.len());
        for j in 0..values.len() {
            let shifted = |delta: f64| -> Result<f64> {
                let mut v = values.clone();
                v[j] += delta;
                let mut xs: Vec<Tensor> = inputs.to_vec();
                xs[i] = Tensor::from_f64(&v, input.shape(), DType::F64)?;
                scalar(&xs)
            };
            numeric.push((shifted(epsilon)? - shifted(-epsilon)?) / (2.0 * epsilon));
        }
        gradients.push(numeric);
    }
    Ok(gradients)
}

/// Panics unless every input's gradient passes [`gradcheck`] with relative error < 1e-6.
#[track_caller]
pub fn assert_gradcheck(what: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let report = gradcheck(f, inputs, 1e-6).unwrap_or_else(|e| panic!("{what}: {e}"));
    for (i, err) in report.errors.iter().enumerate() {
        assert!(*err < 1e-6, "{what}: gradient of input {i} has relative error {err:.3e}");
    }
}
