//! Optimizers (SGD and Adam/AdamW) against a naive scalar reference of PyTorch's update rules,
//! written out below element by element in f64 from PyTorch's documented algorithms
//! (`torch.optim.SGD`, `torch.optim.Adam`, `torch.optim.AdamW`). The engine runs in f64 over
//! several steps with a gradient that changes every step; after every step each parameter
//! must match the reference to a scale-relative error ([`relative_error`]) of 1e-12, i.e.
//! f64 rounding only.
//!
//! Also: parameters without a gradient are skipped (unchanged; state and step count
//! untouched), Adam's state round-trips through `state()`/`load_state`, invalid parameters
//! and gradients are errors, f32 tracks the f64 reference, and an end-to-end line fit.

use ember::tensor::optim::{Adam, AdamConfig, AdamState, Sgd, SgdConfig};
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Gradients, Tensor, TensorError};

/// Engine (f64) vs reference (f64), scale-relative.
const F64_TOLERANCE: f64 = 1e-12;

/// Engine in f32 vs the f64 reference, scale-relative.
const F32_TOLERANCE: f64 = 1e-5;

/// Shapes of the parameters every test optimizes: a matrix, a vector and a one-element one.
const SHAPES: [&[usize]; 3] = [&[2, 3], &[4], &[1]];

const STEPS: usize = 6;

// ---- the naive reference ---------------------------------------------------------------------

/// PyTorch's SGD for one parameter:
/// `d = g + λp`; with momentum `μ`: `b = d` on the parameter's first step, else
/// `b = μb + (1 − τ)d`; then `d = d + μb` (Nesterov) or `d = b`; finally `p ← p − lr·d`.
struct RefSgd {
    config: SgdConfig,
    param: Vec<f64>,
    buffer: Option<Vec<f64>>,
}

impl RefSgd {
    fn new(config: SgdConfig, param: Vec<f64>) -> RefSgd {
        RefSgd { config, param, buffer: None }
    }

    fn step(&mut self, grad: &[f64]) {
        let SgdConfig { lr, momentum, dampening, weight_decay, nesterov } = self.config;
        let n = self.param.len();
        let mut new_buffer = vec![0.0; n];
        for i in 0..n {
            let mut d = grad[i] + weight_decay * self.param[i];
            if momentum != 0.0 {
                let b = match &self.buffer {
                    None => d,
                    Some(buffer) => momentum * buffer[i] + (1.0 - dampening) * d,
                };
                new_buffer[i] = b;
                d = if nesterov { d + momentum * b } else { b };
            }
            self.param[i] -= lr * d;
        }
        if momentum != 0.0 {
            self.buffer = Some(new_buffer);
        }
    }
}

/// PyTorch's Adam / AdamW for one parameter, in the textbook form of its documentation:
/// `t += 1`; AdamW: `p ← p − lr·λ·p`, Adam: `g = g + λp`; `m = β₁m + (1 − β₁)g`,
/// `v = β₂v + (1 − β₂)g²`; `m̂ = m / (1 − β₁ᵗ)`, `v̂ = v / (1 − β₂ᵗ)`;
/// `p ← p − lr·m̂ / (√v̂ + ε)`.
struct RefAdam {
    config: AdamConfig,
    param: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: u64,
}

