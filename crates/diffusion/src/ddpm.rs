//! Ancestral sampling (Algorithm 2): from x_T ~ N(0, I), for t = T−1 … 0 (0-based),
//!
//! `x_{t−1} = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t)) + σ_t z`,  z ~ N(0, I),
//!
//! with z = 0 at the last step (the paper's t = 1; here t = 0). This is eq. 11's mean: the
//! posterior mean μ̃_t(x_t, x̂_0) with x̂_0 from the predicted noise (diffusers computes it in
//! that second form; the two are equal). σ_t² is β_t or β̃_t (Sec. 3.2: "both had similar
//! results"; β_t is optimal for x_0 ~ N(0, I), β̃_t for a deterministic x_0).
//!
//! No clipping of x̂_0 to [−1, 1]: Algorithm 2 has none (the paper's code and diffusers clip
//! by default).

use ember_tensor::rng::Rng;
use ember_tensor::{DType, Result, Tensor, TensorError, no_grad};

use crate::{NoiseModel, NoiseSchedule, check_batch_shape, check_like, invalid, predict_noise};

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

    /// σ_t² of the sampling step at t: β_t or β̃_t, and 0 at t = 0, where Algorithm 2 adds no
    /// noise (z = 0 "if t > 1" in the paper's 1-based count).
    pub fn sampling_variance(self, schedule: &NoiseSchedule, t: usize) -> Result<f64> {
        schedule.check_timestep("DdpmVariance::sampling_variance", t)?;
        Ok(match (t, self) {
            (0, _) => 0.0,
            (_, DdpmVariance::Beta) => schedule.betas()[t],
            (_, DdpmVariance::Posterior) => schedule.posterior_variance()[t],
        })
    }
}

/// One step of Algorithm 2 (line 4): given x_t, the predicted noise `eps` = ε_θ(x_t, t) and
/// z (`noise`, both of x_t's shape and dtype),
/// `x_{t−1} = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε) + σ_t z`.
/// `noise` is required when σ_t > 0 (t > 0) and ignored at t = 0.
pub fn ddpm_step(schedule: &NoiseSchedule, x_t: &Tensor, t: usize, eps: &Tensor, variance: DdpmVariance, noise: Option<&Tensor>) -> Result<Tensor> {
    let op = "ddpm_step";
    schedule.check_timestep(op, t)?;
    check_like(op, eps, x_t)?;
    let (alpha, beta, abar) = (schedule.alphas()[t], schedule.betas()[t], schedule.alphas_cumprod()[t]);
    let scale = 1.0 / alpha.sqrt();
    let mean = x_t.mul_scalar(scale)?.sub(&eps.mul_scalar(scale * beta / (1.0 - abar).sqrt())?)?;
    let sigma = variance.sampling_variance(schedule, t)?.sqrt();
    if sigma == 0.0 {
        return Ok(mean);
    }
    let Some(noise) = noise else {
        return invalid(op, format!("timestep {t} adds noise (sigma = {sigma:e}) but no noise tensor was given"));
    };
    check_like(op, noise, x_t)?;
    mean.add(&noise.mul_scalar(sigma)?)
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

/// Algorithm 2 from a given x_T (`x_t`): for t = T−1 … 0, ε = model(x_t, [t; B]), draw
/// z ~ N(0, I) from `rng` if σ_t > 0, then [`ddpm_step`]. Runs without recording gradients.
/// `progress(done, T)` is called after each step. Returns x_0.
pub fn ddpm_sample_from<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x_t: Tensor,
    variance: DdpmVariance,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Tensor, E> {
    let op = "ddpm_sample";
    check_batch_shape(op, x_t.shape())?;
    let _no_grad = no_grad();
    let total = schedule.num_steps();
    let mut x = x_t;
    for (done, t) in (0..total).rev().enumerate() {
        let eps = predict_noise(op, model, &x, t)?;
        let noise =
            if variance.sampling_variance(schedule, t)? > 0.0 { Some(Tensor::randn(x.shape(), 0.0, 1.0, x.dtype(), rng).to_device(x.device())?) } else { None };
        x = ddpm_step(schedule, &x, t, &eps, variance, noise.as_ref())?;
        progress(done + 1, total);
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
