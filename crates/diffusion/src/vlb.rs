//! The variational bound on the negative log likelihood, in bits per dimension (eq. 5, with
//! the decoder of Sec. 3.3; the "NLL Test (Train)" column of Table 1), computed as the paper's
//! code does
//! (`GaussianDiffusion2.calc_bpd_loop` / `_vb_terms_bpd` / `_prior_bpd` in
//! `diffusion_tf/diffusion_utils_2.py`, with `utils.discretized_gaussian_log_likelihood`):
//!
//! `L = L_T + Σ_{t≥1} L_{t−1} + L_0` (0-based t below), per image, divided by the number of
//! dimensions and by ln 2:
//! - prior `L_T = KL(q(x_{T−1} | x_0) ‖ N(0, I))`;
//! - for t ≥ 1, `KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))`, both Gaussians: the posterior
//!   N(μ̃_t(x_t, x_0), β̃_t) and the model N(μ̃_t(x_t, x̂_0), σ_t²) with x̂_0 from the
//!   predicted noise, at one fresh x_t ~ q(x_t | x_0) per t;
//! - at t = 0, the discretized Gaussian decoder (Sec. 3.3, eq. 13): data in [−1, 1] with 256
//!   bins of width 2/255, the edge bins extended to ±∞, and the code's tanh approximation of
//!   the normal CDF.
//!
//! The model variance follows the code's two fixed choices ([`model_log_variance`]), which
//! differ from the sampler's σ_t at t = 0: both use log β̃_1 there ("to get a better decoder
//! log likelihood"), and the posterior's log-variance is clipped the same way.
//!
//! The model runs in the data's dtype; the terms are computed from its output in f64.

use ember_tensor::rng::Rng;
use ember_tensor::{Result, Tensor, TensorError, no_grad};

use crate::{DdpmVariance, NoiseModel, NoiseSchedule, check_batch_shape, check_like, invalid, predict_noise};

/// `KL(N(μ₁, e^{v₁}) ‖ N(μ₂, e^{v₂})) = ½(−1 + v₂ − v₁ + e^{v₁−v₂} + (μ₁ − μ₂)² e^{−v₂})`, in nats
/// (the code's `normal_kl`, per dimension, log-variances `v`).
pub fn normal_kl(mean1: f64, logvar1: f64, mean2: f64, logvar2: f64) -> f64 {
    0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2).powi(2) * (-logvar2).exp())
}

/// The code's approximation of the standard normal CDF:
/// `Φ(x) ≈ ½(1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn approx_standard_normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// log p(x) in nats for the discretized Gaussian decoder (eq. 13, the code's
/// `discretized_gaussian_log_likelihood`): with σ = e^{log_scale} and Φ from
/// [`approx_standard_normal_cdf`],
/// `p = Φ((x − μ + 1/255)/σ) − Φ((x − μ − 1/255)/σ)`, except `Φ((x − μ + 1/255)/σ)` for
/// x < −0.999 and `1 − Φ((x − μ − 1/255)/σ)` for x > 0.999; each probability floored at 1e-12
/// before the log.
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let inv_stdv = (-log_scale).exp();
    let cdf_plus = approx_standard_normal_cdf(inv_stdv * (x - mean + 1.0 / 255.0));
    let cdf_min = approx_standard_normal_cdf(inv_stdv * (x - mean - 1.0 / 255.0));
    let probability = if x < -0.999 {
        cdf_plus
    } else if x > 0.999 {
        1.0 - cdf_min
    } else {
        cdf_plus - cdf_min
    };
    probability.max(1e-12).ln()
}

