//! Latent diffusion (`ember train --pipeline txt2img`): the cross-attention UNet learns DDPM's
//! ε-prediction on the VAE's scaled latents of composed canvases, conditioned on the frozen
//! text encoder's hidden states of their captions. A share `caption_drop` of the captions is
//! replaced by the empty caption, so that the same model also predicts ε(∅), the
//! unconditional side of classifier-free guidance (Ho & Salimans 2022).
//!
//! The stage's checkpoint holds the trained UNet, its EMA, Adam's state and the frozen text
//! encoder and VAE (`text_encoder.*`, `vae.*`), so it alone resumes the run; each checkpoint also
//! writes `pipeline.safetensors` beside it (the EMA UNet with the frozen parts: what
//! `ember txt2img` reads).

use std::path::Path;

use ember_diffusion::{epsilon_loss_with, sample_timesteps};
use ember_tensor::optim::Adam;
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor, no_grad};
use ember_unet::clip::{ClipTextConfig, ClipTextModel};
use ember_unet::config::{CROSS_ATTN_DOWN_BLOCK, CROSS_ATTN_UP_BLOCK, DOWN_BLOCK, UP_BLOCK};
use ember_unet::{AutoencoderKL, ForwardContext, UNet, UNetConfig};
use serde::{Deserialize, Serialize};

use crate::autoencoder::VaeStage;
use crate::checkpoint::{TrainingFile, TrainingState, save_training_state};
use crate::compose::{ComposedData, Scene, caption};
use crate::contrastive::{ClipStage, ContrastiveConfig};
use crate::data::Split;
use crate::error::{Result, TrainError};
use crate::images::write_grid_png;
use crate::pipeline::{Generation, PipelineConfig, Txt2Img, is_pipeline_file};
use crate::stage::{Stage, StageSettings};
use crate::trainer::{StepStats, TrainRngs, copy_weights, ramped_ema_decay, update_ema};

/// The latent diffusion stage's checkpoint format.
pub const LATENT_STAGE_FORMAT: &str = "ember-latent-diffusion-stage-1";

/// Everything that defines a latent diffusion run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatentDiffusionConfig {
    /// The UNet, the text encoder and VAE configs (frozen parts), the vocabulary, the schedule
    /// and the held-out pairs (those of the text encoder's run).
    pub pipeline: PipelineConfig,
    /// The EMA decay of the UNet's weights (ramped up as in the DDPM trainer).
    pub ema_decay: f64,
    /// The probability that a caption is replaced by the empty one.
    pub caption_drop: f64,
    /// DDIM steps and guidance scale of the preview grids.
    pub sample_steps: usize,
    pub guidance: f64,
    /// Where the frozen parts were read from (for the record).
    pub vae_checkpoint: String,
    pub text_encoder_checkpoint: String,
    #[serde(flatten)]
    pub settings: StageSettings,
}

impl Default for LatentDiffusionConfig {
    fn default() -> Self {
        let text = ContrastiveConfig::default();
        let vae = crate::autoencoder::VaeTrainConfig::small_vae();
        LatentDiffusionConfig {
            pipeline: PipelineConfig {
                unet: LatentDiffusionConfig::small_unet(vae.latent_channels, text.text.hidden_size),
                vae,
                text_encoder: text.text,
                words: text.words,
                schedule: "linear".into(),
                num_timesteps: 1000,
                held_out: text.settings.held_out,
            },
            ema_decay: 0.999,
            caption_drop: 0.1,
            sample_steps: 25,
            guidance: 4.0,
            vae_checkpoint: String::new(),
            text_encoder_checkpoint: String::new(),
            settings: StageSettings { batch_size: 32, steps: 4000, lr: 5e-4, ..StageSettings::default() },
        }
    }
}

