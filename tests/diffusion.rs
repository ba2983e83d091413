//! crates/diffusion against outside oracles and against the papers' math.
//!
//! - Fixtures (`tests/fixtures/diffusion/samplers.safetensors`, made by
//!   `scripts/make_sampler_fixtures.py` in float64): the schedules against torch.linspace and
//!   diffusers' `squaredcos_cap_v2`; q_sample, DDPM and DDIM steps, a 10-step DDIM chain and a
//!   10-step strided DDPM chain (clip_sample on and off) against diffusers' `DDPMScheduler` /
//!   `DDIMScheduler`; the variational-bound terms against a
//!   NumPy transcription of Ho et al.'s `_vb_terms_bpd` / `_prior_bpd`. Tolerance 1e-6 relative
//!   to each tensor's scale (`max|diff| / max|ref|`).
//! - Where no oracle applies: DDIM with η = 1 on every timestep is DDPM with σ_t² = β̃_t, the
//!   samplers are reproducible from the seed and take their draws in the documented order, the
//!   bound of a perfect model on one image has its closed form, and bad arguments are errors.

use std::collections::BTreeMap;

use ember::diffusion::{
    DdpmOptions, DdpmVariance, NoiseSchedule, TimestepSpacing, VbTerms, bits_per_dim, ddim_sample, ddim_sample_from, ddim_step, ddim_timesteps, ddpm_sample,
    ddpm_sample_from, ddpm_sample_strided, ddpm_step, ddpm_step_to, ddpm_timesteps, epsilon_loss, prior_bpd, variational_bound, vb_terms_bpd, vlb,
};
use ember::tensor::io::{SafetensorsFile, load_safetensors};
use ember::tensor::rng::Rng;
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Tensor, TensorError};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diffusion/samplers.safetensors");
const TOLERANCE: f64 = 1e-6;
const T: usize = 1000;

struct Fixture(SafetensorsFile);

impl Fixture {
    fn load() -> Fixture {
        Fixture(load_safetensors(FIXTURE).unwrap())
    }
    fn get(&self, name: &str) -> Tensor {
        self.0.get(name).unwrap().clone()
    }
    fn values(&self, name: &str) -> Vec<f64> {
        self.get(name).to_vec_f64()
    }
    fn timesteps(&self, name: &str) -> Vec<usize> {
        self.values(name).into_iter().map(|t| t as usize).collect()
    }
}

#[track_caller]
fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    assert!(actual.iter().all(|v| v.is_finite()), "{what}: non-finite values");
    let err = relative_error(actual, expected);
    assert!(err < tolerance, "{what}: relative error {err:.2e} ≥ {tolerance:.0e}");
}

#[track_caller]
fn assert_matches(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    assert_close(&actual.to_vec_f64(), &expected.to_vec_f64(), TOLERANCE, what);
}

fn schedule(name: &str) -> NoiseSchedule {
    match name {
        "linear" => NoiseSchedule::linear(T, 1e-4, 0.02).unwrap(),
        _ => NoiseSchedule::cosine(T).unwrap(),
    }
}

type Model<'a> = Box<dyn FnMut(&Tensor, &[f64]) -> Result<Tensor, TensorError> + 'a>;

/// The chain's deterministic "model", as in the fixture script: ε(x, t) = 0.1 x + sin(t/100) c.
fn toy_model(c: &Tensor) -> Model<'_> {
    Box::new(move |x, t| x.mul_scalar(0.1)?.add(&c.mul_scalar((t[0] / 100.0).sin())?))
}

fn no_progress() -> impl FnMut(usize, usize) {
    |_, _| {}
}

// ---- schedules and the forward process -------------------------------------------------------

#[test]
fn linear_schedule_is_torch_linspace_and_its_cumulative_product() {
    let f = Fixture::load();
    let s = schedule("linear");
    assert_close(s.betas(), &f.values("schedule.linear.betas"), 1e-14, "linear betas");
    assert_close(s.alphas_cumprod(), &f.values("schedule.linear.alphas_cumprod"), 1e-13, "linear alphas_cumprod");
    assert_close(s.betas(), &f.values("schedule.linear.betas_diffusers_f32"), TOLERANCE, "diffusers' float32 betas");
}

#[test]
fn cosine_schedule_is_diffusers_squaredcos_cap_v2() {
    let f = Fixture::load();
    let s = schedule("cosine");
    assert_close(s.betas(), &f.values("schedule.cosine.betas"), 1e-13, "cosine betas");
    assert_close(s.alphas_cumprod(), &f.values("schedule.cosine.alphas_cumprod"), 1e-13, "cosine alphas_cumprod");
    assert_close(s.betas(), &f.values("schedule.cosine.betas_diffusers_f32"), TOLERANCE, "diffusers' float32 betas");
}

