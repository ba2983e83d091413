//! Ancestral sampling (Algorithm 2): from x_T ~ N(0, I), for t = T−1 … 0 (0-based),
//!
//! `x_{t−1} = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t)) + σ_t z`,  z ~ N(0, I),
//!
//! with z = 0 at the last step (the paper's t = 1; here t = 0). This is eq. 11's mean: the
//! posterior mean μ̃_t(x_t, x̂_0) with x̂_0 from the predicted noise (diffusers computes it in
//! that second form; the two are equal). σ_t² is β_t or β̃_t (Sec. 3.2: "both had similar
//! results"; β_t is optimal for x_0 ~ N(0, I), β̃_t for a deterministic x_0).
//!
//! **Strided DDPM** (diffusers' `DDPMScheduler.set_timesteps(n)`): the same step between two
//! timesteps s < t of a subsequence ([`ddpm_timesteps`]), with the process from x_s to x_t in
//! place of one forward step: `α'_t = ᾱ_t/ᾱ_s` and `β'_t = 1 − α'_t` replace α_t and β_t (so
//! σ² is β'_t, or β̃'_t = β'_t (1 − ᾱ_s)/(1 − ᾱ_t)); after the last timestep the chain goes to
//! the data, ᾱ_s = 1. On consecutive timesteps this is Algorithm 2 exactly.
//!
//! **Clipping** ([`DdpmOptions::clip_sample`]): Algorithm 2 has none; the paper's code
//! (`clip_denoised`) and diffusers (`clip_sample=True`, its default) clip x̂_0 to [−1, 1] before
//! the posterior mean. Here the step then runs on the noise that implies the clipped x̂_0
//! ([`NoiseSchedule::clipped_noise`]), which gives the same mean.

use ember_tensor::rng::Rng;
use ember_tensor::{DType, Result, Tensor, TensorError, no_grad};

use crate::ddim::alpha_bar_prev;
use crate::{NoiseModel, NoiseSchedule, TimestepSpacing, check_batch_shape, check_like, check_timestep_sequence, invalid, predict_noise};

/// The reverse-process variance σ_t² of Algorithm 2 (Sec. 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdpmVariance {
    /// σ_t² = β_t (the paper's code calls it "fixedlarge", diffusers "fixed_large"; the
    /// paper's CIFAR-10 model).
    Beta,
    /// σ_t² = β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t), the posterior's variance ("fixedsmall",
    /// diffusers' default "fixed_small").
    Posterior,
}

impl DdpmVariance {
    /// By name: `"beta"` / `"fixedlarge"` / `"fixed_large"`, or `"posterior"` /
    /// `"fixedsmall"` / `"fixed_small"`.
    pub fn from_name(name: &str) -> Result<DdpmVariance> {
        match name {
            "beta" | "fixedlarge" | "fixed_large" => Ok(DdpmVariance::Beta),
            "posterior" | "fixedsmall" | "fixed_small" => Ok(DdpmVariance::Posterior),
            other => invalid("DdpmVariance::from_name", format!("unknown variance {other:?}; expected \"beta\" or \"posterior\"")),
        }
    }
}

/// How a DDPM step uses the model's prediction: the variance σ² of the step and whether the
/// predicted x̂_0 is clipped to [−1, 1] first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DdpmOptions {
    pub variance: DdpmVariance,
    /// Clip x̂_0 to [−1, 1] before the posterior mean (diffusers' `clip_sample=True`, the
    /// paper code's `clip_denoised`); false is Algorithm 2.
    pub clip_sample: bool,
}

/// The coefficients of a step from t to `t_prev` (`None`: to the data, ᾱ = 1): `(α'_t, β'_t,
/// ᾱ_prev)` with `α'_t = ᾱ_t/ᾱ_prev`, `β'_t = 1 − α'_t`. A step to t − 1 (or from 0 to the
/// data) takes the schedule's own α_t and β_t, which are these without the rounding of the
/// ratio.
fn step_coefficients(op: &'static str, schedule: &NoiseSchedule, t: usize, t_prev: Option<usize>) -> Result<(f64, f64, f64)> {
    let abar_prev = alpha_bar_prev(op, schedule, t, t_prev)?;
    if t_prev == t.checked_sub(1) {
        return Ok((schedule.alphas()[t], schedule.betas()[t], abar_prev));
    }
    let alpha = schedule.alphas_cumprod()[t] / abar_prev;
    Ok((alpha, 1.0 - alpha, abar_prev))
}

