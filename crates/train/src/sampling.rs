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

/// `n` images `[n, C, H, W]` in about [-1, 1] from `model` (run in inference mode, dropout
/// off). The same `rng` state gives the same images.
pub fn sample_images(
    model: &UNet,
    schedule: &NoiseSchedule,
    n: usize,
    sampler: Sampler,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let c = &model.config;
    let shape = [n, c.in_channels, c.sample_size, c.sample_size];
    let mut unused = Rng::new(0);
    let mut predict_noise = |x: &Tensor, t: &[f64]| model.forward(x, t, &mut ForwardContext { training: false, rng: &mut unused });
    let images = match sampler {
        Sampler::Ddpm { variance } => ddpm_sample(&mut predict_noise, schedule, &shape, DType::F32, variance, rng, progress)?,
        Sampler::Ddim { steps, eta } => ddim_sample(&mut predict_noise, schedule, &shape, DType::F32, steps, eta, rng, progress)?,
    };
    Ok(images)
}