#[test]
fn q_sample_matches_diffusers_add_noise_and_a_naive_loop() {
    let f = Fixture::load();
    let s = schedule("linear");
    let (x0, noise, t) = (f.get("q_sample.x0"), f.get("q_sample.noise"), f.timesteps("q_sample.t"));
    let x_t = s.q_sample(&x0, &t, &noise).unwrap();
    assert_matches(&x_t, &f.get("q_sample.x_t"), "q_sample");
    let (x0v, noisev) = (x0.to_vec_f64(), noise.to_vec_f64());
    let per_image = x0v.len() / t.len();
    let naive: Vec<f64> = (0..x0v.len())
        .map(|i| {
            let abar = s.alphas_cumprod()[t[i / per_image]];
            abar.sqrt() * x0v[i] + (1.0 - abar).sqrt() * noisev[i]
        })
        .collect();
    assert_close(&x_t.to_vec_f64(), &naive, 1e-15, "q_sample vs naive");
    let x_t32 = s.q_sample(&x0.to_dtype(DType::F32).unwrap(), &t, &noise.to_dtype(DType::F32).unwrap()).unwrap();
    assert_eq!(x_t32.dtype(), DType::F32);
    assert_close(&x_t32.to_vec_f64(), &naive, 1e-6, "q_sample in f32");
    assert!(s.q_sample(&x0, &t[..3], &noise).is_err());
    assert!(s.q_sample(&x0, &[0, 1, 2, T], &noise).is_err());
}

#[test]
fn epsilon_loss_of_the_exact_noise_predictor_is_zero_in_both_dtypes() {
    let s = schedule("linear");
    for (dtype, bound) in [(DType::F64, 1e-20), (DType::F32, 1e-8)] {
        let x0 = Tensor::rand_uniform(&[4, 3, 8, 8], -1.0, 1.0, dtype, &mut Rng::new(1)).unwrap();
        // The oracle knows x_0: ε = (x_t − √ᾱ_t x_0)/√(1 − ᾱ_t), exactly the noise that was drawn.
        let x0_values = x0.to_vec_f64();
        let mut oracle: Model = Box::new(|x_t, t| {
            let per_image = x0_values.len() / t.len();
            let x = x_t.to_vec_f64();
            let eps: Vec<f64> = (0..x.len())
                .map(|i| {
                    let abar = s.alphas_cumprod()[t[i / per_image] as usize];
                    (x[i] - abar.sqrt() * x0_values[i]) / (1.0 - abar).sqrt()
                })
                .collect();
            Tensor::from_f64(&eps, x_t.shape(), x_t.dtype())
        });
        let loss = epsilon_loss(&mut *oracle, &s, &x0, &mut Rng::new(2)).unwrap();
        assert_eq!(loss.dtype(), dtype);
        let loss = loss.item().unwrap();
        assert!(loss < bound, "{dtype:?}: {loss}");
        // and a useless model (ε̂ = 0) pays the noise's second moment, ≈ 1
        let mut zero: Model = Box::new(|x_t, _| x_t.zeros_like());
        let loss = epsilon_loss(&mut *zero, &s, &x0, &mut Rng::new(2)).unwrap().item().unwrap();
        assert!((loss - 1.0).abs() < 0.15, "{dtype:?}: {loss}");
    }
}

// ---- single steps against diffusers ----------------------------------------------------------

#[test]
fn ddpm_steps_match_diffusers_for_both_variances() {
    let f = Fixture::load();
    for name in ["linear", "cosine"] {
        let s = schedule(name);
        for t in [999, 500, 1, 0] {
            let key = format!("ddpm.{name}.t{t}");
            let (x_t, eps, noise) = (f.get(&format!("{key}.x_t")), f.get(&format!("{key}.eps")), f.get(&format!("{key}.noise")));
            for (variance, label) in [(DdpmVariance::Posterior, "fixed_small"), (DdpmVariance::Beta, "fixed_large")] {
                let prev = ddpm_step(&s, &x_t, t, &eps, variance, Some(&noise)).unwrap();
                assert_matches(&prev, &f.get(&format!("{key}.prev_{label}")), &format!("{key} {label}"));
            }
        }
    }
}