impl DdpmVariance {
    /// σ² of a step from t to `t_prev` (`None`: to the data): β'_t or
    /// β̃'_t = β'_t (1 − ᾱ_prev)/(1 − ᾱ_t) (see the module doc; β_t and β̃_t for t − 1), and 0
    /// at t = 0, where Algorithm 2 adds no noise.
    pub fn step_variance(self, schedule: &NoiseSchedule, t: usize, t_prev: Option<usize>) -> Result<f64> {
        let op = "DdpmVariance::step_variance";
        let (_, beta, abar_prev) = step_coefficients(op, schedule, t, t_prev)?;
        Ok(match (t, self) {
            (0, _) => 0.0,
            (_, DdpmVariance::Beta) => beta,
            (_, DdpmVariance::Posterior) if t_prev == Some(t - 1) => schedule.posterior_variance()[t],
            (_, DdpmVariance::Posterior) => beta * (1.0 - abar_prev) / (1.0 - schedule.alphas_cumprod()[t]),
        })
    }
}

/// One step of Algorithm 2 (line 4): given x_t, the predicted noise `eps` = ε_θ(x_t, t) and
/// z (`noise`, both of x_t's shape and dtype),
/// `x_{t−1} = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε) + σ_t z`.
/// `noise` is required when σ_t > 0 (t > 0) and ignored at t = 0. This is [`ddpm_step_to`]
/// t − 1 without clipping.
pub fn ddpm_step(schedule: &NoiseSchedule, x_t: &Tensor, t: usize, eps: &Tensor, variance: DdpmVariance, noise: Option<&Tensor>) -> Result<Tensor> {
    ddpm_step_to(schedule, x_t, t, t.checked_sub(1), eps, DdpmOptions { variance, clip_sample: false }, noise)
}

/// One DDPM step from x_t to x_s, s = `t_prev` (< t; `None`: to the data), as diffusers'
/// `DDPMScheduler.step` after `set_timesteps` (see the module doc):
/// `x_s = 1/√α'_t · (x_t − β'_t/√(1 − ᾱ_t) · ε) + σ z`, with ε = `eps` = ε_θ(x_t, t), or, when
/// `options.clip_sample`, the ε of the clipped x̂_0 ([`NoiseSchedule::clipped_noise`]). σ² is
/// [`DdpmVariance::step_variance`]; `noise` (z) is required when σ > 0, ignored otherwise.
pub fn ddpm_step_to(
    schedule: &NoiseSchedule,
    x_t: &Tensor,
    t: usize,
    t_prev: Option<usize>,
    eps: &Tensor,
    options: DdpmOptions,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    let op = "ddpm_step";
    let (alpha, beta, _) = step_coefficients(op, schedule, t, t_prev)?;
    check_like(op, eps, x_t)?;
    let clipped;
    let eps = if options.clip_sample {
        clipped = schedule.clipped_noise(x_t, t, eps)?;
        &clipped
    } else {
        eps
    };
    let scale = 1.0 / alpha.sqrt();
    let mean = x_t.mul_scalar(scale)?.sub(&eps.mul_scalar(scale * beta / (1.0 - schedule.alphas_cumprod()[t]).sqrt())?)?;
    let sigma = options.variance.step_variance(schedule, t, t_prev)?.sqrt();
    if sigma == 0.0 {
        return Ok(mean);
    }
    let Some(noise) = noise else {
        return invalid(op, format!("timestep {t} adds noise (sigma = {sigma:e}) but no noise tensor was given"));
    };
    check_like(op, noise, x_t)?;
    mean.add(&noise.mul_scalar(sigma)?)
}

/// The strided DDPM's timesteps: `steps` of the `num_train_steps`, diffusers'
/// `DDPMScheduler.set_timesteps(steps)` with its default spacing ("leading", `steps_offset`
/// 0): `{(S−1)k, …, k, 0}` with `k = ⌊T/S⌋`, in sampling order, the same subsequence as
/// [`crate::ddim_timesteps`] with [`TimestepSpacing::Leading`]. `steps = T` is every
/// timestep, Algorithm 2.
pub fn ddpm_timesteps(num_train_steps: usize, steps: usize) -> Result<Vec<usize>> {
    crate::ddim_timesteps(num_train_steps, steps, TimestepSpacing::Leading)
}

