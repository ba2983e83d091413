//! One DDPM training step at a time: sample a batch, the ε-prediction loss at uniform t,
//! backward, NaN/Inf check, gradient-norm clipping, Adam with linear warmup, EMA of the weights.
//! All randomness comes from three seeded Philox streams (data, diffusion noise, dropout) whose
//! positions are saved in checkpoints, so a resumed run continues exactly where it stopped.
//!
//! Gradient accumulation (`accumulate` = K): a step's batch of `batch_size`·K images is drawn
//! whole, in the order a step of batch `batch_size`·K without accumulation draws it (data
//! stream: indices, flips, label drops; noise stream: timesteps, then ε), and then run through
//! the model `batch_size` images at a time. The loss is a mean over the batch, so the mean of
//! the K micro-batches' gradients is the big batch's gradient, and the step equals the big
//! batch's step to float rounding. The one exception is dropout inside the model: its masks
//! are drawn per forward pass, so with dropout > 0 the micro-batches see masks of the same
//! distribution but not the same values as the big batch's.

use ember_diffusion::{NoiseSchedule, epsilon_loss_with, sample_timesteps};
use ember_tensor::optim::{Adam, AdamConfig};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Device, Gradients, Tensor, no_grad, profile};
use ember_unet::module::named_parameters;
use ember_unet::{ForwardContext, UNet, UNetConfig};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Result, TrainError};

/// What the learning rate does after the warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    /// Stays at the peak (the DDPM paper).
    #[default]
    Constant,
    /// Falls linearly to 0 at the last step.
    Linear,
    /// Falls along a half cosine to 0 at the last step.
    Cosine,
}

/// The learning rate of step `step` (0-based) of `total`: `peak·(step + 1)/warmup` during the
/// `warmup` steps, then, with `p` = (step − warmup)/(total − warmup) the progress through the
/// rest, `peak` (constant), `peak·(1 − p)` (linear) or `peak·½(1 + cos πp)` (cosine). Past
/// `total` (a run extended on resume) the decayed rates stay at 0.
pub fn scheduled_lr(peak: f64, warmup: u64, decay: LrDecay, step: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = ((step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64).min(1.0);
    match decay {
        LrDecay::Constant => peak,
        LrDecay::Linear => peak * (1.0 - progress),
        LrDecay::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// Everything that defines a training run (saved as `config.json` in the run folder and in
/// every checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub unet: UNetConfig,
    /// Dataset spec (see [`Dataset::from_name`]).
    pub data: String,
    /// Images per forward/backward pass (a micro-batch when `accumulate` > 1).
    pub batch_size: usize,
    /// Gradient accumulation: each optimizer step averages the gradients of this many
    /// micro-batches of `batch_size` images, the same step as one batch of `batch_size`·K
    /// (see the module doc). Clipping, EMA, the learning rate and `step` go once per optimizer
    /// step. 1 (the default) is no accumulation.
    pub accumulate: usize,
    pub steps: u64,
    /// Adam's learning rate after warmup (the paper: 2e-4).
    pub lr: f64,
    /// Linear warmup from 0 to `lr` over this many steps (the paper: 5000).
    pub warmup_steps: u64,
    /// After the warmup: constant (the paper), or a linear or cosine decay to 0 at `steps`.
    pub lr_decay: LrDecay,
    /// Decoupled weight decay (AdamW, Loshchilov & Hutter): each step multiplies the weights
    /// by `1 − lr·weight_decay` before Adam's update. 0 (the default, the paper) is Adam.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (the paper: 1.0); 0 turns clipping off.
    pub grad_clip: f64,
    /// EMA decay (the paper: 0.9999), ramped up as `min(decay, (1 + n)/(10 + n))` so that
    /// short runs get a useful average.
    pub ema_decay: f64,
    pub random_flip: bool,
    /// "linear" (β from 1e-4 to 0.02) or "cosine".
    pub schedule: String,
    pub num_timesteps: usize,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub sample_every: u64,
    pub sample_count: usize,
    /// DDIM steps for the preview grids.
    pub sample_steps: usize,
    /// For a class-conditional model: the probability that a training image's label is
    /// replaced by the null class (the unconditional case classifier-free guidance needs; Ho &
    /// Salimans use 0.1–0.2).
    pub cond_drop: f64,
    /// For a class-conditional model: the data's class names, in label order (taken from the
    /// data by [`Trainer::new`], kept in every checkpoint). The model's null class is index
    /// `class_names.len()`.
    pub class_names: Vec<String>,
    /// Every this many steps (0: never), the FID of `eval_samples` EMA samples against as many
    /// test images in the features of the classifier `eval_classifier` (a file of `ember
    /// train-classifier`), logged to `metrics.csv` ([`crate::metrics::FidProbe`]).
    pub eval_every: u64,
    pub eval_samples: usize,
    pub eval_classifier: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            unet: UNetConfig::tiny(1),
            data: "fashion-mnist".into(),
            batch_size: 32,
            accumulate: 1,
            steps: 1000,
            lr: 2e-4,
            warmup_steps: 100,
            lr_decay: LrDecay::Constant,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.9999,
            random_flip: true,
            schedule: "linear".into(),
            num_timesteps: 1000,
            seed: 0,
            checkpoint_every: 500,
            sample_every: 500,
            sample_count: 16,
            sample_steps: 50,
            cond_drop: 0.1,
            class_names: Vec::new(),
            eval_every: 0,
            eval_samples: 256,
            eval_classifier: String::new(),
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(TrainError::Config(m.to_string()));
        self.unet.validate()?;
        check_optimization(self.batch_size, self.lr, self.weight_decay, self.grad_clip)?;
        if self.accumulate == 0 {
            return fail("accumulate must be at least 1");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return fail("ema_decay must be in [0, 1)");
        }
        if self.sample_steps == 0 || self.sample_steps > self.num_timesteps {
            return fail("sample_steps must be in 1..=num_timesteps");
        }
        if !(0.0..1.0).contains(&self.cond_drop) {
            return fail("cond_drop must be in [0, 1)");
        }
        if self.eval_every > 0 && (self.eval_samples < 2 || self.eval_classifier.is_empty()) {
            return fail("eval_every needs eval_samples ≥ 2 and an eval_classifier file");
        }
        Ok(())
    }

    /// Whether the model takes class labels.
    pub fn is_class_conditional(&self) -> bool {
        self.unet.num_class_embeds.is_some() || self.unet.class_embed_type.is_some()
    }

    /// The label of the null class (no condition): one past the data's classes.
    pub fn null_class(&self) -> usize {
        self.class_names.len()
    }

    /// The learning rate at `step` (0-based): linear warmup, then `lr_decay` ([`scheduled_lr`]).
    pub fn lr_at(&self, step: u64) -> f64 {
        scheduled_lr(self.lr, self.warmup_steps, self.lr_decay, step, self.steps)
    }

    /// The EMA decay used after `updates` previous updates.
    pub fn ema_decay_at(&self, updates: u64) -> f64 {
        ramped_ema_decay(self.ema_decay, updates)
    }
}

/// The three random streams of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainRngs {
    pub data: Rng,
    pub noise: Rng,
    pub dropout: Rng,
}

