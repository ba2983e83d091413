//! Noise schedules and the forward process.
//!
//! A schedule is the variances β_0 … β_{T−1} of the forward steps
//! `q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I)` (eq. 2; 0-based t, see the crate docs).
//! Everything else follows from them, computed once in f64 exactly as the paper's code does
//! (`GaussianDiffusion2.__init__` in `diffusion_utils_2.py`):
//!
//! - α_t = 1 − β_t,   ᾱ_t = Π_{s≤t} α_s,   ᾱ_{t−1} with ᾱ_{−1} = 1 ("alphas_cumprod_prev");
//! - the posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (eqs. 6–7):
//!   β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t),
//!   μ̃_t = c1_t x_0 + c2_t x_t with c1_t = β_t √ᾱ_{t−1} / (1 − ᾱ_t) and
//!   c2_t = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t).

use ember_tensor::{Result, Tensor, TensorError};

use crate::invalid;

/// β_t and its derived quantities, for t = 0 … T−1 (all `Vec<f64>` of length T).
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    alphas_cumprod_prev: Vec<f64>,
    posterior_variance: Vec<f64>,
    posterior_mean_coef1: Vec<f64>,
    posterior_mean_coef2: Vec<f64>,
}

/// `n` evenly spaced values from `start` to `end` inclusive, computed as `torch.linspace`'s
/// scalar loop does: with `step = (end − start)/(n − 1)`, the first half is `start + i·step`
/// and the second half `end − (n − 1 − i)·step` (so both ends are exact). Torch's SIMD path
/// and `np.linspace` (the paper's code) round some elements differently, by about one ulp.
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| if i < n / 2 { start + step * i as f64 } else { end - step * (n - 1 - i) as f64 }).collect()
}