/// Ancestral sampling (Algorithm 2): x_T ~ N(0, I) of `shape` ([B, …]) and `dtype`, then
/// [`ddpm_sample_from`]. Draws from `rng`: x_T first, then one z per step with t > 0.
/// `progress(done, T)` is called after each of the T steps.
pub fn ddpm_sample<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    shape: &[usize],
    dtype: DType,
    variance: DdpmVariance,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Tensor, E> {
    check_batch_shape("ddpm_sample", shape)?;
    let x_t = Tensor::randn(shape, 0.0, 1.0, dtype, rng);
    ddpm_sample_from(model, schedule, x_t, variance, rng, progress)
}

/// Algorithm 2 from a given x_T (`x_t`): [`ddpm_sample_strided`] on every timestep
/// T−1 … 0, without clipping. Returns x_0.
pub fn ddpm_sample_from<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x_t: Tensor,
    variance: DdpmVariance,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Tensor, E> {
    let timesteps: Vec<usize> = (0..schedule.num_steps()).rev().collect();
    ddpm_sample_strided(model, schedule, x_t, &timesteps, DdpmOptions { variance, clip_sample: false }, rng, progress)
}

/// DDPM from a given x_T (`x_t`, taken to be at `timesteps[0]`) over `timesteps` (strictly
/// decreasing, all < T, e.g. from [`ddpm_timesteps`]): at each t, ε = model(x_t, [t; B]),
/// z ~ N(0, I) from `rng` if σ > 0 (every t > 0), then [`ddpm_step_to`] the next timestep
/// (after the last one: to the data). Runs without recording gradients; `progress(done, len)`
/// is called after each step. Returns x_0.
pub fn ddpm_sample_strided<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x_t: Tensor,
    timesteps: &[usize],
    options: DdpmOptions,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Tensor, E> {
    let op = "ddpm_sample";
    check_batch_shape(op, x_t.shape())?;
    check_timestep_sequence(op, schedule, timesteps)?;
    let _no_grad = no_grad();
    let mut x = x_t;
    for (i, &t) in timesteps.iter().enumerate() {
        let t_prev = timesteps.get(i + 1).copied();
        let eps = predict_noise(op, model, &x, t)?;
        let noise = if options.variance.step_variance(schedule, t, t_prev)? > 0.0 {
            Some(Tensor::randn(x.shape(), 0.0, 1.0, x.dtype(), rng).to_device(x.device())?)
        } else {
            None
        };
        x = ddpm_step_to(schedule, &x, t, t_prev, &eps, options, noise.as_ref())?;
        progress(i + 1, timesteps.len());
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_step_adds_no_noise_and_others_require_it() {
        let s = NoiseSchedule::linear(10, 0.01, 0.2).unwrap();
        let x = Tensor::from_f64(&[1.0, -2.0], &[2, 1], DType::F64).unwrap();
        let eps = Tensor::from_f64(&[0.5, 0.25], &[2, 1], DType::F64).unwrap();
        let noise = Tensor::from_f64(&[100.0, 100.0], &[2, 1], DType::F64).unwrap();
        for variance in [DdpmVariance::Beta, DdpmVariance::Posterior] {
            let with = ddpm_step(&s, &x, 0, &eps, variance, Some(&noise)).unwrap();
            let without = ddpm_step(&s, &x, 0, &eps, variance, None).unwrap();
            assert_eq!(with.to_vec_f64(), without.to_vec_f64());
            assert!(ddpm_step(&s, &x, 1, &eps, variance, None).is_err());
        }
        assert!(ddpm_step(&s, &x, 10, &eps, DdpmVariance::Beta, Some(&noise)).is_err());
        assert!(ddpm_step(&s, &x, 3, &x.reshape(&[1, 2]).unwrap(), DdpmVariance::Beta, Some(&noise)).is_err());
        assert!(ddpm_step(&s, &x, 3, &x.to_dtype(DType::F32).unwrap(), DdpmVariance::Beta, Some(&noise)).is_err());
    }

    #[test]
    fn variance_names_parse() {
        assert_eq!(DdpmVariance::from_name("fixedlarge").unwrap(), DdpmVariance::Beta);
        assert_eq!(DdpmVariance::from_name("fixed_small").unwrap(), DdpmVariance::Posterior);
        assert!(DdpmVariance::from_name("learned").is_err());
    }
}
