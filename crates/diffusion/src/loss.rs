//! The training objective: the simplified loss L_simple (eq. 14, Algorithm 1),
//!
//! `L_simple(θ) = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²`,
//!
//! with t uniform over the T steps and ε ~ N(0, I), estimated on a batch as the mean over
//! every element (the paper's code: `mean(meanflat((ε − ε_θ)²))`; all images have the same
//! size, so this is the same number).

use ember_tensor::rng::Rng;
use ember_tensor::{Tensor, TensorError};

use crate::{NoiseModel, NoiseSchedule, check_batch_shape, check_like};

/// `batch` timestep indices uniform over `{0, …, num_steps − 1}` (Algorithm 1, line 3), as
/// `⌊u · T⌋` from uniforms `u ∈ [0, 1)` of 24-bit resolution (one `rng` draw of `batch`
/// values; the bias from 2²⁴ not being a multiple of T is below 1e-4 relative for T ≤ 1000).
pub fn sample_timesteps(num_steps: usize, batch: usize, rng: &mut Rng) -> Vec<usize> {
    rng.uniform_values(batch).into_iter().map(|u| ((u * num_steps as f64) as usize).min(num_steps.saturating_sub(1))).collect()
}

/// L_simple at given timesteps `t [B]` and noise ε (`noise`, shaped like `x0 [B, …]`):
/// `mean((ε − ε_θ(x_t, t))²)` with `x_t` from [`NoiseSchedule::q_sample`] (eq. 4). The model is
/// called once with the timesteps as `f64`. The result is a one-element tensor of shape `[]`,
/// differentiable through the model (and `x0`).
pub fn epsilon_loss_with<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x0: &Tensor,
    t: &[usize],
    noise: &Tensor,
) -> std::result::Result<Tensor, E> {
    let x_t = schedule.q_sample(x0, t, noise)?;
    let timesteps: Vec<f64> = t.iter().map(|&t| t as f64).collect();
    let eps = model(&x_t, &timesteps)?;
    check_like("epsilon_loss", &eps, x0)?;
    Ok(eps.mse_loss(noise)?)
}

/// The simplified training objective L_simple (eq. 14) on the batch `x0 [B, …]`:
/// t_b ~ U{0, …, T−1} per element ([`sample_timesteps`]), then ε ~ N(0, I) of `x0`'s shape and
/// dtype (`Tensor::randn`), in that order from `rng`, then [`epsilon_loss_with`]. Returns the
/// loss tensor (shape `[]`), differentiable through the model.
pub fn epsilon_loss<E: From<TensorError>>(
    model: &mut NoiseModel<'_, E>,
    schedule: &NoiseSchedule,
    x0: &Tensor,
    rng: &mut Rng,
) -> std::result::Result<Tensor, E> {
    check_batch_shape("epsilon_loss", x0.shape())?;
    let t = sample_timesteps(schedule.num_steps(), x0.shape()[0], rng);
    let noise = Tensor::randn_on(x0.shape(), 0.0, 1.0, x0.dtype(), x0.device(), rng)?;
    epsilon_loss_with(model, schedule, x0, &t, &noise)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_tensor::DType;

    type Model<'a> = Box<NoiseModel<'a, TensorError>>;

    #[test]
    fn timesteps_cover_the_range_uniformly() {
        let t = sample_timesteps(10, 100_000, &mut Rng::new(3));
        let mut counts = [0usize; 10];
        t.iter().for_each(|&t| counts[t] += 1);
        // Each bin expects 10 000 ± 95 (1σ); 6σ bounds.
        assert!(counts.iter().all(|&c| (9_430..=10_570).contains(&c)), "{counts:?}");
    }

    #[test]
    fn loss_draws_t_then_noise_and_averages_the_squared_error() {
        let schedule = NoiseSchedule::linear(100, 1e-3, 0.05).unwrap();
        let x0 = Tensor::from_f64(&(0..24).map(|i| (i as f64 * 0.37).sin()).collect::<Vec<_>>(), &[3, 2, 4], DType::F64).unwrap();
        // A model that predicts 0.5·x_t: the loss is mean((ε − 0.5 x_t)²), computed naively below.
        let seen_t = std::cell::RefCell::new(Vec::new());
        let mut model: Model = Box::new(|x, t| {
            seen_t.borrow_mut().extend_from_slice(t);
            x.mul_scalar(0.5)
        });
        let mut rng = Rng::new(11);
        let loss = epsilon_loss(&mut *model, &schedule, &x0, &mut rng).unwrap().item().unwrap();
        drop(model);

        let mut replay = Rng::new(11);
        let t = sample_timesteps(100, 3, &mut replay);
        let noise = replay.normal_values(24);
        assert_eq!(rng, replay, "the loss must take exactly these draws");
        assert_eq!(*seen_t.borrow(), t.iter().map(|&t| t as f64).collect::<Vec<_>>());
        let x0v = x0.to_vec_f64();
        let mut expected = 0.0;
        for i in 0..24 {
            let abar = schedule.alphas_cumprod()[t[i / 8]];
            let x_t = abar.sqrt() * x0v[i] + (1.0 - abar).sqrt() * noise[i];
            expected += (noise[i] - 0.5 * x_t).powi(2) / 24.0;
        }
        assert!((loss - expected).abs() < 1e-14 * expected, "{loss} vs {expected}");
    }

    #[test]
    fn loss_is_differentiable_through_the_model() {
        // ε_θ(x_t) = w·x_t, so dL/dw = −2 mean((ε − w x_t) x_t).
        let schedule = NoiseSchedule::cosine(50).unwrap();
        let x0 = Tensor::from_f64(&[0.2, -0.4, 0.9, 0.1, -1.0, 0.5], &[2, 3], DType::F64).unwrap();
        let w = Tensor::scalar(0.3, DType::F64).variable();
        let (t, noise) = ([7, 40], Tensor::from_f64(&[0.5, -1.2, 0.3, 2.0, -0.1, 0.7], &[2, 3], DType::F64).unwrap());
        let mut model: Model = Box::new(|x, _| x.mul(&w));
        let loss = epsilon_loss_with(&mut *model, &schedule, &x0, &t, &noise).unwrap();
        let grad = loss.backward().unwrap().get(&w).unwrap().item().unwrap();
        let x_t = schedule.q_sample(&x0, &t, &noise).unwrap().to_vec_f64();
        let expected = x_t.iter().zip(noise.to_vec_f64()).map(|(x, e)| -2.0 * (e - 0.3 * x) * x / 6.0).sum::<f64>();
        assert!((grad - expected).abs() < 1e-12, "{grad} vs {expected}");
    }

    #[test]
    fn a_model_of_the_wrong_shape_or_an_empty_batch_is_an_error() {
        let schedule = NoiseSchedule::cosine(10).unwrap();
        let x0 = Tensor::zeros(&[2, 3], DType::F64);
        let mut model: Model = Box::new(|x, _| x.sum(&[1], false));
        assert!(matches!(epsilon_loss(&mut *model, &schedule, &x0, &mut Rng::new(0)), Err(TensorError::ShapeMismatch { .. })));
        let mut model: Model = Box::new(|x, _| Ok(x.clone()));
        assert!(epsilon_loss(&mut *model, &schedule, &Tensor::zeros(&[0, 3], DType::F64), &mut Rng::new(0)).is_err());
        assert!(epsilon_loss_with(&mut *model, &schedule, &x0, &[0, 10], &x0).is_err());
        assert!(epsilon_loss_with(&mut *model, &schedule, &x0, &[0], &x0).is_err());
    }
}