/// The model's log-variance log σ_t² in the bound (the code's `model_log_variance`):
/// [`DdpmVariance::Beta`] ("fixedlarge"): log β_t for t ≥ 1 and log β̃_1 at t = 0;
/// [`DdpmVariance::Posterior`] ("fixedsmall"): log β̃_t for t ≥ 1 and log β̃_1 at t = 0 (the
/// "clipped" posterior log-variance, also used as the true posterior's). Needs T ≥ 2.
pub fn model_log_variance(schedule: &NoiseSchedule, variance: DdpmVariance, t: usize) -> Result<f64> {
    let op = "model_log_variance";
    schedule.check_timestep(op, t)?;
    if schedule.num_steps() < 2 {
        return invalid(op, "the variational bound needs at least 2 diffusion steps (it uses beta-tilde_1)");
    }
    Ok(match (t, variance) {
        (0, _) => schedule.posterior_variance()[1].ln(),
        (_, DdpmVariance::Beta) => schedule.betas()[t].ln(),
        (_, DdpmVariance::Posterior) => schedule.posterior_variance()[t].ln(),
    })
}

/// One timestep's term of the bound, per image.
#[derive(Clone, Debug, PartialEq)]
pub struct VbTerms {
    /// The term in bits/dim: the KL for t ≥ 1, the decoder's −log p(x_0 | x_1) at t = 0.
    pub bpd: Vec<f64>,
    /// mean((x̂_0 − x_0)²), the code's progressive prediction error (diagnostic).
    pub x0_mse: Vec<f64>,
}

/// Checks that the data lies in [−1, 1] (the decoder's bins), up to f32 rounding.
fn check_data_range(op: &'static str, x0: &[f64]) -> Result<()> {
    match x0.iter().find(|v| v.is_nan() || v.abs() > 1.0 + 1e-6) {
        Some(v) => invalid(op, format!("data value {v} is outside [-1, 1]; the decoder models 8-bit images scaled to [-1, 1]")),
        None => Ok(()),
    }
}

/// The code's `_vb_terms_bpd` for the batch `x0 [B, …]` (in [−1, 1]), its noised version
/// `x_t` and the predicted noise `eps` at timestep `t` (one for the batch):
/// x̂_0 = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε (clipped to [−1, 1] if `clip_denoised`, as the code's
/// bits/dim evaluation does), model mean μ = c1_t x̂_0 + c2_t x_t (eq. 7), then for t ≥ 1
/// meanflat(KL(N(μ̃_t, β̃_t) ‖ N(μ, σ_t²)))/ln 2 ([`normal_kl`], log-variances from
/// [`model_log_variance`]) and at t = 0 meanflat(−log p(x_0))/ln 2
/// ([`discretized_gaussian_log_likelihood`] with log-scale ½ log σ_0²).
pub fn vb_terms_bpd(
    schedule: &NoiseSchedule,
    x0: &Tensor,
    x_t: &Tensor,
    t: usize,
    eps: &Tensor,
    variance: DdpmVariance,
    clip_denoised: bool,
) -> Result<VbTerms> {
    let op = "vb_terms_bpd";
    check_batch_shape(op, x0.shape())?;
    check_like(op, x_t, x0)?;
    check_like(op, eps, x0)?;
    let x0 = x0.to_vec_f64();
    check_data_range(op, &x0)?;
    let batch = x_t.shape()[0];
    vb_terms_values(schedule, &x0, &x_t.to_vec_f64(), &eps.to_vec_f64(), batch, t, variance, clip_denoised)
}

/// [`vb_terms_bpd`] on row-major f64 values of `batch` images.
#[allow(clippy::too_many_arguments)]
fn vb_terms_values(
    schedule: &NoiseSchedule,
    x0: &[f64],
    x_t: &[f64],
    eps: &[f64],
    batch: usize,
    t: usize,
    variance: DdpmVariance,
    clip_denoised: bool,
) -> Result<VbTerms> {
    let model_logvar = model_log_variance(schedule, variance, t)?;
    let true_logvar = model_log_variance(schedule, DdpmVariance::Posterior, t)?;
    let abar = schedule.alphas_cumprod()[t];
    let (recip, recipm1) = ((1.0 / abar).sqrt(), (1.0 / abar - 1.0).sqrt());
    let (c1, c2) = (schedule.posterior_mean_coef1()[t], schedule.posterior_mean_coef2()[t]);
    let dims = x0.len() / batch;
    let mut terms = VbTerms { bpd: vec![0.0; batch], x0_mse: vec![0.0; batch] };
    for i in 0..x0.len() {
        let mut x0_hat = recip * x_t[i] - recipm1 * eps[i];
        if clip_denoised {
            x0_hat = x0_hat.clamp(-1.0, 1.0);
        }
        let model_mean = c1 * x0_hat + c2 * x_t[i];
        let nats = if t == 0 {
            -discretized_gaussian_log_likelihood(x0[i], model_mean, 0.5 * model_logvar)
        } else {
            normal_kl(c1 * x0[i] + c2 * x_t[i], true_logvar, model_mean, model_logvar)
        };
        terms.bpd[i / dims] += nats;
        terms.x0_mse[i / dims] += (x0_hat - x0[i]).powi(2);
    }
    for b in 0..batch {
        terms.bpd[b] /= dims as f64 * std::f64::consts::LN_2;
        terms.x0_mse[b] /= dims as f64;
    }
    Ok(terms)
}

