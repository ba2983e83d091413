//! The math of denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020,
//! arXiv 2006.11239), on ember tensors:
//!
//! - [`schedule`]: the noise schedules β_t (linear, cosine) with every derived quantity
//!   (α_t, ᾱ_t, the posterior q(x_{t−1} | x_t, x_0)), and the forward process
//!   [`NoiseSchedule::q_sample`] (eq. 4).
//! - [`loss`]: the training objective L_simple (eq. 14), [`epsilon_loss`].
//! - [`ddpm`]: ancestral sampling (Algorithm 2), [`ddpm_step`] and [`ddpm_sample`], and its
//!   strided form with optional clipping (diffusers' `DDPMScheduler`), [`ddpm_sample_strided`].
//! - [`ddim`]: DDIM sampling (Song, Meng & Ermon 2021, eq. 12) on a subsequence of timesteps,
//!   [`ddim_step`] and [`ddim_sample`].
//! - [`vlb`]: the variational bound in bits per dimension (eq. 5; Table 1's NLL), following
//!   the paper's code (`diffusion_utils_2.py`): [`bits_per_dim`].
//!
//! ## Conventions
//!
//! - **Timesteps are 0-based**: index `t ∈ {0, …, T−1}` here is the paper's `t + 1`, as in the
//!   paper's code and in diffusers. So `betas()[0]` is the paper's β₁, and the sampler's last
//!   step (`t = 0`) is the paper's `t = 1`, where Algorithm 2 adds no noise.
//! - **The model** is any closure `(x_t, timesteps) → ε̂` ([`NoiseModel`]): `x_t` is `[B, …]`,
//!   `timesteps` holds one value per batch element (the 0-based index as an `f64`), and the
//!   output must have `x_t`'s shape and dtype. Its error type `E` only needs
//!   `From<TensorError>`, so a trainer can pass a closure returning its own error.
//! - **Dtypes**: tensors stay in the dtype they come in (f32 for real use, f64 in tests); the
//!   schedule's scalars are f64 and are rounded to that dtype where they multiply tensors.
//! - **Randomness** comes only from the [`Rng`](ember_tensor::rng::Rng) passed in: the same seed
//!   gives the same draws, so the same losses and the same images. Each function documents
//!   the order of its draws.
//! - Samplers and the bound run under [`no_grad`](ember_tensor::no_grad); the loss records the
//!   graph through the model.
//! - Errors: bad arguments (step counts, η outside [0, 1], shapes, timesteps out of range)
//!   return [`TensorError::InvalidArgument`] or a shape error; nothing here panics on input.

pub mod ddim;
pub mod ddpm;
pub mod loss;
pub mod schedule;
pub mod vlb;

use ember_tensor::{Result, Tensor, TensorError};

pub use ddim::{TimestepSpacing, ddim_sample, ddim_sample_from, ddim_sigma, ddim_step, ddim_timesteps};
pub use ddpm::{DdpmOptions, DdpmVariance, ddpm_sample, ddpm_sample_from, ddpm_sample_strided, ddpm_step, ddpm_step_to, ddpm_timesteps};
pub use loss::{epsilon_loss, epsilon_loss_with, sample_timesteps};
pub use schedule::NoiseSchedule;
pub use vlb::{VariationalBound, VbTerms, bits_per_dim, prior_bpd, variational_bound, vb_terms_bpd};

/// A noise-prediction model: `(x_t [B, …], timesteps [B]) → ε̂` of `x_t`'s shape.
pub type NoiseModel<'a, E> = dyn FnMut(&Tensor, &[f64]) -> std::result::Result<Tensor, E> + 'a;

/// A [`TensorError::InvalidArgument`] for `op`.
pub(crate) fn invalid_argument(op: &'static str, msg: impl Into<String>) -> TensorError {
    TensorError::InvalidArgument { op, msg: msg.into() }
}

/// `Err(`[`invalid_argument`]`)`.
pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(invalid_argument(op, msg))
}

/// Checks that `shape` describes a non-empty batch `[B, …]` with `B ≥ 1` and no empty axis.
pub(crate) fn check_batch_shape(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.is_empty() || shape.contains(&0) {
        return invalid(op, format!("shape {shape:?} must be a non-empty batch [B, ...] with no axis of size 0"));
    }
    Ok(())
}

/// Checks a sampler's timesteps: not empty, strictly decreasing, all below T.
pub(crate) fn check_timestep_sequence(op: &'static str, schedule: &NoiseSchedule, timesteps: &[usize]) -> Result<()> {
    if timesteps.is_empty() {
        return invalid(op, "no timesteps to sample on");
    }
    if let Some(w) = timesteps.windows(2).find(|w| w[1] >= w[0]) {
        return invalid(op, format!("timesteps must strictly decrease, got {} then {}", w[0], w[1]));
    }
    schedule.check_timestep(op, timesteps[0])
}

/// Runs the model on `x` at timestep index `t` for the whole batch, and checks that the
/// prediction has `x`'s shape and dtype.
pub(crate) fn predict_noise<E: From<TensorError>>(op: &'static str, model: &mut NoiseModel<'_, E>, x: &Tensor, t: usize) -> std::result::Result<Tensor, E> {
    let timesteps = vec![t as f64; x.shape()[0]];
    let eps = model(x, &timesteps)?;
    check_like(op, &eps, x)?;
    Ok(eps)
}

/// Checks that `a` has `reference`'s shape and dtype.
pub(crate) fn check_like(op: &'static str, a: &Tensor, reference: &Tensor) -> Result<()> {
    if a.shape() != reference.shape() {
        return Err(TensorError::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: reference.shape().to_vec() });
    }
    if a.dtype() != reference.dtype() {
        return Err(TensorError::DTypeMismatch { op, lhs: a.dtype(), rhs: reference.dtype() });
    }
    Ok(())
}