impl TrainRngs {
    pub fn new(seed: u64) -> TrainRngs {
        // distinct streams from one seed (Philox keys differ in the high word)
        TrainRngs { data: Rng::new(seed ^ (1 << 40)), noise: Rng::new(seed ^ (2 << 40)), dropout: Rng::new(seed ^ (3 << 40)) }
    }
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Steps completed, this one included.
    pub step: u64,
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

/// `min(decay, (1 + n)/(10 + n))` after `n` updates: the EMA decay ramped up, so that short
/// runs get a useful average.
pub fn ramped_ema_decay(decay: f64, updates: u64) -> f64 {
    decay.min((1 + updates) as f64 / (10 + updates) as f64)
}

/// Copies every parameter of `from` into the same-named one of `to`.
pub fn copy_weights(from: &dyn ember_unet::Module, to: &dyn ember_unet::Module) -> Result<()> {
    let _guard = no_grad();
    for ((_, source), (_, target)) in named_parameters(from).iter().zip(named_parameters(to).iter()) {
        target.assign(source)?;
    }
    Ok(())
}

/// The optimization settings every trainer shares, checked: a batch, a positive finite
/// learning rate, a weight decay and a clipping norm ≥ 0.
pub fn check_optimization(batch_size: usize, lr: f64, weight_decay: f64, grad_clip: f64) -> Result<()> {
    let fail = |m: &str| Err(TrainError::Config(m.to_string()));
    if batch_size == 0 {
        return fail("batch_size must be at least 1");
    }
    if !(lr > 0.0 && lr.is_finite()) {
        return fail("lr must be a positive number");
    }
    if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
        return fail("weight_decay must be ≥ 0");
    }
    if grad_clip.is_nan() || grad_clip < 0.0 {
        return fail("grad_clip must be ≥ 0");
    }
    Ok(())
}