impl LatentDiffusionConfig {
    /// The UNet of the 16×8 latents: two levels (64, 128 channels, two residual blocks each),
    /// cross-attention at the top level and in the middle, 4 heads, context tokens of
    /// `context_dim`. `sample_size` is the latents' height (diffusers' convention for a
    /// square; the width is twice it).
    pub fn small_unet(latent_channels: usize, context_dim: usize) -> UNetConfig {
        UNetConfig {
            sample_size: 8,
            in_channels: latent_channels,
            out_channels: latent_channels,
            block_out_channels: vec![64, 128],
            down_block_types: vec![CROSS_ATTN_DOWN_BLOCK.into(), DOWN_BLOCK.into()],
            up_block_types: vec![UP_BLOCK.into(), CROSS_ATTN_UP_BLOCK.into()],
            layers_per_block: 2,
            cross_attention_dim: Some(context_dim),
            attention_head_dim: Some(4),
            norm_num_groups: 16,
            ..UNetConfig::diffusers_condition_defaults()
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.settings.validate()?;
        self.pipeline.unet.validate()?;
        if !self.pipeline.unet.has_cross_attention() {
            return Err(TrainError::Config("latent diffusion needs a UNet2DConditionModel (cross-attention to the text)".into()));
        }
        if !(0.0..1.0).contains(&self.caption_drop) {
            return Err(TrainError::Config("caption_drop must be in [0, 1)".into()));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(TrainError::Config("ema_decay must be in [0, 1)".into()));
        }
        if self.sample_steps == 0 || self.sample_steps > self.pipeline.num_timesteps {
            return Err(TrainError::Config("sample_steps must be in 1..=num_timesteps".into()));
        }
        Ok(())
    }
}

/// Prompts of the preview grids: single garments, training pairs, and held-out pairs.
pub fn preview_prompts(held_out: &[(usize, usize)]) -> Vec<String> {
    let mut rng = Rng::new(0);
    let mut scenes = vec![Scene::One(8), Scene::Pair { left: 3, right: 3 }];
    let training = Scene::all().into_iter().filter(|s| matches!(s, Scene::Pair { left, right } if left != right && !held_out.contains(&(*left, *right))));
    scenes.extend(training.step_by(17).take(3));
    scenes.extend(held_out.iter().take(3).map(|&(left, right)| Scene::Pair { left, right }));
    scenes.into_iter().map(|scene| caption(scene, &mut rng)).collect()
}

/// A trained text encoder with what a pipeline keeps beside it: its config, the tokenizer's
/// words and the ordered pairs its run held out.
pub struct FrozenTextEncoder {
    pub config: ClipTextConfig,
    pub words: Vec<String>,
    pub held_out: Vec<(usize, usize)>,
    pub model: ClipTextModel,
}

impl FrozenTextEncoder {
    /// The text encoder of `path`: an `ember train-clip` checkpoint, or a pipeline (whose
    /// stage 3 is then trained again on the same text encoder).
    pub fn load(path: &Path) -> Result<FrozenTextEncoder> {
        if is_pipeline_file(path) {
            let pipeline = Txt2Img::load(path)?;
            let c = pipeline.config;
            return Ok(FrozenTextEncoder { config: c.text_encoder, words: c.words, held_out: c.held_out, model: pipeline.text_encoder });
        }
        let (config, model) = ClipStage::load_model(path)?;
        Ok(FrozenTextEncoder { config: config.text, words: config.words, held_out: config.settings.held_out, model: model.text_model })
    }
}

/// The VAE of `path`: an `ember train-vae` checkpoint, or a pipeline.
pub fn load_frozen_vae(path: &Path) -> Result<AutoencoderKL> {
    if is_pipeline_file(path) {
        return Ok(Txt2Img::load(path)?.vae);
    }
    VaeStage::load_model(path)
}

/// The latent diffusion stage (see the module doc). `pipeline.unet` is the EMA of `model`.
pub struct LatentDiffusionStage {
    pub config: LatentDiffusionConfig,
    /// The UNet being trained.
    pub model: UNet,
    /// The frozen text encoder and VAE, and the EMA UNet.
    pub pipeline: Txt2Img,
    pub adam: Adam,
    /// Steps completed.
    pub step: u64,
    pub rngs: TrainRngs,
    train: ComposedData,
}

impl LatentDiffusionStage {
    /// A new run on the frozen text encoder (with its vocabulary and held-out pairs) and VAE;
    /// the config's pipeline parts are taken from them.
    pub fn new(mut config: LatentDiffusionConfig, text: &FrozenTextEncoder, vae: &AutoencoderKL) -> Result<Self> {
        let p = &mut config.pipeline;
        (p.text_encoder, p.words, p.vae) = (text.config.clone(), text.words.clone(), vae.config.clone());
        p.held_out = text.held_out.clone();
        config.settings.held_out = p.held_out.clone();
        let stage = LatentDiffusionStage::fresh(config)?;
        copy_weights(&text.model, &stage.pipeline.text_encoder)?;
        copy_weights(vae, &stage.pipeline.vae)?;
        Ok(stage)
    }

    /// A run that fine-tunes a trained pipeline: its text encoder and VAE stay frozen, its
    /// vocabulary, held-out pairs, schedule and UNet config are taken over, and the UNet being
    /// trained and its EMA both start from its UNet. Adam's state, the step count, the learning
    /// rate schedule and the random streams start afresh (from `config.settings`): a warm
    /// restart that needs only the shipped pipeline, not the run that made it.
    pub fn from_pipeline(mut config: LatentDiffusionConfig, pipeline: &Txt2Img) -> Result<Self> {
        config.pipeline = pipeline.config.clone();
        config.settings.held_out = config.pipeline.held_out.clone();
        let stage = LatentDiffusionStage::fresh(config)?;
        copy_weights(&pipeline.text_encoder, &stage.pipeline.text_encoder)?;
        copy_weights(&pipeline.vae, &stage.pipeline.vae)?;
        copy_weights(&pipeline.unet, &stage.model)?;
        copy_weights(&pipeline.unet, &stage.pipeline.unet)?;
        Ok(stage)
    }