impl RefAdam {
    fn new(config: AdamConfig, param: Vec<f64>) -> RefAdam {
        let n = param.len();
        RefAdam { config, param, m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    #[allow(clippy::needless_range_loop)] // index loops read most like the formulas
    fn step(&mut self, grad: &[f64]) {
        let AdamConfig { lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay } = self.config;
        self.t += 1;
        let t = self.t as f64;
        for i in 0..self.param.len() {
            let mut g = grad[i];
            if decoupled_weight_decay {
                self.param[i] -= lr * weight_decay * self.param[i];
            } else {
                g += weight_decay * self.param[i];
            }
            self.m[i] = beta1 * self.m[i] + (1.0 - beta1) * g;
            self.v[i] = beta2 * self.v[i] + (1.0 - beta2) * g * g;
            let m_hat = self.m[i] / (1.0 - beta1.powf(t));
            let v_hat = self.v[i] / (1.0 - beta2.powf(t));
            self.param[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}

// ---- shared set-up ---------------------------------------------------------------------------

/// Deterministic initial values of parameter `k` (mixed signs, not all equal).
fn initial_values(k: usize) -> Vec<f64> {
    let n: usize = SHAPES[k].iter().product();
    (0..n).map(|i| 0.8 * ((i as f64) * 1.7 + (k as f64) * 0.9 + 0.3).sin() + 0.05 * k as f64).collect()
}

/// The gradient of parameter `k` at step `step` (1-based): it changes every step, in sign and
/// in scale, so that momentum and the moment estimates are really exercised.
fn gradient_values(k: usize, step: usize) -> Vec<f64> {
    let n: usize = SHAPES[k].iter().product();
    (0..n)
        .map(|i| {
            let phase = 0.9 * step as f64 + 1.3 * i as f64 + 0.4 * k as f64;
            (1.0 + 0.5 * (step as f64 * 0.7).cos()) * phase.sin() + 0.1 * (i as f64 - 1.0)
        })
        .collect()
}

/// Fresh variables with [`initial_values`], in `dtype`.
fn make_params(dtype: DType) -> Vec<Tensor> {
    (0..SHAPES.len()).map(|k| Tensor::from_f64(&initial_values(k), SHAPES[k], dtype).unwrap().variable()).collect()
}

/// Gradients for step `step`: parameter `k` gets [`gradient_values`] when `has_grad[k]`.
fn gradients(params: &[Tensor], step: usize, has_grad: &[bool]) -> Gradients {
    let mut grads = Gradients::default();
    for (k, p) in params.iter().enumerate() {
        if has_grad[k] {
            grads.insert(p, Tensor::from_f64(&gradient_values(k, step), p.shape(), p.dtype()).unwrap());
        }
    }
    grads
}

const ALL: [bool; 3] = [true, true, true];

#[track_caller]
fn assert_matches(engine: &Tensor, reference: &[f64], tolerance: f64, what: &str) {
    let actual = engine.to_vec_f64();
    assert!(actual.iter().all(|v| v.is_finite()), "{what}: non-finite values {actual:?}");
    let err = relative_error(&actual, reference);
    assert!(err < tolerance, "{what}: relative error {err:.3e} ≥ {tolerance:.0e}\n got {actual:?}\nwant {reference:?}");
}

/// Runs the engine's SGD and the reference side by side for [`STEPS`] steps, comparing every
/// parameter after every step.
fn check_sgd_against_reference(config: SgdConfig, dtype: DType, tolerance: f64) {
    let params = make_params(dtype);
    let mut sgd = Sgd::new(params.clone(), config).unwrap();
    let mut reference: Vec<RefSgd> = (0..SHAPES.len()).map(|k| RefSgd::new(config, initial_values(k))).collect();
    for step in 1..=STEPS {
        sgd.step(&gradients(&params, step, &ALL)).unwrap();
        for (k, r) in reference.iter_mut().enumerate() {
            r.step(&gradient_values(k, step));
            assert_matches(&params[k], &r.param, tolerance, &format!("{config:?} {dtype:?}: param {k} after step {step}"));
        }
    }
}

/// Like [`check_sgd_against_reference`], for Adam/AdamW.
fn check_adam_against_reference(config: AdamConfig, dtype: DType, tolerance: f64) {
    let params = make_params(dtype);
    let mut adam = Adam::new(params.clone(), config).unwrap();
    let mut reference: Vec<RefAdam> = (0..SHAPES.len()).map(|k| RefAdam::new(config, initial_values(k))).collect();
    for step in 1..=STEPS {
        adam.step(&gradients(&params, step, &ALL)).unwrap();
        for (k, r) in reference.iter_mut().enumerate() {
            r.step(&gradient_values(k, step));
            assert_matches(&params[k], &r.param, tolerance, &format!("{config:?} {dtype:?}: param {k} after step {step}"));
            assert_eq!(adam.state()[k].step, step as u64, "step count of param {k}");
        }
    }
}

// ---- SGD ----------------------------------------------------------------------------------

#[test]
fn sgd_plain_matches_reference() {
    check_sgd_against_reference(SgdConfig::new(0.1), DType::F64, F64_TOLERANCE);
}

#[test]
fn sgd_momentum_matches_reference() {
    check_sgd_against_reference(SgdConfig { momentum: 0.9, ..SgdConfig::new(0.05) }, DType::F64, F64_TOLERANCE);
}

#[test]
fn sgd_nesterov_momentum_matches_reference() {
    let config = SgdConfig { momentum: 0.8, nesterov: true, ..SgdConfig::new(0.05) };
    check_sgd_against_reference(config, DType::F64, F64_TOLERANCE);
}

#[test]
fn sgd_weight_decay_matches_reference_with_and_without_momentum() {
    check_sgd_against_reference(SgdConfig { weight_decay: 0.1, ..SgdConfig::new(0.1) }, DType::F64, F64_TOLERANCE);
    let config = SgdConfig { momentum: 0.9, weight_decay: 0.05, ..SgdConfig::new(0.05) };
    check_sgd_against_reference(config, DType::F64, F64_TOLERANCE);
    let config = SgdConfig { momentum: 0.9, weight_decay: 0.05, nesterov: true, ..SgdConfig::new(0.05) };
    check_sgd_against_reference(config, DType::F64, F64_TOLERANCE);
}

/// Dampening scales the new gradient into the buffer from the second step on; the first step
/// copies the gradient undamped (PyTorch's rule).
#[test]
fn sgd_dampening_matches_reference_including_the_undamped_first_step() {
    let config = SgdConfig { momentum: 0.9, dampening: 0.3, ..SgdConfig::new(0.05) };
    check_sgd_against_reference(config, DType::F64, F64_TOLERANCE);
    let config = SgdConfig { momentum: 0.9, dampening: 0.5, weight_decay: 0.01, ..SgdConfig::new(0.05) };
    check_sgd_against_reference(config, DType::F64, F64_TOLERANCE);
}

#[test]
fn sgd_in_f32_tracks_the_f64_reference() {
    let config = SgdConfig { momentum: 0.9, dampening: 0.1, weight_decay: 0.01, nesterov: true, ..SgdConfig::new(0.05) };
    check_sgd_against_reference(config, DType::F32, F32_TOLERANCE);
}

/// A parameter missing from the gradients is left alone and its momentum buffer does not
/// move: its next update matches a reference that simply skipped those steps.
#[test]
fn sgd_skips_parameters_without_gradient_and_keeps_their_momentum_buffer() {
    let config = SgdConfig { momentum: 0.9, dampening: 0.2, weight_decay: 0.01, ..SgdConfig::new(0.05) };
    let params = make_params(DType::F64);
    let mut sgd = Sgd::new(params.clone(), config).unwrap();
    let mut reference: Vec<RefSgd> = (0..SHAPES.len()).map(|k| RefSgd::new(config, initial_values(k))).collect();
    // parameter 1 has no gradient on steps 1 and 3, parameter 2 on step 4
    let schedule: [[bool; 3]; 5] = [[true, false, true], [true, true, true], [true, false, true], [true, true, false], ALL];
    for (i, has_grad) in schedule.iter().enumerate() {
        let step = i + 1;
        let before: Vec<Vec<f64>> = params.iter().map(|p| p.to_vec_f64()).collect();
        sgd.step(&gradients(&params, step, has_grad)).unwrap();
        for (k, r) in reference.iter_mut().enumerate() {
            if has_grad[k] {
                r.step(&gradient_values(k, step));
            } else {
                assert_eq!(params[k].to_vec_f64(), before[k], "param {k} without gradient changed at step {step}");
            }
            assert_matches(&params[k], &r.param, F64_TOLERANCE, &format!("param {k} after step {step}"));
        }
    }
}

// ---- Adam / AdamW ---------------------------------------------------------------------------

#[test]
fn adam_matches_reference() {
    check_adam_against_reference(AdamConfig::adam(0.01), DType::F64, F64_TOLERANCE);
}

#[test]
fn adam_with_custom_betas_and_eps_matches_reference() {
    let config = AdamConfig { beta1: 0.8, beta2: 0.95, eps: 1e-3, ..AdamConfig::adam(0.05) };
    check_adam_against_reference(config, DType::F64, F64_TOLERANCE);
}

/// Adam's weight decay is L2: `λp` is added to the gradient (so it enters m and v).
#[test]
fn adam_l2_weight_decay_matches_reference() {
    let config = AdamConfig { weight_decay: 0.1, ..AdamConfig::adam(0.01) };
    assert!(!config.decoupled_weight_decay);
    check_adam_against_reference(config, DType::F64, F64_TOLERANCE);
}

/// AdamW's weight decay is decoupled: `p ← p(1 − lr·λ)` before the Adam update.
#[test]
fn adamw_decoupled_weight_decay_matches_reference() {
    let config = AdamConfig::adamw(0.01, 0.1);
    assert!(config.decoupled_weight_decay);
    check_adam_against_reference(config, DType::F64, F64_TOLERANCE);
    // a large decay, so that a wrong form (L2 instead of decoupled) could not hide
    check_adam_against_reference(AdamConfig::adamw(0.05, 2.0), DType::F64, F64_TOLERANCE);
}

/// Adam and AdamW differ when weight decay is on (a check that the flag is honoured).
#[test]
fn adam_and_adamw_differ_only_when_weight_decay_is_on() {
    let run = |config: AdamConfig| -> Vec<f64> {
        let params = make_params(DType::F64);
        let mut adam = Adam::new(params.clone(), config).unwrap();
        for step in 1..=3 {
            adam.step(&gradients(&params, step, &ALL)).unwrap();
        }
        params.iter().flat_map(|p| p.to_vec_f64()).collect()
    };
    let no_decay = AdamConfig::adam(0.01);
    assert_eq!(run(no_decay), run(AdamConfig { decoupled_weight_decay: true, ..no_decay }));
    let decayed = AdamConfig { weight_decay: 0.5, ..no_decay };
    assert_ne!(run(decayed), run(AdamConfig { decoupled_weight_decay: true, ..decayed }));
}

#[test]
fn adam_and_adamw_in_f32_track_the_f64_reference() {
    check_adam_against_reference(AdamConfig::adam(0.01), DType::F32, F32_TOLERANCE);
    check_adam_against_reference(AdamConfig::adamw(0.01, 0.1), DType::F32, F32_TOLERANCE);
}

/// A parameter missing from the gradients is skipped: unchanged (AdamW's decay included),
/// its step count and moments untouched, so its later updates use its own bias correction
/// and match a reference that simply skipped those steps.
#[test]
fn adam_skips_parameters_without_gradient_without_advancing_their_step_count() {
    for config in [AdamConfig::adam(0.02), AdamConfig::adamw(0.02, 0.5)] {
        let params = make_params(DType::F64);
        let mut adam = Adam::new(params.clone(), config).unwrap();
        let mut reference: Vec<RefAdam> = (0..SHAPES.len()).map(|k| RefAdam::new(config, initial_values(k))).collect();
        let schedule: [[bool; 3]; 6] = [[true, false, true], [true, false, true], [true, true, true], [false, true, true], [true, true, false], ALL];
        let mut counts = [0u64; 3];
        for (i, has_grad) in schedule.iter().enumerate() {
            let step = i + 1;
            let before: Vec<Vec<f64>> = params.iter().map(|p| p.to_vec_f64()).collect();
            adam.step(&gradients(&params, step, has_grad)).unwrap();
            for (k, r) in reference.iter_mut().enumerate() {
                if has_grad[k] {
                    r.step(&gradient_values(k, step));
                    counts[k] += 1;
                } else {
                    assert_eq!(params[k].to_vec_f64(), before[k], "{config:?}: param {k} without gradient changed at step {step}");
                }
                assert_eq!(adam.state()[k].step, counts[k], "{config:?}: step count of param {k} after step {step}");
                assert_eq!(adam.state()[k].step, r.t);
                assert_matches(&params[k], &r.param, F64_TOLERANCE, &format!("{config:?}: param {k} after step {step}"));
            }
        }
        assert_eq!(counts, [5, 4, 5]);
    }
}

/// The state exposed by `state()` is the reference's `(t, m, v)`.
#[test]
fn adam_state_holds_step_count_and_both_moments() {
    let config = AdamConfig::adamw(0.01, 0.1);
    let params = make_params(DType::F64);
    let mut adam = Adam::new(params.clone(), config).unwrap();
    let mut reference: Vec<RefAdam> = (0..SHAPES.len()).map(|k| RefAdam::new(config, initial_values(k))).collect();
    for step in 1..=3 {
        adam.step(&gradients(&params, step, &ALL)).unwrap();
        for (k, r) in reference.iter_mut().enumerate() {
            r.step(&gradient_values(k, step));
        }
    }
    for (k, (state, r)) in adam.state().iter().zip(&reference).enumerate() {
        assert_eq!(state.step, 3);
        assert_eq!(state.exp_avg.shape(), SHAPES[k]);
        assert_matches(&state.exp_avg, &r.m, F64_TOLERANCE, &format!("exp_avg of param {k}"));
        assert_matches(&state.exp_avg_sq, &r.v, F64_TOLERANCE, &format!("exp_avg_sq of param {k}"));
    }
}

/// A checkpoint of the state, loaded into a fresh optimizer over copies of the parameters,
/// continues exactly (bit for bit) as the original optimizer does.
#[test]
fn adam_state_round_trip_through_load_state_continues_identically() {
    let config = AdamConfig::adamw(0.01, 0.1);
    let params = make_params(DType::F64);
    let mut original = Adam::new(params.clone(), config).unwrap();
    // parameter 2 misses a step, so the step counts differ between parameters
    for step in 1..=3 {
        original.step(&gradients(&params, step, &[true, true, step != 2])).unwrap();
    }

    // checkpoint: deep copies of parameters and state (`state()` hands out live tensors that
    // the next step updates in place, so a checkpoint must copy them)
    let saved_params: Vec<Tensor> = params.iter().map(|p| p.deep_copy().unwrap()).collect();
    let saved_state: Vec<AdamState> = original
        .state()
        .iter()
        .map(|s| AdamState { step: s.step, exp_avg: s.exp_avg.deep_copy().unwrap(), exp_avg_sq: s.exp_avg_sq.deep_copy().unwrap() })
        .collect();
    assert_eq!(saved_state.iter().map(|s| s.step).collect::<Vec<_>>(), [3, 3, 2]);
    let moments = |state: &[AdamState]| -> Vec<Vec<f64>> { state.iter().flat_map(|s| [s.exp_avg.to_vec_f64(), s.exp_avg_sq.to_vec_f64()]).collect() };
    let saved_moments = moments(&saved_state);

    let restored_params: Vec<Tensor> = saved_params.iter().map(|p| p.deep_copy().unwrap().variable()).collect();
    let mut restored = Adam::new(restored_params.clone(), config).unwrap();
    restored.load_state(saved_state.clone()).unwrap();
    // load_state copies: the restored optimizer does not share storage with what it was given
    for (loaded, given) in restored.state().iter().zip(&saved_state) {
        assert!(!loaded.exp_avg.shares_storage_with(&given.exp_avg));
        assert!(!loaded.exp_avg_sq.shares_storage_with(&given.exp_avg_sq));
    }

    for step in 4..=7 {
        original.step(&gradients(&params, step, &ALL)).unwrap();
        restored.step(&gradients(&restored_params, step, &ALL)).unwrap();
        for k in 0..SHAPES.len() {
            assert_eq!(params[k].to_vec_f64(), restored_params[k].to_vec_f64(), "param {k} after step {step}");
            let (a, b) = (&original.state()[k], &restored.state()[k]);
            assert_eq!(a.step, b.step);
            assert_eq!(a.exp_avg.to_vec_f64(), b.exp_avg.to_vec_f64());
            assert_eq!(a.exp_avg_sq.to_vec_f64(), b.exp_avg_sq.to_vec_f64());
        }
    }
    // the checkpoint itself was not touched by the restored optimizer's steps
    assert_eq!(moments(&saved_state), saved_moments);
    assert_ne!(moments(restored.state()), saved_moments);
}

#[test]
fn adam_load_state_rejects_wrong_count_shape_and_dtype() {
    let params = make_params(DType::F64);
    let mut adam = Adam::new(params.clone(), AdamConfig::adam(0.01)).unwrap();
    let good: Vec<AdamState> = adam.state().to_vec();
    assert!(matches!(adam.load_state(good[..2].to_vec()), Err(TensorError::InvalidArgument { .. })));

    let mut wrong_shape = good.clone();
    wrong_shape[0].exp_avg = Tensor::zeros(&[3, 2], DType::F64);
    assert!(adam.load_state(wrong_shape).is_err(), "exp_avg of shape [3, 2] for a [2, 3] parameter");

    let mut wrong_dtype = good.clone();
    wrong_dtype[1].exp_avg_sq = Tensor::zeros(SHAPES[1], DType::F32);
    assert!(adam.load_state(wrong_dtype).is_err(), "f32 exp_avg_sq for an f64 parameter");

    // a failed load leaves the state as it was
    assert!(adam.state().iter().all(|s| s.step == 0));
    adam.load_state(good).unwrap();
}

// ---- errors -----------------------------------------------------------------------------------

#[test]
fn optimizers_reject_parameters_that_are_not_contiguous_variables() {
    let plain = Tensor::zeros(&[2, 3], DType::F64); // not a variable
    let variable = Tensor::zeros(&[2, 3], DType::F64).variable();
    let transposed = Tensor::zeros(&[2, 3], DType::F64).transpose(0, 1).unwrap().variable(); // strided
    let narrowed = Tensor::zeros(&[4], DType::F64).narrow(0, 1, 2).unwrap().variable(); // offset view
    for bad in [plain, transposed, narrowed] {
        let params = vec![variable.clone(), bad.clone()];
        assert!(matches!(Sgd::new(params.clone(), SgdConfig::new(0.1)), Err(TensorError::InvalidArgument { .. })), "Sgd accepted {bad:?}");
        assert!(matches!(Adam::new(params, AdamConfig::adam(0.1)), Err(TensorError::InvalidArgument { .. })), "Adam accepted {bad:?}");
    }
    let half = Tensor::zeros(&[2], DType::F16).variable();
    assert!(matches!(Sgd::new(vec![half.clone()], SgdConfig::new(0.1)), Err(TensorError::UnsupportedDType { .. })));
    assert!(matches!(Adam::new(vec![half], AdamConfig::adam(0.1)), Err(TensorError::UnsupportedDType { .. })));
}

#[test]
fn optimizer_step_rejects_gradient_of_wrong_shape_or_dtype() {
    let p = Tensor::from_f64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::F64).unwrap().variable();
    let before = p.to_vec_f64();
    let with_grad = |g: Tensor| {
        let mut grads = Gradients::default();
        grads.insert(&p, g);
        grads
    };
    let wrong_shape = with_grad(Tensor::ones(&[3, 2], DType::F64));
    let wrong_dtype = with_grad(Tensor::ones(&[2, 3], DType::F32));

    let mut sgd = Sgd::new(vec![p.clone()], SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) }).unwrap();
    assert!(matches!(sgd.step(&wrong_shape), Err(TensorError::ShapeMismatch { .. })));
    assert!(matches!(sgd.step(&wrong_dtype), Err(TensorError::DTypeMismatch { .. })));
    let mut adam = Adam::new(vec![p.clone()], AdamConfig::adam(0.1)).unwrap();
    assert!(matches!(adam.step(&wrong_shape), Err(TensorError::ShapeMismatch { .. })));
    assert!(matches!(adam.step(&wrong_dtype), Err(TensorError::DTypeMismatch { .. })));
    assert_eq!(p.to_vec_f64(), before, "a rejected step changed the parameter");
}

// ---- end to end ---------------------------------------------------------------------------

/// Fits `y = 3x − 2` with a one-weight, one-bias linear model by Adam (f32, gradients from
/// autograd): after 300 steps the MSE is below 1e-4 and the parameters are near (3, −2).
#[test]
fn adam_fits_a_line_in_300_steps() {
    let n = 32;
    let xs: Vec<f64> = (0..n).map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64).collect();
    let ys: Vec<f64> = xs.iter().map(|x| 3.0 * x - 2.0).collect();
    let x = Tensor::from_f64(&xs, &[n, 1], DType::F32).unwrap();
    let y = Tensor::from_f64(&ys, &[n, 1], DType::F32).unwrap();
    let w = Tensor::zeros(&[1, 1], DType::F32).variable();
    let b = Tensor::zeros(&[1], DType::F32).variable();
    let mut adam = Adam::new(vec![w.clone(), b.clone()], AdamConfig::adam(0.1)).unwrap();
    let loss_at = || x.matmul(&w).unwrap().add(&b).unwrap().mse_loss(&y).unwrap();

    let initial = loss_at().item().unwrap();
    for _ in 0..300 {
        let grads = loss_at().backward().unwrap();
        assert_eq!(grads.len(), 2);
        adam.step(&grads).unwrap();
    }
    let loss = loss_at().item().unwrap();
    let (w, b) = (w.item().unwrap(), b.item().unwrap());
    assert!(loss < 1e-4, "loss {loss:.3e} after 300 steps (from {initial:.3e}); w = {w}, b = {b}");
    assert!((w - 3.0).abs() < 1e-2 && (b + 2.0).abs() < 1e-2, "w = {w}, b = {b}");
}