/// `ema ← d·ema + (1 − d)·θ` for every parameter of `model` and its same-named one in `ema`.
pub fn update_ema(ema: &dyn ember_unet::Module, model: &dyn ember_unet::Module, decay: f64) -> Result<()> {
    let (ema, model) = (named_parameters(ema), named_parameters(model));
    let pairs: Vec<(&Tensor, &Tensor)> = ema.iter().zip(model.iter()).map(|((_, e), (_, p))| (e, p)).collect();
    ember_tensor::optim::ema_update_all(&pairs, decay)?;
    Ok(())
}

/// Finishes an optimizer step (0-based `step`) whose gradients are `grads` and mean loss
/// `loss`: stops with [`TrainError::NonFinite`] on a non-finite loss or gradient norm (nothing
/// updated), clips the global gradient norm to `grad_clip` (0: off), and takes Adam's step at
/// learning rate `lr`. Every trainer (the DDPM's, the text-to-image stages') ends its steps here.
/// The clipping factor is applied inside Adam's update (one pass, one launch on a CUDA
/// device, after one read of the norm), not by scaling `grads`.
pub fn optimizer_step(adam: &mut Adam, grads: &Gradients, loss: f64, step: u64, grad_clip: f64, lr: f64) -> Result<StepStats> {
    if !loss.is_finite() {
        return Err(TrainError::NonFinite { step: step + 1, what: "the loss", value: loss });
    }
    let grad_norm = grads.global_norm()?;
    if !grad_norm.is_finite() {
        return Err(TrainError::NonFinite { step: step + 1, what: "the gradient norm", value: grad_norm });
    }
    let grad_scale = if grad_clip > 0.0 { ember_tensor::clip_factor(grad_norm, grad_clip) } else { 1.0 };
    adam.config.lr = lr;
    adam.step_with_grad_scale(grads, grad_scale)?;
    Ok(StepStats { step: step + 1, loss, grad_norm, lr })
}

/// One optimizer step's images and draws (`batch_size`·`accumulate` of each).
struct StepBatch {
    x0: Tensor,
    /// The labels given to the model (some dropped to the null class); None if unconditional.
    classes: Option<Vec<usize>>,
    timesteps: Vec<usize>,
    noise: Tensor,
}

pub struct Trainer {
    pub config: TrainConfig,
    pub model: UNet,
    /// The exponential moving average of the weights (used for sampling).
    pub ema: UNet,
    pub adam: Adam,
    pub schedule: NoiseSchedule,
    pub dataset: Dataset,
    /// Steps completed.
    pub step: u64,
    pub rngs: TrainRngs,
    /// Where the model, its EMA and the optimizer state live and the steps run
    /// ([`Trainer::to_device`]); batches and noise are drawn on the CPU and moved.
    pub device: Device,
}

impl Trainer {
    /// A new run: model initialized from the seed, EMA equal to the model.
    pub fn new(mut config: TrainConfig, dataset: Dataset) -> Result<Trainer> {
        config.validate()?;
        check_dataset_fits(&config, &dataset)?;
        check_classes_fit(&mut config, &dataset)?;
        let mut init_rng = Rng::new(config.seed);
        let model = UNet::new(&config.unet, DType::F32, &mut init_rng)?;
        let ema = UNet::new(&config.unet, DType::F32, &mut Rng::new(0))?;
        copy_weights(&model, &ema)?;
        let params = named_parameters(&model).into_iter().map(|(_, p)| p).collect();
        let adam = Adam::new(params, AdamConfig::adamw(config.lr, config.weight_decay))?;
        let schedule = NoiseSchedule::from_name(&config.schedule, config.num_timesteps)?;
        let rngs = TrainRngs::new(config.seed);
        Ok(Trainer { config, model, ema, adam, schedule, dataset, step: 0, rngs, device: Device::Cpu })
    }