impl NoiseSchedule {
    /// A schedule from explicit β_0 … β_{T−1}; each must lie in (0, 1) (β = 1 would make
    /// ᾱ_t = 0 and x̂_0 undefined).
    pub fn from_betas(betas: Vec<f64>) -> Result<NoiseSchedule> {
        if betas.is_empty() {
            return invalid("NoiseSchedule", "a schedule needs at least one step");
        }
        if let Some((t, b)) = betas.iter().enumerate().find(|&(_, &b)| !(b > 0.0 && b < 1.0)) {
            return invalid("NoiseSchedule", format!("beta_{t} = {b} is outside (0, 1)"));
        }
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod: Vec<f64> = alphas
            .iter()
            .scan(1.0, |product, a| {
                *product *= a;
                Some(*product)
            })
            .collect();
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0).chain(alphas_cumprod[..betas.len() - 1].iter().copied()).collect();
        let mut posterior_variance = Vec::with_capacity(betas.len());
        let mut posterior_mean_coef1 = Vec::with_capacity(betas.len());
        let mut posterior_mean_coef2 = Vec::with_capacity(betas.len());
        for t in 0..betas.len() {
            let (beta, alpha, abar, abar_prev) = (betas[t], alphas[t], alphas_cumprod[t], alphas_cumprod_prev[t]);
            posterior_variance.push(beta * (1.0 - abar_prev) / (1.0 - abar));
            posterior_mean_coef1.push(beta * abar_prev.sqrt() / (1.0 - abar));
            posterior_mean_coef2.push((1.0 - abar_prev) * alpha.sqrt() / (1.0 - abar));
        }
        Ok(NoiseSchedule { betas, alphas, alphas_cumprod, alphas_cumprod_prev, posterior_variance, posterior_mean_coef1, posterior_mean_coef2 })
    }

    /// The DDPM schedule (Sec. 4): β_t linear from `beta_start` to `beta_end` over
    /// `num_steps` steps, `torch.linspace` semantics ([`linspace`]). The paper uses
    /// `linear(1000, 1e-4, 0.02)`.
    pub fn linear(num_steps: usize, beta_start: f64, beta_end: f64) -> Result<NoiseSchedule> {
        if num_steps == 0 {
            return invalid("NoiseSchedule::linear", "num_steps must be at least 1");
        }
        NoiseSchedule::from_betas(linspace(beta_start, beta_end, num_steps))
    }

    /// The cosine schedule (Nichol & Dhariwal 2021, eq. 17): with
    /// `f(u) = cos²((u + s)/(1 + s) · π/2)`, `s = 0.008`, the target is ᾱ(u) = f(u)/f(0) at
    /// `u = t/T`, and β_t = min(1 − f((t+1)/T)/f(t/T), 0.999) (the clip avoids a singularity
    /// at the end); ᾱ_t is then the product of the clipped 1 − β (as in their code and in
    /// diffusers' `squaredcos_cap_v2`).
    pub fn cosine(num_steps: usize) -> Result<NoiseSchedule> {
        if num_steps == 0 {
            return invalid("NoiseSchedule::cosine", "num_steps must be at least 1");
        }
        const S: f64 = 0.008;
        const MAX_BETA: f64 = 0.999;
        let f = |u: f64| ((u + S) / (1.0 + S) * std::f64::consts::FRAC_PI_2).cos().powi(2);
        let t_total = num_steps as f64;
        let betas = (0..num_steps).map(|t| (1.0 - f((t + 1) as f64 / t_total) / f(t as f64 / t_total)).min(MAX_BETA)).collect();
        NoiseSchedule::from_betas(betas)
    }

    /// A schedule by name, for configs and command lines:
    /// - `"linear"`: the DDPM schedule scaled to `num_steps` as Nichol & Dhariwal do
    ///   (`improved-diffusion`'s `get_named_beta_schedule`): β from `1e-4·1000/T` to
    ///   `0.02·1000/T`, so that T = 1000 is exactly the paper's `linear(1000, 1e-4, 0.02)` and
    ///   any other T keeps Σβ (hence ᾱ_{T−1} ≈ 0). Needs T > 20 (else β_end ≥ 1).
    /// - `"cosine"`: [`NoiseSchedule::cosine`].
    pub fn from_name(name: &str, num_steps: usize) -> Result<NoiseSchedule> {
        match name {
            "linear" => {
                if num_steps <= 20 {
                    return invalid(
                        "NoiseSchedule::from_name",
                        format!("the linear schedule scaled to {num_steps} steps reaches beta >= 1; use more than 20 steps or \"cosine\""),
                    );
                }
                let scale = 1000.0 / num_steps as f64;
                NoiseSchedule::linear(num_steps, 1e-4 * scale, 0.02 * scale)
            }
            "cosine" => NoiseSchedule::cosine(num_steps),
            other => invalid("NoiseSchedule::from_name", format!("unknown schedule {other:?}; expected \"linear\" or \"cosine\"")),
        }
    }

    /// T, the number of diffusion steps.
    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }
    /// β_t.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }
    /// α_t = 1 − β_t.
    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }
    /// ᾱ_t = Π_{s≤t} α_s.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }
    /// ᾱ_{t−1}, with ᾱ_{−1} = 1.
    pub fn alphas_cumprod_prev(&self) -> &[f64] {
        &self.alphas_cumprod_prev
    }
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0) (eq. 7);
    /// β̃_0 = 0.
    pub fn posterior_variance(&self) -> &[f64] {
        &self.posterior_variance
    }
    /// c1_t = β_t √ᾱ_{t−1} / (1 − ᾱ_t), the weight of x_0 in μ̃_t (eq. 7).
    pub fn posterior_mean_coef1(&self) -> &[f64] {
        &self.posterior_mean_coef1
    }
    /// c2_t = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the weight of x_t in μ̃_t (eq. 7).
    pub fn posterior_mean_coef2(&self) -> &[f64] {
        &self.posterior_mean_coef2
    }

    /// Checks that `t` is a valid 0-based timestep index.
    pub(crate) fn check_timestep(&self, op: &'static str, t: usize) -> Result<()> {
        if t >= self.num_steps() {
            return invalid(op, format!("timestep {t} is out of range for a schedule of {} steps", self.num_steps()));
        }
        Ok(())
    }

    /// Samples the forward process in closed form (eq. 4):
    /// `x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`, with its own `t[b]` for each batch element `b` of
    /// `x0 [B, …]`, and `noise` = ε of `x0`'s shape. Differentiable in `x0` and `noise`.
    pub fn q_sample(&self, x0: &Tensor, t: &[usize], noise: &Tensor) -> Result<Tensor> {
        let op = "q_sample";
        crate::check_batch_shape(op, x0.shape())?;
        crate::check_like(op, noise, x0)?;
        let coef_x0: Vec<f64> = self.per_element(op, x0, t, |t| self.alphas_cumprod[t].sqrt())?;
        let coef_noise: Vec<f64> = self.per_element(op, x0, t, |t| (1.0 - self.alphas_cumprod[t]).sqrt())?;
        let shape = broadcast_shape(x0);
        let coef_x0 = Tensor::from_f64(&coef_x0, &shape, x0.dtype())?.to_device(x0.device())?;
        let coef_noise = Tensor::from_f64(&coef_noise, &shape, x0.dtype())?.to_device(x0.device())?;
        x0.mul(&coef_x0)?.add(&noise.mul(&coef_noise)?)
    }

    /// The prediction of x_0 from x_t and the predicted noise (eq. 4 solved for x_0, the
    /// quantity in eq. 15): `x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t`, at one `t` for the batch.
    pub fn predict_x0(&self, x_t: &Tensor, t: usize, eps: &Tensor) -> Result<Tensor> {
        self.check_timestep("predict_x0", t)?;
        crate::check_like("predict_x0", eps, x_t)?;
        let abar = self.alphas_cumprod[t];
        x_t.sub(&eps.mul_scalar((1.0 - abar).sqrt())?)?.mul_scalar(1.0 / abar.sqrt())
    }

    /// The noise prediction whose implied clean image is clipped to the data range [−1, 1]:
    /// from `x̂_0 = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t`, the ε that gives `clip(x̂_0)`,
    /// `(x_t − √ᾱ_t clip(x̂_0))/√(1 − ᾱ_t)`, at one `t` for the batch. Elements whose x̂_0 is in
    /// range keep their ε̂ (to rounding). Fed to a step that forms the posterior mean from ε
    /// (eq. 11), this is that mean from the clipped x̂_0: the paper code's `clip_denoised`,
    /// diffusers' `clip_sample` ([`crate::DdpmOptions`]); for DDIM, improved-diffusion's choice
    /// of re-deriving ε from the clipped x̂_0.
    pub fn clipped_noise(&self, x_t: &Tensor, t: usize, eps: &Tensor) -> Result<Tensor> {
        self.check_timestep("clipped_noise", t)?;
        crate::check_like("clipped_noise", eps, x_t)?;
        let abar = self.alphas_cumprod[t];
        let (s, r) = (abar.sqrt(), (1.0 - abar).sqrt());
        let x0 = x_t.sub(&eps.mul_scalar(r)?)?.div_scalar(s)?.clamp(-1.0, 1.0)?;
        x_t.sub(&x0.mul_scalar(s)?)?.div_scalar(r)
    }

    /// `f(t[b])` for each batch element, after checking the length and range of `t`.
    fn per_element(&self, op: &'static str, x0: &Tensor, t: &[usize], f: impl Fn(usize) -> f64) -> Result<Vec<f64>> {
        let batch = x0.shape()[0];
        if t.len() != batch {
            return Err(TensorError::ShapeMismatch { op, lhs: vec![t.len()], rhs: vec![batch] });
        }
        t.iter().map(|&t| self.check_timestep(op, t).map(|()| f(t))).collect()
    }
}