/// The paper's Algorithm 2 written out per element (diffusers agrees with it here, including
/// t = 0 where no noise is added; this checks the math without the oracle, in f32 too).
#[test]
fn ddpm_step_is_algorithm_2_in_f32_and_f64() {
    let s = schedule("cosine");
    let mut rng = Rng::new(9);
    let (x, eps, z) = (rng.normal_values(24), rng.normal_values(24), rng.normal_values(24));
    for dtype in [DType::F64, DType::F32] {
        let tensor = |v: &[f64]| Tensor::from_f64(v, &[2, 3, 4], dtype).unwrap();
        for (t, variance) in [(0, DdpmVariance::Beta), (1, DdpmVariance::Posterior), (700, DdpmVariance::Beta), (999, DdpmVariance::Posterior)] {
            let out = ddpm_step(&s, &tensor(&x), t, &tensor(&eps), variance, Some(&tensor(&z))).unwrap();
            assert_eq!(out.dtype(), dtype);
            let (alpha, beta, abar) = (s.alphas()[t], s.betas()[t], s.alphas_cumprod()[t]);
            let sigma2 = match (t, variance) {
                (0, _) => 0.0,
                (_, DdpmVariance::Beta) => beta,
                (_, DdpmVariance::Posterior) => beta * (1.0 - s.alphas_cumprod()[t - 1]) / (1.0 - abar),
            };
            let want: Vec<f64> = (0..24).map(|i| (x[i] - beta / (1.0 - abar).sqrt() * eps[i]) / alpha.sqrt() + sigma2.sqrt() * z[i]).collect();
            let tolerance = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            assert_close(&out.to_vec_f64(), &want, tolerance, &format!("t = {t}, {variance:?}, {dtype:?}"));
        }
    }
}

#[test]
fn ddim_steps_match_diffusers_for_eta_0_half_and_1() {
    let f = Fixture::load();
    let cases = [("linear", 10, [900, 500, 0]), ("cosine", 10, [900, 100, 0]), ("linear", 7, [852, 142, 0])];
    for (name, steps, timesteps) in cases {
        let s = schedule(name);
        let sequence = ddim_timesteps(T, steps, TimestepSpacing::Leading).unwrap();
        for t in timesteps {
            let position = sequence.iter().position(|&x| x == t).unwrap();
            let t_prev = sequence.get(position + 1).copied();
            let key = format!("ddim.{name}.n{steps}.t{t}");
            let (x_t, eps, noise) = (f.get(&format!("{key}.x_t")), f.get(&format!("{key}.eps")), f.get(&format!("{key}.noise")));
            for (eta, label) in [(0.0, "eta0"), (0.5, "eta050"), (1.0, "eta100")] {
                let prev = ddim_step(&s, &x_t, t, t_prev, &eps, eta, Some(&noise)).unwrap();
                assert_matches(&prev, &f.get(&format!("{key}.prev_{label}")), &format!("{key} {label}"));
            }
        }
    }
}

#[test]
fn ddim_timesteps_match_diffusers_leading_and_trailing() {
    let f = Fixture::load();
    for (spacing, label) in [(TimestepSpacing::Leading, "leading"), (TimestepSpacing::Trailing, "trailing")] {
        for steps in [1, 3, 10, 50, 1000] {
            let expected = f.timesteps(&format!("ddim_timesteps.{label}.n{steps}"));
            assert_eq!(ddim_timesteps(T, steps, spacing).unwrap(), expected, "{label}, {steps} steps");
        }
    }
}

#[test]
fn a_ten_step_ddim_chain_matches_diffusers() {
    let f = Fixture::load();
    let s = schedule("linear");
    let (c, x_big_t) = (f.get("chain.c"), f.get("chain.x_T"));
    let timesteps = ddim_timesteps(T, 10, TimestepSpacing::Leading).unwrap();

    // η = 0 through the sampler itself: deterministic, so it must not touch the RNG.
    let mut rng = Rng::new(4);
    let mut calls = Vec::new();
    let out = ddim_sample_from(&mut *toy_model(&c), &s, x_big_t.clone(), &timesteps, 0.0, &mut rng, &mut |i, n| calls.push((i, n))).unwrap();
    let trajectory = f.get("chain.eta0.trajectory");
    assert_matches(&out, &trajectory.narrow(0, 9, 1).unwrap().squeeze(0).unwrap(), "eta 0 chain");
    assert_eq!(rng, Rng::new(4));
    assert_eq!(calls, (1..=10).map(|i| (i, 10)).collect::<Vec<_>>());

    // η = 1 step by step with the fixture's noise: every intermediate x.
    for (label, eta) in [("eta0", 0.0), ("eta100", 1.0)] {
        let trajectory = f.get(&format!("chain.{label}.trajectory"));
        check_trajectory(&c, &x_big_t, &timesteps, &f.get("chain.eta100.noise"), &trajectory, label, |x, t, t_prev, eps, z| {
            ddim_step(&s, x, t, t_prev, eps, eta, Some(z)).unwrap()
        });
    }
}