    /// Moves the model, the EMA and the optimizer state to `device`; later steps run there.
    /// The random streams are unchanged, so a run gives the same losses on any device (to
    /// rounding).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        ember_unet::module::to_device(&self.model, device)?;
        ember_unet::module::to_device(&self.ema, device)?;
        self.adam.relocate_state(device)?;
        self.device = device;
        Ok(())
    }

    /// One optimization step: `accumulate` forward/backward passes of `batch_size` images,
    /// their gradients averaged (see the module doc). On a non-finite loss or gradient nothing
    /// is updated and [`TrainError::NonFinite`] is returned.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let step = self.step;
        let (micro, passes) = (self.config.batch_size, self.config.accumulate);
        let batch = self.draw_batch(micro * passes)?;
        profile::mark("trainer", "batch: draw, flips, noise");
        let mut grads = Gradients::default();
        let mut loss_sum = 0.0;
        for pass in 0..passes {
            let rows = pass * micro..(pass + 1) * micro;
            let (x0, noise) = (batch.x0.narrow(0, rows.start, micro)?, batch.noise.narrow(0, rows.start, micro)?);
            let classes = batch.classes.as_ref().map(|c| &c[rows.clone()]);
            let model = &self.model;
            let dropout_rng = &mut self.rngs.dropout;
            let mut predict_noise = |x: &Tensor, t: &[f64]| model.forward_with_classes(x, t, classes, &mut ForwardContext { training: true, rng: dropout_rng });
            let loss = epsilon_loss_with(&mut predict_noise, &self.schedule, &x0, &batch.timesteps[rows], &noise)?;
            let loss_value = loss.item()?;
            if !loss_value.is_finite() {
                return Err(TrainError::NonFinite { step: step + 1, what: "the loss", value: loss_value });
            }
            loss_sum += loss_value;
            grads.accumulate(loss.backward()?)?;
        }
        if passes > 1 {
            grads.scale(1.0 / passes as f64)?;
        }
        let loss_value = loss_sum / passes as f64;
        let stats = optimizer_step(&mut self.adam, &grads, loss_value, step, self.config.grad_clip, self.config.lr_at(step))?;
        profile::mark("trainer", "clip + adam");
        self.update_ema()?;
        profile::mark("trainer", "ema");
        self.step += 1;
        Ok(stats)
    }

    /// The random draws of one step's `size` images, in the order that fixes every run's
    /// stream positions (see the module doc): from the data stream the indices and flips
    /// ([`Dataset::sample_indices`]) and, for a class-conditional model, one uniform per image
    /// that drops its label to the null class with probability `cond_drop`; from the noise
    /// stream the timesteps ([`sample_timesteps`]), then ε.
    fn draw_batch(&mut self, size: usize) -> Result<StepBatch> {
        let (indices, flips) = self.dataset.sample_indices(size, &mut self.rngs.data, self.config.random_flip);
        let x0 = self.dataset.batch(&indices, &flips)?.to_device(self.device)?;
        let classes = match self.dataset.batch_labels(&indices)? {
            Some(labels) if self.config.is_class_conditional() => {
                let drops = self.rngs.data.uniform_values(labels.len());
                let null = self.config.null_class();
                Some(labels.into_iter().zip(drops).map(|(label, u)| if u < self.config.cond_drop { null } else { label }).collect())
            }
            _ => None,
        };
        let timesteps = sample_timesteps(self.schedule.num_steps(), size, &mut self.rngs.noise);
        let noise = Tensor::randn_on(x0.shape(), 0.0, 1.0, x0.dtype(), x0.device(), &mut self.rngs.noise)?;
        Ok(StepBatch { x0, classes, timesteps, noise })
    }

    /// `ema ← d·ema + (1 − d)·θ`.
    fn update_ema(&self) -> Result<()> {
        update_ema(&self.ema, &self.model, self.config.ema_decay_at(self.step))
    }
}

fn check_dataset_fits(config: &TrainConfig, dataset: &Dataset) -> Result<()> {
    let u = &config.unet;
    if dataset.channels() != u.in_channels || dataset.size() != u.sample_size {
        return Err(TrainError::Config(format!(
            "the data has {} channel(s) of {}x{} but the model takes {} channel(s) of {}x{}",
            dataset.channels(),
            dataset.size(),
            dataset.size(),
            u.in_channels,
            u.sample_size,
            u.sample_size
        )));
    }
    Ok(())
}

/// For a class-conditional model: the data must be labelled, the model must have one class
/// embedding per class plus the null class, and a run's class names (a resumed run's) must be
/// the data's. Fills in `config.class_names` from the data.
fn check_classes_fit(config: &mut TrainConfig, dataset: &Dataset) -> Result<()> {
    if !config.is_class_conditional() {
        return Ok(());
    }
    let names = dataset.class_names();
    if names.is_empty() {
        return Err(TrainError::Config(format!("the model is class-conditional, but {} has no labels", dataset.name())));
    }
    if let Some(embeddings) = config.unet.num_class_embeds
        && embeddings != names.len() + 1
    {
        return Err(TrainError::Config(format!(
            "the model has {embeddings} class embeddings; the data has {} classes, so it needs {} (one more for the null class of classifier-free guidance)",
            names.len(),
            names.len() + 1
        )));
    }
    if !config.class_names.is_empty() && config.class_names != names {
        return Err(TrainError::Config(format!("the run's classes are {:?}, the data's {:?}", config.class_names, names)));
    }
    config.class_names = names.to_vec();
    Ok(())
}
