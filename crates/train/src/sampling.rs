//! Drawing images from a trained model with DDPM or DDIM.

use ember_diffusion::{DdpmOptions, DdpmVariance, NoiseSchedule, TimestepSpacing, ddim_sample_from, ddim_timesteps, ddpm_sample_strided, ddpm_timesteps};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};
use ember_unet::{ForwardContext, UNet};

use crate::error::Result;

/// Which sampler, with its settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling (Ho et al., Algorithm 2) over all T steps (`steps` = T), or strided
    /// over `steps` of them as diffusers' `DDPMScheduler.set_timesteps(steps)`
    /// ([`ddpm_timesteps`]).
    Ddpm { variance: DdpmVariance, steps: usize },
    /// DDIM over `steps` timesteps spread by `spacing` (the paper's `Leading`, or `Trailing`,
    /// which starts at T − 1); `eta` 0 is deterministic, 1 is DDPM-like.
    Ddim { steps: usize, eta: f64, spacing: TimestepSpacing },
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
/// off), with the predicted clean image clipped to [−1, 1] at each step when `clip_denoised`
/// (as the paper's code and diffusers do by default): DDPM's [`DdpmOptions::clip_sample`];
/// for DDIM, the noise re-derived from the clipped image ([`NoiseSchedule::clipped_noise`]).
/// The same `rng` state gives the same images.
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

/// What evaluation draws from a model: `n` images, `batch_size` at a time from `rng`, DDIM
/// over `steps` (η = 0, leading spacing, clipped); a class-conditional model (`classes` =
/// `(class count, null class, guidance scale)`) draws the classes in turn, image i of class
/// i mod count. `progress(done)` after each batch.
#[allow(clippy::too_many_arguments)]
pub fn sample_for_eval(
    model: &UNet,
    schedule: &NoiseSchedule,
    n: usize,
    classes: Option<(usize, usize, f64)>,
    steps: usize,
    batch_size: usize,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize),
) -> Result<Tensor> {
    let sampler = Sampler::Ddim { steps, eta: 0.0, spacing: TimestepSpacing::Leading };
    let mut images = Vec::new();
    for start in (0..n).step_by(batch_size.max(1)) {
        let count = batch_size.max(1).min(n - start);
        images.push(match classes {
            Some((count_of_classes, null_class, scale)) => {
                let guidance = ClassGuidance { classes: (start..start + count).map(|i| i % count_of_classes).collect(), null_class, scale };
                sample_images_guided(model, schedule, &guidance, sampler, true, rng, &mut |_, _| {})?
            }
            None => sample_images(model, schedule, count, sampler, true, rng, &mut |_, _| {})?,
        });
        progress(start + count);
    }
    Ok(Tensor::cat(&images.iter().collect::<Vec<_>>(), 0)?)
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
        // DDIM's clipping; DDPM's is the sampler's own (clip_sample)
        let clip = clip_denoised && matches!(sampler, Sampler::Ddim { .. });
        if clip { Ok(schedule.clipped_noise(x, t[0] as usize, &eps)?) } else { Ok(eps) }
    };
    // as ddpm_sample and ddim_sample: x_T first from `rng`, then the steps
    let x_t = Tensor::randn(&shape, 0.0, 1.0, DType::F32, rng);
    let images = match sampler {
        Sampler::Ddpm { variance, steps } => {
            let timesteps = ddpm_timesteps(schedule.num_steps(), steps)?;
            let options = DdpmOptions { variance, clip_sample: clip_denoised };
            ddpm_sample_strided(&mut predict_noise, schedule, x_t, &timesteps, options, rng, progress)?
        }
        Sampler::Ddim { steps, eta, spacing } => {
            let timesteps = ddim_timesteps(schedule.num_steps(), steps, spacing)?;
            ddim_sample_from(&mut predict_noise, schedule, x_t, &timesteps, eta, rng, progress)?
        }
    };
    Ok(images)
}
