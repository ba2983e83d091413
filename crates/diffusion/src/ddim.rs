//! DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models",
//! arXiv 2010.02502), with a model trained by the DDPM objective.
//!
//! On a decreasing subsequence τ of the training timesteps, each step goes from t to the next
//! element s of τ (eq. 12, with ᾱ written for the paper's α):
//!
//! `x_s = √ᾱ_s · x̂_0 + √(1 − ᾱ_s − σ_t²) · ε_θ(x_t, t) + σ_t z`,
//! `x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t`,
//! `σ_t(η) = η · √((1 − ᾱ_s)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_s)` (eq. 16),
//!
//! and after the last element of τ the chain goes to the data itself, ᾱ_s = 1 (the paper's
//! α_0 := 1; diffusers' `set_alpha_to_one=True`), so that step returns x̂_0 with σ = 0.
//! η = 0 is the deterministic DDIM; η = 1 on every timestep is DDPM with σ_t² = β̃_t.
//!
//! **Timestep spacing**: [`ddim_sample`] uses the paper's "linear" subsequence (its code's
//! `skip = T // S`, diffusers' `timestep_spacing="leading"` with `steps_offset=0`):
//! τ = {0, k, 2k, …, (S−1)k} with k = ⌊T/S⌋, visited from the top. With few steps it starts
//! well below T−1; [`TimestepSpacing::Trailing`] (Lin et al. 2023, Table 2) starts at T−1, for
//! use with [`ddim_sample_from`].

use ember_tensor::rng::Rng;
use ember_tensor::{DType, Result, Tensor, TensorError, no_grad};

use crate::{NoiseModel, NoiseSchedule, check_batch_shape, check_like, check_timestep_sequence, invalid, predict_noise};

/// How [`ddim_timesteps`] spreads S steps over T training timesteps (diffusers' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `{(S−1)k, …, k, 0}` with `k = ⌊T/S⌋`: the DDIM paper's linear schedule.
    Leading,
    /// `{round(T − i·T/S) − 1 : i = 0 … S−1}` (round half to even, as NumPy): starts at T−1.
    Trailing,
}

/// The DDIM subsequence τ of `steps` timesteps out of `num_train_steps`, in sampling order
/// (strictly decreasing). `steps` must be in `1..=num_train_steps`; with `steps = T` both
/// spacings give every timestep T−1 … 0.
pub fn ddim_timesteps(num_train_steps: usize, steps: usize, spacing: TimestepSpacing) -> Result<Vec<usize>> {
    if steps == 0 || steps > num_train_steps {
        return invalid("ddim_timesteps", format!("steps = {steps} must be between 1 and the {num_train_steps} training steps"));
    }
    Ok(match spacing {
        TimestepSpacing::Leading => {
            let k = num_train_steps / steps;
            (0..steps).rev().map(|i| i * k).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train_steps as f64 / steps as f64;
            (0..steps).map(|i| (num_train_steps as f64 - i as f64 * ratio).round_ties_even() as usize - 1).collect()
        }
    })
}

fn check_eta(op: &'static str, eta: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&eta) {
        return invalid(op, format!("eta = {eta} must be in [0, 1]"));
    }
    Ok(())
}

/// ᾱ at the step's target: ᾱ_s for `t_prev = Some(s)` (which must be < t), 1 for `None`.
pub(crate) fn alpha_bar_prev(op: &'static str, schedule: &NoiseSchedule, t: usize, t_prev: Option<usize>) -> Result<f64> {
    schedule.check_timestep(op, t)?;
    match t_prev {
        None => Ok(1.0),
        Some(s) if s < t => Ok(schedule.alphas_cumprod()[s]),
        Some(s) => invalid(op, format!("the previous timestep {s} must be smaller than t = {t}")),
    }
}