/// Steps `step(x, t, t_prev, ε, z)` along `timesteps` from `x_big_t`, with ε from the fixture's
/// toy model and z = `noise[i]` at step i, checking each x against `trajectory[i]`. Returns the
/// last x.
fn check_trajectory(
    c: &Tensor,
    x_big_t: &Tensor,
    timesteps: &[usize],
    noise: &Tensor,
    trajectory: &Tensor,
    what: &str,
    mut step: impl FnMut(&Tensor, usize, Option<usize>, &Tensor, &Tensor) -> Tensor,
) -> Tensor {
    let row = |t: &Tensor, i: usize| t.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
    let mut x = x_big_t.clone();
    let mut model = toy_model(c);
    for (i, &t) in timesteps.iter().enumerate() {
        let eps = model(&x, &[t as f64; 2]).unwrap();
        x = step(&x, t, timesteps.get(i + 1).copied(), &eps, &row(noise, i));
        assert_matches(&x, &row(trajectory, i), &format!("{what}, step {i} (t = {t})"));
    }
    x
}

/// diffusers' DDPMScheduler after set_timesteps(10) (900, 800, …, 0), both variances, with and
/// without clip_sample, step by step with the fixture's noise: every intermediate x.
#[test]
fn a_strided_ddpm_chain_matches_diffusers_with_and_without_clipping() {
    let f = Fixture::load();
    let s = schedule("linear");
    let (c, x_big_t, noise) = (f.get("ddpm_chain.c"), f.get("ddpm_chain.x_T"), f.get("ddpm_chain.noise"));
    let timesteps = ddpm_timesteps(T, 10).unwrap();
    assert_eq!(timesteps, f.timesteps("ddpm_chain.timesteps"));
    for (variance, variance_label) in [(DdpmVariance::Posterior, "fixed_small"), (DdpmVariance::Beta, "fixed_large")] {
        for (clip_sample, clip_label) in [(true, "clip"), (false, "noclip")] {
            let trajectory = f.get(&format!("ddpm_chain.{variance_label}.{clip_label}.trajectory"));
            let options = DdpmOptions { variance, clip_sample };
            let what = format!("{variance_label}, {clip_label}");
            let x = check_trajectory(&c, &x_big_t, &timesteps, &noise, &trajectory, &what, |x, t, t_prev, eps, z| {
                ddpm_step_to(&s, x, t, t_prev, eps, options, Some(z)).unwrap()
            });
            if clip_sample {
                // the last step returns the clipped x̂_0
                assert!(x.to_vec_f64().iter().all(|v| v.abs() <= 1.0 + 1e-12));
            }
        }
    }
}

/// The strided sampler is its steps with the documented draws (x_T, then one z per step with
/// t > 0), and on every timestep it is Algorithm 2.
#[test]
fn the_strided_ddpm_sampler_is_its_steps_and_on_every_timestep_algorithm_2() {
    let s = NoiseSchedule::from_name("linear", 40).unwrap();
    let c = Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut Rng::new(3));
    let timesteps = ddpm_timesteps(40, 6).unwrap();
    assert_eq!(timesteps, [30, 24, 18, 12, 6, 0]);
    let options = DdpmOptions { variance: DdpmVariance::Beta, clip_sample: true };
    let mut rng = Rng::new(21);
    let x_big_t = Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut rng);
    let mut progress = Vec::new();
    let sampled = ddpm_sample_strided(&mut *toy_model(&c), &s, x_big_t.clone(), &timesteps, options, &mut rng, &mut |i, n| progress.push((i, n))).unwrap();
    assert_eq!(progress, (1..=6).map(|i| (i, 6)).collect::<Vec<_>>());

    let mut replay = Rng::new(21);
    let mut x = Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut replay);
    let mut model = toy_model(&c);
    for (i, &t) in timesteps.iter().enumerate() {
        let eps = model(&x, &[t as f64; 2]).unwrap();
        let z = (t > 0).then(|| Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut replay));
        x = ddpm_step_to(&s, &x, t, timesteps.get(i + 1).copied(), &eps, options, z.as_ref()).unwrap();
    }
    assert_eq!(sampled.to_vec_f64(), x.to_vec_f64());
    assert_eq!(rng, replay);

    // every timestep, no clipping: Algorithm 2 (ddpm_sample_from), bit for bit
    let all = ddpm_timesteps(40, 40).unwrap();
    let plain = DdpmOptions { variance: DdpmVariance::Posterior, clip_sample: false };
    let strided = ddpm_sample_strided(&mut *toy_model(&c), &s, x_big_t.clone(), &all, plain, &mut Rng::new(5), &mut no_progress()).unwrap();
    let algorithm2 = ddpm_sample_from(&mut *toy_model(&c), &s, x_big_t.clone(), DdpmVariance::Posterior, &mut Rng::new(5), &mut no_progress()).unwrap();
    assert_eq!(strided.to_vec_f64(), algorithm2.to_vec_f64());
    // and clipping changes a chain whose predicted x̂_0 leaves [−1, 1]
    let clipped =
        ddpm_sample_strided(&mut *toy_model(&c), &s, x_big_t.clone(), &all, DdpmOptions { clip_sample: true, ..plain }, &mut Rng::new(5), &mut no_progress());
    assert!(relative_error(&clipped.unwrap().to_vec_f64(), &algorithm2.to_vec_f64()) > 1e-3);

    // bad timesteps and steps are errors
    let invalid = |r: Result<Tensor, TensorError>| matches!(r, Err(TensorError::InvalidArgument { .. }));
    for bad in [&[5, 5, 0][..], &[3, 7], &[], &[40]] {
        assert!(invalid(ddpm_sample_strided(&mut *toy_model(&c), &s, x_big_t.clone(), bad, plain, &mut Rng::new(0), &mut no_progress())), "{bad:?}");
    }
    assert!(invalid(ddpm_step_to(&s, &x_big_t, 6, Some(6), &x_big_t, plain, None)));
    assert!(ddpm_timesteps(40, 0).is_err() && ddpm_timesteps(40, 41).is_err());
}

