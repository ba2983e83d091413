//! Drawing images from a trained model with DDPM or DDIM.

use ember_diffusion::{DdpmVariance, NoiseSchedule, ddim_sample, ddpm_sample};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};
use ember_unet::{ForwardContext, UNet};

use crate::error::Result;

/// Which sampler, with its settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling over all T steps (Ho et al., Algorithm 2).
    Ddpm { variance: DdpmVariance },
    /// DDIM over `steps` evenly spaced timesteps; `eta` 0 is deterministic, 1 is DDPM-like.
    Ddim { steps: usize, eta: f64 },
}

/// The noise prediction with the implied clean image clipped to the data range: from
/// `x̂₀ = (x_t − √(1 − ᾱ_t)·ε)/√ᾱ_t`, clip `x̂₀` to [−1, 1] and return the ε that gives it,
/// `(x_t − √ᾱ_t·clip(x̂₀))/√(1 − ᾱ_t)`. Fed to the samplers, this is the paper code's
/// `clip_denoised` (DDPM's posterior mean from the clipped x̂₀; for DDIM, improved-diffusion's
/// choice of re-deriving ε from the clipped x̂₀).
fn clipped_noise(schedule: &NoiseSchedule, x_t: &Tensor, t: &[f64], eps: &Tensor) -> ember_tensor::Result<Tensor> {
    let Some(&first) = t.first() else { return Ok(eps.clone()) };
    if t.iter().any(|&other| other != first) {
        return Err(ember_tensor::TensorError::InvalidArgument { op: "clipped_noise", msg: "samplers use one timestep per batch".into() });
    }
    let abar = schedule.alphas_cumprod()[first as usize];
    let (s, r) = (abar.sqrt(), (1.0 - abar).sqrt());
    let x0 = x_t.sub(&eps.mul_scalar(r)?)?.div_scalar(s)?.clamp(-1.0, 1.0)?;
    x_t.sub(&x0.mul_scalar(s)?)?.div_scalar(r)
}

/// `n` images `[n, C, H, W]` in about [-1, 1] from `model` (run in inference mode, dropout
/// off), with the predicted clean image clipped at each step when `clip_denoised` (as the
/// paper's code and diffusers do by default). The same `rng` state gives the same images.
pub fn sample_images(
    model: &UNet,
    schedule: &NoiseSchedule,
    n: usize,
    sampler: Sampler,
    clip_denoised: bool,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let c = &model.config;
    let shape = [n, c.in_channels, c.sample_size, c.sample_size];
    let mut unused = Rng::new(0);
    // The sampler's images stay on the CPU; the model runs where its parameters are.
    let device = ember_unet::module::named_parameters(model).first().map_or(ember_tensor::Device::Cpu, |(_, p)| p.device());
    let mut predict_noise = |x: &Tensor, t: &[f64]| -> std::result::Result<Tensor, ember_unet::UNetError> {
        let on_device = x.to_device(device)?;
        let eps = model.forward(&on_device, t, &mut ForwardContext { training: false, rng: &mut unused })?.to_device(x.device())?;
        if clip_denoised { Ok(clipped_noise(schedule, x, t, &eps)?) } else { Ok(eps) }
    };
    let images = match sampler {
        Sampler::Ddpm { variance } => ddpm_sample(&mut predict_noise, schedule, &shape, DType::F32, variance, rng, progress)?,
        Sampler::Ddim { steps, eta } => ddim_sample(&mut predict_noise, schedule, &shape, DType::F32, steps, eta, rng, progress)?,
    };
    Ok(images)
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
        let clipped = clipped_noise(&schedule, &x_t, &[t as f64], &eps).unwrap();
        let implied_x0 = x_t.sub(&clipped.mul_scalar(r).unwrap()).unwrap().div_scalar(s).unwrap().to_vec_f64();
        for (got, want) in implied_x0.iter().zip([0.5, -0.25, 1.0, -1.0]) {
            assert!((got - want).abs() < 1e-12, "{implied_x0:?}");
        }
        let (c, e) = (clipped.to_vec_f64(), eps.to_vec_f64());
        assert!((c[0] - e[0]).abs() < 1e-12 && (c[1] - e[1]).abs() < 1e-12, "in-range elements keep their noise");
        assert!(clipped_noise(&schedule, &x_t, &[1.0, 2.0], &eps).is_err());
    }
}