/// The prior term L_T per image in bits/dim (the code's `_prior_bpd`):
/// meanflat(KL(N(√ᾱ_{T−1} x_0, 1 − ᾱ_{T−1}) ‖ N(0, 1)))/ln 2. It has no parameters; it is
/// near 0 for the paper's schedule (ᾱ_{T−1} ≈ 4e-5).
pub fn prior_bpd(schedule: &NoiseSchedule, x0: &Tensor) -> Result<Vec<f64>> {
    check_batch_shape("prior_bpd", x0.shape())?;
    Ok(prior_values(schedule, &x0.to_vec_f64(), x0.shape()[0]))
}

fn prior_values(schedule: &NoiseSchedule, x0: &[f64], batch: usize) -> Vec<f64> {
    let abar = schedule.alphas_cumprod()[schedule.num_steps() - 1];
    let (scale, logvar) = (abar.sqrt(), (1.0 - abar).ln());
    let dims = x0.len() / batch;
    x0.chunks(dims).map(|image| image.iter().map(|&x| normal_kl(scale * x, logvar, 0.0, 0.0)).sum::<f64>() / (dims as f64 * std::f64::consts::LN_2)).collect()
}

/// The whole bound for a batch, per image (the code's `calc_bpd_loop` outputs).
#[derive(Clone, Debug, PartialEq)]
pub struct VariationalBound {
    /// Σ_t terms + prior, bits/dim: the NLL bound of each image.
    pub total_bpd: Vec<f64>,
    /// L_T per image.
    pub prior_bpd: Vec<f64>,
    /// `terms_bpd[b][t]`: the t-th term of image b ([`VbTerms::bpd`]).
    pub terms_bpd: Vec<Vec<f64>>,
    /// `x0_mse[b][t]`: [`VbTerms::x0_mse`].
    pub x0_mse: Vec<Vec<f64>>,
}

/// The variational bound (eq. 5) of each image of `x0 [B, …]` (values in [−1, 1]), in
/// bits/dim, as the code's `calc_bpd_loop`: for t = T−1 … 0, ε ~ N(0, I) from `rng` (one
/// draw of x0's shape and dtype per t), x_t = [`NoiseSchedule::q_sample`], ε̂ = model(x_t, [t; B]),
/// the term [`vb_terms_bpd`]; then [`prior_bpd`] and the sum. T model evaluations; runs without
/// recording gradients; `progress(done, T)` after each. Needs T ≥ 2.
#[allow(clippy::too_many_arguments)]
pub fn variational_bound<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x0: &Tensor,
    variance: DdpmVariance,
    clip_denoised: bool,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<VariationalBound, E> {
    let op = "variational_bound";
    check_batch_shape(op, x0.shape())?;
    let x0_values = x0.to_vec_f64();
    check_data_range(op, &x0_values)?;
    model_log_variance(schedule, variance, 0)?; // T ≥ 2, before any model call
    let _no_grad = no_grad();
    let (batch, total) = (x0.shape()[0], schedule.num_steps());
    let mut terms_bpd = vec![vec![0.0; total]; batch];
    let mut x0_mse = vec![vec![0.0; total]; batch];
    for (done, t) in (0..total).rev().enumerate() {
        let noise = Tensor::randn(x0.shape(), 0.0, 1.0, x0.dtype(), rng);
        let x_t = schedule.q_sample(x0, &vec![t; batch], &noise)?;
        let eps = predict_noise(op, model, &x_t, t)?;
        let terms = vb_terms_values(schedule, &x0_values, &x_t.to_vec_f64(), &eps.to_vec_f64(), batch, t, variance, clip_denoised)?;
        for b in 0..batch {
            terms_bpd[b][t] = terms.bpd[b];
            x0_mse[b][t] = terms.x0_mse[b];
        }
        progress(done + 1, total);
    }
    let prior_bpd = prior_values(schedule, &x0_values, batch);
    let total_bpd = (0..batch).map(|b| terms_bpd[b].iter().sum::<f64>() + prior_bpd[b]).collect();
    Ok(VariationalBound { total_bpd, prior_bpd, terms_bpd, x0_mse })
}