#[test]
fn guidance_in_a_ddim_chain_matches_diffusers_pipeline_formula() {
    let f = Fixture::load();
    let s = schedule("linear");
    let (c_text, c_uncond, x_big_t) = (f.get("guided.c_text"), f.get("guided.c_uncond"), f.get("guided.x_T"));
    let timesteps = ddim_timesteps(T, 10, TimestepSpacing::Leading).unwrap();
    for (label, scale) in [("w0", 0.0), ("w1", 1.0), ("w3", 3.0), ("w7_5", 7.5)] {
        // the fixture's toy predictions, combined by ember's guidance formula
        let mut guided = |x: &Tensor, t: &[f64]| -> Result<Tensor, TensorError> {
            let conditional = x.mul_scalar(0.1)?.add(&c_text.mul_scalar((t[0] / 100.0).sin())?)?;
            let unconditional = x.mul_scalar(0.05)?.sub(&c_uncond.mul_scalar((t[0] / 100.0).cos())?)?;
            ember::train::sampling::guided_noise(&conditional, &unconditional, scale)
        };
        let x0 = ddim_sample_from(&mut guided, &s, x_big_t.clone(), &timesteps, 0.0, &mut Rng::new(0), &mut no_progress()).unwrap();
        assert_matches(&x0, &f.get(&format!("guided.{label}.x_0")), &format!("guidance {scale}"));
    }
}

// ---- the samplers ------------------------------------------------------------------------------

/// The exact noise predictor for data x_0 ~ N(m, v·I): E[ε | x_t] = √(1 − ᾱ_t)(x_t − √ᾱ_t m)/(ᾱ_t v + 1 − ᾱ_t).
fn gaussian_data_model<'a>(s: &'a NoiseSchedule, mean: &'a Tensor, var: f64) -> Model<'a> {
    Box::new(move |x_t, t| {
        let abar = s.alphas_cumprod()[t[0] as usize];
        x_t.sub(&mean.mul_scalar(abar.sqrt())?)?.mul_scalar((1.0 - abar).sqrt() / (abar * var + 1.0 - abar))
    })
}

/// DDIM with η = 1 on all T timesteps is DDPM with σ_t² = β̃_t (Song et al., Sec. 4.1): both
/// draw x_T, then one z per step with t > 0, so from one seed they make the same images.
#[test]
fn ddim_with_eta_1_on_every_step_is_ddpm_with_the_posterior_variance() {
    let shape = [2, 1, 3, 3];
    let mean = Tensor::randn(&shape, 0.0, 0.5, DType::F64, &mut Rng::new(1));
    for name in ["linear", "cosine"] {
        let s = schedule(name);
        let model = || gaussian_data_model(&s, &mean, 0.04);
        let ddpm = |variance| ddpm_sample(&mut *model(), &s, &shape, DType::F64, variance, &mut Rng::new(8), &mut no_progress()).unwrap();
        let ddim = ddim_sample(&mut *model(), &s, &shape, DType::F64, T, 1.0, &mut Rng::new(8), &mut no_progress()).unwrap();
        let posterior = ddpm(DdpmVariance::Posterior).to_vec_f64();
        assert_close(&ddim.to_vec_f64(), &posterior, 1e-10, &format!("{name}: DDIM(eta = 1) vs DDPM(posterior)"));
        // Not a coincidence of the model: σ² = β_t gives other images.
        let beta = ddpm(DdpmVariance::Beta).to_vec_f64();
        assert!(relative_error(&beta, &posterior) > 5e-3, "{name}: {:.2e}", relative_error(&beta, &posterior));
        // and a sample of N(m, 0.04) lies near m (|x − m| < 5σ = 1 for all 18 values)
        assert!(posterior.iter().zip(mean.to_vec_f64()).all(|(x, m)| (x - m).abs() < 1.0), "{name}: {posterior:?}");
    }
}

