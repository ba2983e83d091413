//! Drawing images from a trained model with DDPM or DDIM.

use ember_diffusion::{DdpmVariance, NoiseSchedule, TimestepSpacing, ddim_sample_from, ddim_timesteps, ddpm_sample};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};
use ember_unet::{ForwardContext, UNet};

use crate::error::Result;

/// Which sampler, with its settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling over all T steps (Ho et al., Algorithm 2).
    Ddpm { variance: DdpmVariance },
    /// DDIM over `steps` timesteps spread by `spacing` (the paper's `Leading`, or `Trailing`,
    /// which starts at T − 1); `eta` 0 is deterministic, 1 is DDPM-like.
    Ddim { steps: usize, eta: f64, spacing: TimestepSpacing },
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

/// Classifier-free guidance (Ho & Salimans 2022) for a class-conditional model: image `i` is
/// drawn for class `classes[i]` with the noise prediction `ε = ε_u + scale·(ε_c − ε_u)`, `ε_c`
/// the prediction for its class and `ε_u` for `null_class` (the label the model was trained on
/// when the condition was dropped). `scale` 1 is the conditional model alone, 0 the
/// unconditional one, above 1 stronger adherence to the class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassGuidance {
    pub classes: Vec<usize>,
    pub null_class: usize,
    pub scale: f64,
}

/// `ε_u + scale·(ε_c − ε_u)`: diffusers' guidance formula (`noise_pred_uncond + guidance_scale
/// * (noise_pred_text - noise_pred_uncond)`).
pub fn guided_noise(eps_conditional: &Tensor, eps_unconditional: &Tensor, scale: f64) -> ember_tensor::Result<Tensor> {
    eps_unconditional.add(&eps_conditional.sub(eps_unconditional)?.mul_scalar(scale)?)
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
    sample(model, schedule, n, None, sampler, clip_denoised, rng, progress)
}

/// [`sample_images`] from a class-conditional model under classifier-free guidance: one image
/// per entry of `guidance.classes`. Each step runs the conditional and the unconditional
/// prediction as one batched forward of `2n` images.
pub fn sample_images_guided(
    model: &UNet,
    schedule: &NoiseSchedule,
    guidance: &ClassGuidance,
    sampler: Sampler,
    clip_denoised: bool,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    sample(model, schedule, guidance.classes.len(), Some(guidance), sampler, clip_denoised, rng, progress)
}

#[allow(clippy::too_many_arguments)]
fn sample(
    model: &UNet,
    schedule: &NoiseSchedule,
    n: usize,
    guidance: Option<&ClassGuidance>,
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
    // with guidance: the batch twice, the classes then the null class, in one forward
    let labels: Option<Vec<usize>> = guidance.map(|g| g.classes.iter().copied().chain(std::iter::repeat_n(g.null_class, n)).collect());
    let mut predict_noise = |x: &Tensor, t: &[f64]| -> std::result::Result<Tensor, ember_unet::UNetError> {
        let on_device = x.to_device(device)?;
        let mut ctx = ForwardContext { training: false, rng: &mut unused };
        let eps = match (guidance, &labels) {
            (Some(g), Some(labels)) => {
                let doubled = Tensor::cat(&[&on_device, &on_device], 0)?;
                let t2: Vec<f64> = t.iter().chain(t).copied().collect();
                let both = model.forward_with_classes(&doubled, &t2, Some(labels), &mut ctx)?;
                let (conditional, unconditional) = (both.narrow(0, 0, n)?, both.narrow(0, n, n)?);
                guided_noise(&conditional, &unconditional, g.scale)?
            }
            _ => model.forward(&on_device, t, &mut ctx)?,
        }
        .to_device(x.device())?;
        if clip_denoised { Ok(clipped_noise(schedule, x, t, &eps)?) } else { Ok(eps) }
    };
    let images = match sampler {
        Sampler::Ddpm { variance } => ddpm_sample(&mut predict_noise, schedule, &shape, DType::F32, variance, rng, progress)?,
        Sampler::Ddim { steps, eta, spacing } => {
            // as ddim_sample: x_T first from `rng`, then the steps
            let timesteps = ddim_timesteps(schedule.num_steps(), steps, spacing)?;
            let x_t = Tensor::randn(&shape, 0.0, 1.0, DType::F32, rng);
            ddim_sample_from(&mut predict_noise, schedule, x_t, &timesteps, eta, rng, progress)?
        }
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