/// σ_t(η) of a DDIM step from t to `t_prev` (eq. 16):
/// `η · √((1 − ᾱ_s)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_s)`, with ᾱ_s = 1 when `t_prev` is `None`
/// (then σ = 0). For `t_prev = t − 1` and η = 1 this is √β̃_t.
pub fn ddim_sigma(schedule: &NoiseSchedule, t: usize, t_prev: Option<usize>, eta: f64) -> Result<f64> {
    check_eta("ddim_sigma", eta)?;
    let abar_prev = alpha_bar_prev("ddim_sigma", schedule, t, t_prev)?;
    let abar = schedule.alphas_cumprod()[t];
    Ok(eta * ((1.0 - abar_prev) / (1.0 - abar)).sqrt() * (1.0 - abar / abar_prev).sqrt())
}

/// One DDIM step (eq. 12) from x_t to x_s, s = `t_prev` (`None`: to the data, ᾱ_s = 1),
/// given the predicted noise `eps` = ε_θ(x_t, t) and z (`noise`, required when σ_t(η) > 0,
/// ignored otherwise):
/// `x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε + σ z`, `x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t`.
pub fn ddim_step(schedule: &NoiseSchedule, x_t: &Tensor, t: usize, t_prev: Option<usize>, eps: &Tensor, eta: f64, noise: Option<&Tensor>) -> Result<Tensor> {
    let op = "ddim_step";
    let sigma = ddim_sigma(schedule, t, t_prev, eta)?;
    let abar_prev = alpha_bar_prev(op, schedule, t, t_prev)?;
    let x0_hat = schedule.predict_x0(x_t, t, eps)?;
    // 1 − ᾱ_s − σ² ≥ 0 in exact arithmetic (σ² ≤ β̃-like ≤ 1 − ᾱ_s); clamp rounding.
    let direction = (1.0 - abar_prev - sigma * sigma).max(0.0).sqrt();
    let x_prev = x0_hat.mul_scalar(abar_prev.sqrt())?.add(&eps.mul_scalar(direction)?)?;
    if sigma == 0.0 {
        return Ok(x_prev);
    }
    let Some(noise) = noise else {
        return invalid(op, format!("the step from {t} adds noise (sigma = {sigma:e}) but no noise tensor was given"));
    };
    check_like(op, noise, x_t)?;
    x_prev.add(&noise.mul_scalar(sigma)?)
}

/// DDIM sampling (eq. 12) with `steps` timesteps spaced as the paper does
/// ([`TimestepSpacing::Leading`]; any `steps` in `1..=T`) and `eta` ∈ [0, 1]: x_T ~ N(0, I) of
/// `shape` and `dtype`, then [`ddim_sample_from`]. Draws from `rng`: x_T first, then one z per
/// step with σ > 0 (none when η = 0). `progress(done, steps)` is called after each step.
#[allow(clippy::too_many_arguments)]
pub fn ddim_sample<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    shape: &[usize],
    dtype: DType,
    steps: usize,
    eta: f64,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Tensor, E> {
    check_batch_shape("ddim_sample", shape)?;
    check_eta("ddim_sample", eta)?;
    let timesteps = ddim_timesteps(schedule.num_steps(), steps, TimestepSpacing::Leading)?;
    let x_t = Tensor::randn(shape, 0.0, 1.0, dtype, rng);
    ddim_sample_from(model, schedule, x_t, &timesteps, eta, rng, progress)
}