#[test]
fn samplers_are_reproducible_from_the_seed_in_f32() {
    let s = NoiseSchedule::from_name("cosine", 50).unwrap();
    let c = Tensor::randn(&[3, 2, 4, 4], 0.0, 1.0, DType::F32, &mut Rng::new(1));
    let shape = [3, 2, 4, 4];
    let ddpm = |seed| ddpm_sample(&mut *toy_model(&c), &s, &shape, DType::F32, DdpmVariance::Beta, &mut Rng::new(seed), &mut no_progress()).unwrap();
    let ddim = |seed| ddim_sample(&mut *toy_model(&c), &s, &shape, DType::F32, 12, 0.5, &mut Rng::new(seed), &mut no_progress()).unwrap();
    for (name, sample) in [("ddpm", &ddpm as &dyn Fn(u64) -> Tensor), ("ddim", &ddim)] {
        let (a, b, other) = (sample(5), sample(5), sample(6));
        assert_eq!((a.dtype(), a.shape()), (DType::F32, &shape[..]), "{name}");
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{name}: same seed, same images");
        assert!(relative_error(&a.to_vec_f64(), &other.to_vec_f64()) > 0.1, "{name}: another seed, other images");
        assert!(!a.requires_grad(), "{name}: sampling records no graph");
    }
}

/// The samplers' documented draw order: x_T, then one z per noisy step (DDPM: every t > 0).
#[test]
fn ddpm_sample_is_its_steps_with_the_documented_draws() {
    let s = NoiseSchedule::from_name("linear", 40).unwrap();
    let c = Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut Rng::new(3));
    let mut progress = Vec::new();
    let mut rng = Rng::new(21);
    let sampled = ddpm_sample(&mut *toy_model(&c), &s, &[2, 5], DType::F64, DdpmVariance::Posterior, &mut rng, &mut |i, n| progress.push((i, n))).unwrap();
    assert_eq!(progress, (1..=40).map(|i| (i, 40)).collect::<Vec<_>>());

    let mut replay = Rng::new(21);
    let mut x = Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut replay);
    let mut model = toy_model(&c);
    for t in (0..40).rev() {
        let eps = model(&x, &[t as f64; 2]).unwrap();
        let z = (t > 0).then(|| Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut replay));
        x = ddpm_step(&s, &x, t, &eps, DdpmVariance::Posterior, z.as_ref()).unwrap();
    }
    assert_eq!(sampled.to_vec_f64(), x.to_vec_f64());
    assert_eq!(rng, replay);
    // ddpm_sample = x_T from the RNG, then ddpm_sample_from
    let mut again = Rng::new(21);
    let x_big_t = Tensor::randn(&[2, 5], 0.0, 1.0, DType::F64, &mut again);
    let from = ddpm_sample_from(&mut *toy_model(&c), &s, x_big_t, DdpmVariance::Posterior, &mut again, &mut no_progress()).unwrap();
    assert_eq!(from.to_vec_f64(), sampled.to_vec_f64());
}

#[derive(Debug)]
enum TrainerError {
    Tensor(TensorError),
    ModelBroke(f64),
}

impl From<TensorError> for TrainerError {
    fn from(e: TensorError) -> Self {
        TrainerError::Tensor(e)
    }
}