    /// The stage with a new UNet (its EMA equal to it) and untrained frozen parts.
    fn fresh(config: LatentDiffusionConfig) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::new(config.settings.seed);
        let model = UNet::new(&config.pipeline.unet, DType::F32, &mut rng)?;
        let pipeline = Txt2Img::new(config.pipeline.clone(), &mut rng)?;
        copy_weights(&model, &pipeline.unet)?;
        let adam = config.settings.optimizer(&model)?;
        let train = config.settings.composed(Split::Train)?;
        Ok(LatentDiffusionStage { rngs: TrainRngs::new(config.settings.seed), config, model, pipeline, adam, step: 0, train })
    }

    /// Continues the run saved at `path`, to `steps` if given.
    pub fn resume(path: &Path, steps: Option<u64>) -> Result<Self> {
        let file = TrainingFile::load(path, LATENT_STAGE_FORMAT)?;
        let mut config: LatentDiffusionConfig = file.config()?;
        config.settings.steps = steps.unwrap_or(config.settings.steps);
        let mut stage = LatentDiffusionStage::fresh(config)?;
        file.load_into("text_encoder", &stage.pipeline.text_encoder)?;
        file.load_into("vae", &stage.pipeline.vae)?;
        file.restore(&stage.model, Some(&stage.pipeline.unet), &mut stage.adam)?;
        stage.step = file.step;
        stage.rngs = TrainRngs { data: file.rng("data")?, noise: file.rng("noise")?, dropout: file.rng("dropout")? };
        Ok(stage)
    }

    /// The path of the pipeline written beside a checkpoint.
    pub fn pipeline_path(checkpoint: &Path) -> std::path::PathBuf {
        checkpoint.with_file_name("pipeline.safetensors")
    }
}

impl Stage for LatentDiffusionStage {
    fn step(&self) -> u64 {
        self.step
    }
    fn settings(&self) -> &StageSettings {
        &self.config.settings
    }
    fn config_json(&self) -> String {
        serde_json::to_string_pretty(&self.config).expect("a config serializes")
    }

    /// Data stream: the canvases and captions, then one uniform per caption that drops it;
    /// noise stream: the posterior samples, the timesteps, then ε; dropout stream: the UNet's.
    fn train_step(&mut self) -> Result<StepStats> {
        let batch = self.config.settings.batch_size;
        let (x, mut captions, _) = self.train.training_batch(batch, DType::F32, &mut self.rngs.data)?;
        for (text, u) in captions.iter_mut().zip(self.rngs.data.uniform_values(batch)) {
            if u < self.config.caption_drop {
                text.clear();
            }
        }
        let p = &self.pipeline;
        let latents = {
            let _guard = no_grad();
            p.vae.scale_latents(&p.vae.encode(&x)?.sample(&mut self.rngs.noise)?)?
        };
        let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let context = p.encode_text(&texts)?;
        let timesteps = sample_timesteps(p.schedule.num_steps(), batch, &mut self.rngs.noise);
        let noise = Tensor::randn(latents.shape(), 0.0, 1.0, DType::F32, &mut self.rngs.noise);
        let (model, dropout) = (&self.model, &mut self.rngs.dropout);
        let mut predict = |x: &Tensor, t: &[f64]| -> Result<Tensor> {
            let encoder = ember_unet::EncoderStates { hidden_states: &context.0, attention_mask: Some(&context.1) };
            let condition = ember_unet::Condition { classes: None, encoder: Some(encoder) };
            Ok(model.forward_conditioned(x, t, &condition, &mut ForwardContext { training: true, rng: dropout })?)
        };
        let loss = epsilon_loss_with(&mut predict, &p.schedule, &latents, &timesteps, &noise)?;
        let stats = self.config.settings.minimize(&mut self.adam, &loss, self.step)?;
        update_ema(&self.pipeline.unet, &self.model, ramped_ema_decay(self.config.ema_decay, self.step))?;
        self.step += 1;
        Ok(stats)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let r = &self.rngs;
        let state = TrainingState {
            format: LATENT_STAGE_FORMAT,
            model: &self.model,
            ema: Some(&self.pipeline.unet),
            frozen: vec![("text_encoder", &self.pipeline.text_encoder), ("vae", &self.pipeline.vae)],
            adam: &self.adam,
            step: self.step,
            rngs: vec![("data", &r.data), ("noise", &r.noise), ("dropout", &r.dropout)],
            config_json: self.config_json(),
        };
        save_training_state(&state, path)?;
        self.pipeline.save(&LatentDiffusionStage::pipeline_path(path), DType::F32)
    }

    /// A grid of the preview prompts (two canvases each) from the EMA UNet.
    fn preview(&mut self, image: &Path) -> Result<Vec<(String, f64)>> {
        let prompts = preview_prompts(&self.config.pipeline.held_out);
        let doubled: Vec<&str> = prompts.iter().flat_map(|p| [p.as_str(), p.as_str()]).collect();
        let how = Generation { guidance: self.config.guidance, steps: self.config.sample_steps, ..Generation::default() };
        let canvases = self.pipeline.generate(&doubled, &how, &mut Rng::new(self.config.settings.seed), &mut |_, _| {})?;
        write_grid_png(image, &canvases, 4)?;
        Ok(Vec::new())
    }
}