/// DDIM from a given x_T (`x_t`, taken to be at `timesteps[0]`) over `timesteps` (strictly
/// decreasing, all < T, e.g. from [`ddim_timesteps`]): at each t, ε = model(x_t, [t; B]),
/// z ~ N(0, I) from `rng` if σ_t(η) > 0, then [`ddim_step`] to the next timestep (after the
/// last one: to the data, ᾱ = 1). Runs without recording gradients; `progress(done, len)` is
/// called after each step. Returns x_0.
pub fn ddim_sample_from<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x_t: Tensor,
    timesteps: &[usize],
    eta: f64,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Tensor, E> {
    let op = "ddim_sample";
    check_batch_shape(op, x_t.shape())?;
    check_eta(op, eta)?;
    check_timestep_sequence(op, schedule, timesteps)?;
    let _no_grad = no_grad();
    let mut x = x_t;
    for (i, &t) in timesteps.iter().enumerate() {
        let t_prev = timesteps.get(i + 1).copied();
        let eps = predict_noise(op, model, &x, t)?;
        let noise =
            if ddim_sigma(schedule, t, t_prev, eta)? > 0.0 { Some(Tensor::randn(x.shape(), 0.0, 1.0, x.dtype(), rng).to_device(x.device())?) } else { None };
        x = ddim_step(schedule, &x, t, t_prev, &eps, eta, noise.as_ref())?;
        progress(i + 1, timesteps.len());
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_give_the_documented_subsequences() {
        use TimestepSpacing::*;
        assert_eq!(ddim_timesteps(1000, 10, Leading).unwrap(), (0..10).rev().map(|i| 100 * i).collect::<Vec<_>>());
        assert_eq!(ddim_timesteps(1000, 3, Leading).unwrap(), vec![666, 333, 0]);
        assert_eq!(ddim_timesteps(1000, 10, Trailing).unwrap(), (0..10).rev().map(|i| 100 * i + 99).collect::<Vec<_>>());
        assert_eq!(ddim_timesteps(1000, 1, Trailing).unwrap(), vec![999]);
        for spacing in [Leading, Trailing] {
            assert_eq!(ddim_timesteps(7, 7, spacing).unwrap(), vec![6, 5, 4, 3, 2, 1, 0]);
            assert!(ddim_timesteps(7, 0, spacing).is_err() && ddim_timesteps(7, 8, spacing).is_err());
            for steps in 1..=50 {
                let ts = ddim_timesteps(50, steps, spacing).unwrap();
                assert_eq!(ts.len(), steps);
                assert!(ts.windows(2).all(|w| w[1] < w[0]) && ts[0] < 50);
            }
        }
    }

    #[test]
    fn sigma_is_the_posterior_std_for_consecutive_steps_and_zero_at_the_end() {
        let s = NoiseSchedule::linear(20, 1e-3, 0.1).unwrap();
        for t in 1..20 {
            let sigma = ddim_sigma(&s, t, Some(t - 1), 1.0).unwrap();
            assert!((sigma * sigma - s.posterior_variance()[t]).abs() < 1e-15);
            assert!((ddim_sigma(&s, t, Some(t - 1), 0.5).unwrap() - 0.5 * sigma).abs() < 1e-15);
        }
        assert_eq!(ddim_sigma(&s, 5, None, 1.0).unwrap(), 0.0);
        assert!(ddim_sigma(&s, 5, Some(5), 1.0).is_err());
        assert!(ddim_sigma(&s, 5, Some(1), 1.5).is_err());
        assert!(ddim_sigma(&s, 5, Some(1), -0.1).is_err());
        assert!(ddim_sigma(&s, 5, Some(1), f64::NAN).is_err());
        assert!(ddim_sigma(&s, 20, None, 0.0).is_err());
    }

    #[test]
    fn the_final_step_returns_the_predicted_x0() {
        let s = NoiseSchedule::cosine(30).unwrap();
        let x = Tensor::from_f64(&[0.3, -1.1, 2.0, 0.0], &[2, 2], DType::F64).unwrap();
        let eps = Tensor::from_f64(&[0.1, 0.2, -0.7, 1.5], &[2, 2], DType::F64).unwrap();
        let out = ddim_step(&s, &x, 12, None, &eps, 1.0, None).unwrap();
        let abar = s.alphas_cumprod()[12];
        let want: Vec<f64> = x.to_vec_f64().iter().zip(eps.to_vec_f64()).map(|(x, e)| (x - (1.0 - abar).sqrt() * e) / abar.sqrt()).collect();
        let got = out.to_vec_f64();
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-14), "{got:?} vs {want:?}");
        assert!(ddim_step(&s, &x, 12, Some(4), &eps, 0.5, None).is_err(), "noise is required when sigma > 0");
    }
}