#[test]
fn bad_arguments_and_model_errors_come_back_as_errors() {
    let s = NoiseSchedule::cosine(30).unwrap();
    let mut rng = Rng::new(0);
    let mut identity: Model = Box::new(|x, _| Ok(x.clone()));
    let invalid = |r: Result<Tensor, TensorError>| matches!(r, Err(TensorError::InvalidArgument { .. }));
    assert!(invalid(ddim_sample(&mut *identity, &s, &[1, 4], DType::F32, 0, 0.0, &mut rng, &mut no_progress())));
    assert!(invalid(ddim_sample(&mut *identity, &s, &[1, 4], DType::F32, 31, 0.0, &mut rng, &mut no_progress())));
    assert!(invalid(ddim_sample(&mut *identity, &s, &[1, 4], DType::F32, 10, 1.5, &mut rng, &mut no_progress())));
    assert!(invalid(ddim_sample(&mut *identity, &s, &[1, 4], DType::F32, 10, f64::NAN, &mut rng, &mut no_progress())));
    assert!(invalid(ddim_sample(&mut *identity, &s, &[], DType::F32, 10, 0.0, &mut rng, &mut no_progress())));
    assert!(invalid(ddpm_sample(&mut *identity, &s, &[0, 4], DType::F32, DdpmVariance::Beta, &mut rng, &mut no_progress())));
    let x = Tensor::zeros(&[1, 4], DType::F64);
    for bad in [&[5, 5, 0][..], &[3, 7], &[], &[30]] {
        assert!(invalid(ddim_sample_from(&mut *identity, &s, x.clone(), bad, 0.0, &mut rng, &mut no_progress())), "{bad:?}");
    }
    // A model whose output has the wrong shape: a shape error, not a panic.
    let mut squash: Model = Box::new(|x, _| x.sum(&[-1], false));
    let r = ddpm_sample(&mut *squash, &s, &[2, 3], DType::F64, DdpmVariance::Beta, &mut rng, &mut no_progress());
    assert!(matches!(r, Err(TensorError::ShapeMismatch { .. })));
    // The caller's own error type passes through, and progress stops where the model failed.
    let mut failing = |x: &Tensor, t: &[f64]| if t[0] < 20.0 { Err(TrainerError::ModelBroke(t[0])) } else { Ok(x.clone()) };
    let mut done = 0;
    let r = ddpm_sample(&mut failing, &s, &[2, 3], DType::F64, DdpmVariance::Beta, &mut rng, &mut |i, _| done = i);
    assert!(matches!(r, Err(TrainerError::ModelBroke(t)) if t == 19.0), "{r:?}");
    assert_eq!(done, 10);
    let r = ddim_sample(&mut failing, &s, &[2, 3], DType::F64, 40, 0.0, &mut rng, &mut no_progress());
    assert!(matches!(r, Err(TrainerError::Tensor(TensorError::InvalidArgument { .. }))), "{r:?}");
}

// ---- the variational bound -----------------------------------------------------------------------

#[test]
fn vb_terms_and_prior_match_the_papers_code() {
    let f = Fixture::load();
    let s = schedule("linear");
    let x0 = f.get("vlb.x0");
    for t in [999, 500, 1, 0] {
        let (x_t, eps) = (f.get(&format!("vlb.t{t}.x_t")), f.get(&format!("vlb.t{t}.eps")));
        for (clip, clip_label) in [(true, "clip"), (false, "noclip")] {
            for (variance, label) in [(DdpmVariance::Beta, "fixedlarge"), (DdpmVariance::Posterior, "fixedsmall")] {
                let VbTerms { bpd, x0_mse } = vb_terms_bpd(&s, &x0, &x_t, t, &eps, variance, clip).unwrap();
                let what = format!("t = {t}, {label}, {clip_label}");
                assert_close(&bpd, &f.values(&format!("vlb.t{t}.bpd_{label}_{clip_label}")), TOLERANCE, &what);
                assert_close(&x0_mse, &f.values(&format!("vlb.t{t}.mse_{clip_label}")), TOLERANCE, &what);
            }
        }
    }
    assert_close(&prior_bpd(&s, &x0).unwrap(), &f.values("vlb.prior_bpd"), TOLERANCE, "prior");
}

/// ε*(x_t, t) = (x_t − √ᾱ_t x_0)/√(1 − ᾱ_t) + shift.
fn perfect_model<'a>(s: &'a NoiseSchedule, x0: &'a Tensor, shift: f64) -> Model<'a> {
    Box::new(move |x_t, t| {
        let abar = s.alphas_cumprod()[t[0] as usize];
        x_t.sub(&x0.mul_scalar(abar.sqrt())?)?.mul_scalar(1.0 / (1.0 - abar).sqrt())?.add_scalar(shift)
    })
}