/// `[B, 1, …, 1]`: the shape of one coefficient per batch element, broadcastable to `x`.
fn broadcast_shape(x: &Tensor) -> Vec<usize> {
    let mut shape = vec![1; x.rank()];
    shape[0] = x.shape()[0];
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_tensor::DType;

    #[test]
    fn clipping_keeps_in_range_predictions_and_clips_the_implied_clean_image() {
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
        let t = 400;
        let abar = schedule.alphas_cumprod()[t];
        let (s, r) = (abar.sqrt(), (1.0 - abar).sqrt());
        let x0 = Tensor::from_f64(&[0.5, -0.25, 1.8, -3.0], &[1, 4], DType::F64).unwrap();
        let eps = Tensor::from_f64(&[0.3, -1.2, 0.7, 0.1], &[1, 4], DType::F64).unwrap();
        let x_t = x0.mul_scalar(s).unwrap().add(&eps.mul_scalar(r).unwrap()).unwrap();
        let clipped = schedule.clipped_noise(&x_t, t, &eps).unwrap();
        let implied_x0 = schedule.predict_x0(&x_t, t, &clipped).unwrap().to_vec_f64();
        for (got, want) in implied_x0.iter().zip([0.5, -0.25, 1.0, -1.0]) {
            assert!((got - want).abs() < 1e-12, "{implied_x0:?}");
        }
        let (c, e) = (clipped.to_vec_f64(), eps.to_vec_f64());
        assert!((c[0] - e[0]).abs() < 1e-12 && (c[1] - e[1]).abs() < 1e-12, "in-range elements keep their noise");
        assert!(schedule.clipped_noise(&x_t, 1000, &eps).is_err());
    }

    #[test]
    fn linspace_hits_both_ends_and_is_evenly_spaced() {
        let v = linspace(1e-4, 0.02, 1000);
        assert_eq!((v[0], v[999]), (1e-4, 0.02));
        let step = (0.02 - 1e-4) / 999.0;
        assert!(v.windows(2).all(|w| ((w[1] - w[0]) - step).abs() < 1e-15));
        assert_eq!(linspace(3.0, 5.0, 1), vec![3.0]);
        assert_eq!(linspace(0.0, 1.0, 3), vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn derived_quantities_follow_their_definitions() {
        let s = NoiseSchedule::linear(50, 1e-3, 0.2).unwrap();
        let mut product = 1.0;
        for t in 0..50 {
            product *= 1.0 - s.betas()[t];
            assert!((s.alphas_cumprod()[t] - product).abs() < 1e-15);
            let prev = if t == 0 { 1.0 } else { s.alphas_cumprod()[t - 1] };
            assert_eq!(s.alphas_cumprod_prev()[t], prev);
            // β̃_t is the harmonic-like combination of eq. 7; at t = 0 it is 0.
            let beta_tilde = s.betas()[t] * (1.0 - prev) / (1.0 - s.alphas_cumprod()[t]);
            assert!((s.posterior_variance()[t] - beta_tilde).abs() < 1e-17);
        }
        assert_eq!(s.posterior_variance()[0], 0.0);
        // Averaging μ̃_t over x_t given x_0 gives E[x_{t−1} | x_0]: c1·x_0 + c2·√ᾱ_t·x_0 = √ᾱ_{t−1}·x_0.
        for t in 0..50 {
            let mean = s.posterior_mean_coef1()[t] + s.posterior_mean_coef2()[t] * s.alphas_cumprod()[t].sqrt();
            assert!((mean - s.alphas_cumprod_prev()[t].sqrt()).abs() < 1e-12, "t = {t}");
        }
    }

    #[test]
    fn cosine_alphas_cumprod_track_the_target_until_the_clip() {
        let s = NoiseSchedule::cosine(1000).unwrap();
        let f = |u: f64| ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        for t in [0, 1, 10, 500, 900, 990] {
            let target = f((t + 1) as f64 / 1000.0) / f(0.0);
            assert!((s.alphas_cumprod()[t] - target).abs() < 1e-12, "t = {t}");
        }
        assert_eq!(s.betas()[999], 0.999);
        assert!(s.betas().iter().all(|&b| b > 0.0 && b <= 0.999));
    }

    #[test]
    fn bad_schedules_are_errors() {
        assert!(NoiseSchedule::linear(0, 1e-4, 0.02).is_err());
        assert!(NoiseSchedule::linear(10, 0.0, 0.02).is_err());
        assert!(NoiseSchedule::linear(10, 1e-4, 1.0).is_err());
        assert!(NoiseSchedule::linear(10, f64::NAN, 0.02).is_err());
        assert!(NoiseSchedule::cosine(0).is_err());
        assert!(NoiseSchedule::from_name("quadratic", 1000).is_err());
        assert!(NoiseSchedule::from_name("linear", 20).is_err());
        assert!(NoiseSchedule::from_betas(vec![]).is_err());
    }

    #[test]
    fn from_name_linear_is_the_paper_schedule_at_1000_steps_and_scaled_otherwise() {
        let named = NoiseSchedule::from_name("linear", 1000).unwrap();
        assert_eq!(named, NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap());
        let short = NoiseSchedule::from_name("linear", 100).unwrap();
        assert!((short.betas()[0] - 1e-3).abs() < 1e-15 && (short.betas()[99] - 0.2).abs() < 1e-15);
        // Σβ is kept, so the end of the chain is (almost) pure noise at any length.
        assert!(short.alphas_cumprod()[99] < 1e-4 && named.alphas_cumprod()[999] < 1e-4);
        assert_eq!(NoiseSchedule::from_name("cosine", 64).unwrap(), NoiseSchedule::cosine(64).unwrap());
    }
}