/// The paper's NLL in bits/dim (Table 1) of each image of `x0 [B, …]` (in [−1, 1]): the full
/// variational bound L_T + Σ_{t≥1} L_{t−1} + L_0 of [`variational_bound`], with x̂_0 clipped
/// to [−1, 1] as in the paper's evaluation (`calc_bpd_loop`'s default). `variance` is the
/// model's fixed variance ("fixedlarge" = [`DdpmVariance::Beta`], the paper's CIFAR-10 model,
/// or "fixedsmall" = [`DdpmVariance::Posterior`]). T model evaluations.
pub fn bits_per_dim<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x0: &Tensor,
    variance: DdpmVariance,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<Vec<f64>, E> {
    Ok(variational_bound(model, schedule, x0, variance, true, rng, progress)?.total_bpd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_between_equal_gaussians_and_matches_the_closed_form() {
        assert!(normal_kl(0.3, -1.2, 0.3, -1.2).abs() < 1e-15);
        // KL(N(1, 4) ‖ N(0, 1)) = ½(4 + 1 − 1 − ln 4)
        let kl = normal_kl(1.0, 4f64.ln(), 0.0, 0.0);
        assert!((kl - 0.5 * (4.0 + 1.0 - 1.0 - 4f64.ln())).abs() < 1e-15);
    }

    #[test]
    fn the_approximate_cdf_is_close_to_the_exact_one() {
        // Φ(1) = 0.841344746..., Φ(−2) = 0.022750131...; the tanh form is within 2e-4.
        assert!((approx_standard_normal_cdf(1.0) - 0.841_344_746).abs() < 2e-4);
        assert!((approx_standard_normal_cdf(-2.0) - 0.022_750_131).abs() < 2e-4);
        assert_eq!(approx_standard_normal_cdf(0.0), 0.5);
    }

    #[test]
    fn decoder_probabilities_over_all_256_bins_sum_to_one() {
        for (mean, log_scale) in [(0.1, -3.0), (-0.93, -5.0), (0.99, -1.0), (0.0, 1.0)] {
            let total: f64 = (0..256).map(|k| discretized_gaussian_log_likelihood(k as f64 / 127.5 - 1.0, mean, log_scale).exp()).sum();
            assert!((total - 1.0).abs() < 1e-9, "mean {mean}, log σ {log_scale}: {total}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let s = NoiseSchedule::linear(10, 1e-3, 0.1).unwrap();
        let x = Tensor::from_f64(&[0.5, -0.5], &[2, 1], ember_tensor::DType::F64).unwrap();
        let outside = Tensor::from_f64(&[1.5, -0.5], &[2, 1], ember_tensor::DType::F64).unwrap();
        assert!(vb_terms_bpd(&s, &outside, &x, 3, &x, DdpmVariance::Beta, true).is_err());
        assert!(vb_terms_bpd(&s, &x, &x, 10, &x, DdpmVariance::Beta, true).is_err());
        assert!(vb_terms_bpd(&s, &x, &x.reshape(&[1, 2]).unwrap(), 3, &x, DdpmVariance::Beta, true).is_err());
        let one_step = NoiseSchedule::linear(1, 0.1, 0.1).unwrap();
        assert!(vb_terms_bpd(&one_step, &x, &x, 0, &x, DdpmVariance::Beta, true).is_err());
    }
}