/// With one fixed image x_0 as the whole data set, the best ε-model is the true noise,
/// ε*(x_t, t) = (x_t − √ᾱ_t x_0)/√(1 − ᾱ_t): x̂_0 = x_0, so every KL has equal means and the
/// bound is closed-form: the prior, the decoder's −log₂ p(x_0 | μ = x_0, σ² = β̃_1), and for
/// σ_t² = β_t the variance mismatch ½(−1 + ln(β_t/β̃_t) + β̃_t/β_t)/ln 2 per step. None of it
/// depends on the noise drawn.
#[test]
fn the_bound_of_the_perfect_model_on_one_image_has_its_closed_form() {
    let s = schedule("linear");
    let x0_values: Vec<f64> = (0..48).map(|i| ((i * 37) % 256) as f64 / 127.5 - 1.0).chain([-1.0, 1.0]).collect();
    let x0 = Tensor::from_f64(&x0_values, &[1, 50], DType::F64).unwrap();
    let perfect = |shift: f64| perfect_model(&s, &x0, shift);
    let ln2 = std::f64::consts::LN_2;
    let sigma = s.posterior_variance()[1].sqrt();
    let decoder = x0_values
        .iter()
        .map(|&x| {
            let (upper, lower) = (vlb::approx_standard_normal_cdf(1.0 / 255.0 / sigma), vlb::approx_standard_normal_cdf(-1.0 / 255.0 / sigma));
            let p = if x < -0.999 {
                upper
            } else if x > 0.999 {
                1.0 - lower
            } else {
                upper - lower
            };
            -p.log2()
        })
        .sum::<f64>()
        / 50.0;
    let abar_last = s.alphas_cumprod()[T - 1];
    let prior = x0_values.iter().map(|&x| 0.5 * (-1.0 - (1.0 - abar_last).ln() + (1.0 - abar_last) + abar_last * x * x)).sum::<f64>() / 50.0 / ln2;
    let mismatch: f64 = (1..T)
        .map(|t| {
            let (beta, beta_tilde) = (s.betas()[t], s.posterior_variance()[t]);
            0.5 * (-1.0 + (beta / beta_tilde).ln() + beta_tilde / beta) / ln2
        })
        .sum();

    for (variance, expected) in [(DdpmVariance::Posterior, prior + decoder), (DdpmVariance::Beta, prior + decoder + mismatch)] {
        let mut totals = Vec::new();
        for seed in [1, 2] {
            let bound = variational_bound(&mut *perfect(0.0), &s, &x0, variance, false, &mut Rng::new(seed), &mut no_progress()).unwrap();
            assert_close(&bound.prior_bpd, &[prior], 1e-12, "prior");
            assert_close(&[bound.terms_bpd[0][0]], &[decoder], 1e-9, "decoder");
            assert!(bound.x0_mse[0].iter().all(|&m| m < 1e-20));
            totals.push(bound.total_bpd[0]);
        }
        assert_close(&totals, &[expected; 2], 1e-9, &format!("{variance:?} total"));
        // A model that is off by 0.1 everywhere pays for it.
        let worse = bits_per_dim(&mut *perfect(0.1), &s, &x0, variance, &mut Rng::new(1), &mut no_progress()).unwrap();
        assert!(worse[0] > expected + 0.05, "{variance:?}: {} vs {expected}", worse[0]);
    }
}

/// The loop draws one ε per t from T−1 down to 0, and its total is Σ terms + prior;
/// bits_per_dim is the clipped bound.
#[test]
fn the_bound_is_the_sum_of_its_terms_at_the_documented_draws() {
    let s = NoiseSchedule::cosine(25).unwrap();
    let x0 = Tensor::rand_uniform(&[3, 2, 2, 2], -1.0, 1.0, DType::F64, &mut Rng::new(5)).unwrap();
    let c = Tensor::randn(&[3, 2, 2, 2], 0.0, 1.0, DType::F64, &mut Rng::new(6));
    let mut calls = BTreeMap::new();
    let bound = variational_bound(&mut *toy_model(&c), &s, &x0, DdpmVariance::Beta, true, &mut Rng::new(7), &mut |i, n| {
        calls.insert(i, n);
    })
    .unwrap();
    assert_eq!(calls.len(), 25);
    assert!(calls.iter().all(|(i, n)| (1..=25).contains(i) && *n == 25));
    let mut replay = Rng::new(7);
    let mut model = toy_model(&c);
    for t in (0..25).rev() {
        let noise = Tensor::randn(x0.shape(), 0.0, 1.0, DType::F64, &mut replay);
        let x_t = s.q_sample(&x0, &[t; 3], &noise).unwrap();
        let eps = model(&x_t, &[t as f64; 3]).unwrap();
        let terms = vb_terms_bpd(&s, &x0, &x_t, t, &eps, DdpmVariance::Beta, true).unwrap();
        for b in 0..3 {
            assert_eq!(bound.terms_bpd[b][t], terms.bpd[b], "image {b}, t = {t}");
        }
    }
    for b in 0..3 {
        let sum = bound.terms_bpd[b].iter().sum::<f64>() + bound.prior_bpd[b];
        assert!((bound.total_bpd[b] - sum).abs() < 1e-12);
    }
    let bpd = bits_per_dim(&mut *toy_model(&c), &s, &x0, DdpmVariance::Beta, &mut Rng::new(7), &mut no_progress()).unwrap();
    assert_eq!(bpd, bound.total_bpd);
    let unclipped = variational_bound(&mut *toy_model(&c), &s, &x0, DdpmVariance::Beta, false, &mut Rng::new(7), &mut no_progress()).unwrap();
    assert_ne!(unclipped.total_bpd, bound.total_bpd, "the toy model's x̂_0 leaves [-1, 1], so clipping matters");
    let outside = x0.mul_scalar(1.5).unwrap();
    assert!(bits_per_dim(&mut *toy_model(&c), &s, &outside, DdpmVariance::Beta, &mut Rng::new(7), &mut no_progress()).is_err());
}
