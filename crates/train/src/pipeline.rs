//! Text to image, Stable Diffusion's formula in miniature (Rombach et al. 2022): a prompt is
//! tokenized and encoded by the text model (`last_hidden_state`, with its padding mask), DDIM
//! runs in the VAE's latent space with the cross-attention UNet under classifier-free guidance
//! (`ε = ε(∅) + w·(ε(prompt) − ε(∅))`, ∅ the negative prompt, empty by default), and the VAE
//! decodes the final latents. One file holds the whole pipeline: `text_encoder.*`, `unet.*`
//! and `vae.*` weights with the configs and the vocabulary in the metadata.
//!
//! Prompt fidelity ([`prompt_fidelity`]) measures whether the canvases show what the prompts
//! ask: the classifier reads the left and the right 32×32 cell of each generated canvas, and a
//! canvas counts when both are the prompt's garments (chance: 1%).

use std::collections::BTreeMap;
use std::path::Path;

use ember_diffusion::{NoiseSchedule, TimestepSpacing, ddim_sample_from, ddim_timesteps};
use ember_tensor::io::{load_safetensors, save_safetensors};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Device, Tensor, no_grad};
use ember_unet::clip::{ClipTextConfig, ClipTextModel};
use ember_unet::module::{join, load_weights, named_parameters};
use ember_unet::{AutoencoderKL, Condition, EncoderStates, ForwardContext, Module, UNet, UNetConfig, VaeConfig};
use serde::{Deserialize, Serialize};

use crate::classifier::Classifier;
use crate::compose::{CANVAS_HEIGHT, CANVAS_WIDTH, CELL, ComposedData, Scene, caption};
use crate::error::{Result, TrainError};
use crate::sampling::guided_noise;
use crate::tokenizer::WordTokenizer;

/// The pipeline file's format.
pub const PIPELINE_FORMAT: &str = "ember-txt2img-1";

/// The parts' configs and what the pipeline was trained with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub text_encoder: ClipTextConfig,
    /// The tokenizer's words.
    pub words: Vec<String>,
    /// The noise schedule's name and length.
    pub schedule: String,
    pub num_timesteps: usize,
    /// The ordered pairs (left, right) held out of every stage's training.
    pub held_out: Vec<(usize, usize)>,
}

/// How to draw: the negative prompt (the unconditional side of guidance), the guidance scale
/// (1: the conditional model alone; 0: the unconditional one), DDIM's steps and eta.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub negative_prompt: String,
    pub guidance: f64,
    pub steps: usize,
    pub eta: f64,
}

impl Default for Generation {
    fn default() -> Self {
        Generation { negative_prompt: String::new(), guidance: 4.0, steps: 50, eta: 0.0 }
    }
}

/// The three modules, the tokenizer and the schedule.
pub struct Txt2Img {
    pub config: PipelineConfig,
    pub tokenizer: WordTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet,
    pub vae: AutoencoderKL,
    pub schedule: NoiseSchedule,
}

impl Module for Txt2Img {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.text_encoder.visit(&join(prefix, "text_encoder"), f);
        self.unet.visit(&join(prefix, "unet"), f);
        self.vae.visit(&join(prefix, "vae"), f);
    }
}

impl Txt2Img {
    /// A pipeline of freshly initialized modules (weights are loaded or trained next).
    pub fn new(config: PipelineConfig, rng: &mut Rng) -> Result<Txt2Img> {
        let tokenizer = WordTokenizer::new(&config.words, config.text_encoder.max_position_embeddings)?;
        let fail = |m: String| Err(TrainError::Config(m));
        if tokenizer.vocab_size() != config.text_encoder.vocab_size {
            return fail(format!("{} tokens, but the text encoder has {}", tokenizer.vocab_size(), config.text_encoder.vocab_size));
        }
        if config.unet.cross_attention_dim != Some(config.text_encoder.hidden_size) {
            return fail(format!(
                "the UNet attends to {:?}-wide context, the text encoder gives {}",
                config.unet.cross_attention_dim, config.text_encoder.hidden_size
            ));
        }
        if config.unet.in_channels != config.vae.latent_channels || config.unet.out_channels != config.vae.latent_channels {
            return fail(format!("the UNet takes {} channels, the VAE's latents have {}", config.unet.in_channels, config.vae.latent_channels));
        }
        let f = config.vae.downsampling_factor();
        let unet_factor = 1 << (config.unet.block_out_channels.len() - 1);
        if !CANVAS_HEIGHT.is_multiple_of(f * unet_factor) || !CANVAS_WIDTH.is_multiple_of(f * unet_factor) {
            return fail(format!("{CANVAS_WIDTH}x{CANVAS_HEIGHT} canvases do not fit a VAE of factor {f} and a UNet of factor {unet_factor}"));
        }
        Ok(Txt2Img {
            text_encoder: ClipTextModel::new(&config.text_encoder, DType::F32, rng)?,
            unet: UNet::new(&config.unet, DType::F32, rng)?,
            vae: AutoencoderKL::new(&config.vae, DType::F32, rng)?,
            schedule: NoiseSchedule::from_name(&config.schedule, config.num_timesteps)?,
            tokenizer,
            config,
        })
    }

    /// `[latent_channels, height, width]` of a canvas's latents.
    pub fn latent_shape(&self) -> [usize; 3] {
        let f = self.config.vae.downsampling_factor();
        [self.config.vae.latent_channels, CANVAS_HEIGHT / f, CANVAS_WIDTH / f]
    }

    /// The text encoder's `last_hidden_state [B, S, D]` of `prompts` and their mask `[B, S]`,
    /// without gradients (the encoder is frozen).
    pub fn encode_text(&self, prompts: &[&str]) -> Result<(Tensor, Tensor)> {
        let _guard = no_grad();
        let encoded = self.tokenizer.encode(prompts)?;
        let mask = Tensor::from_f64(&encoded.mask_values(), &[prompts.len(), self.tokenizer.max_length()], DType::F32)?;
        let hidden = self.text_encoder.forward(&encoded.ids, Some(&mask))?.last_hidden_state;
        Ok((hidden, mask))
    }

    /// The UNet's noise prediction for latents `x` at `timesteps` given encoded text.
    pub fn predict_noise(&self, x: &Tensor, timesteps: &[f64], context: &(Tensor, Tensor), ctx: &mut ForwardContext) -> Result<Tensor> {
        let encoder = EncoderStates { hidden_states: &context.0, attention_mask: Some(&context.1) };
        Ok(self.unet.forward_conditioned(x, timesteps, &Condition { classes: None, encoder: Some(encoder) }, ctx)?)
    }

    /// One canvas `[n, 1, 32, 64]` per prompt: x_T ~ N(0, I) from `rng`, DDIM (leading
    /// spacing) in latent space under classifier-free guidance, then the VAE's decoder. Each
    /// step runs the prompts and the negative prompt as one batch of 2n.
    pub fn generate(&self, prompts: &[&str], how: &Generation, rng: &mut Rng, progress: &mut dyn FnMut(usize, usize)) -> Result<Tensor> {
        let n = prompts.len();
        if n == 0 {
            return Err(TrainError::Config("no prompt to draw".into()));
        }
        let negative = vec![how.negative_prompt.as_str(); n];
        let both: Vec<&str> = prompts.iter().copied().chain(negative).collect();
        let context = self.encode_text(&both)?;
        let device = self.device();
        let context = (context.0.to_device(device)?, context.1.to_device(device)?);
        let mut unused = Rng::new(0);
        let mut predict = |x: &Tensor, t: &[f64]| -> Result<Tensor> {
            let on_device = x.to_device(device)?;
            let doubled = Tensor::cat(&[&on_device, &on_device], 0)?;
            let t2: Vec<f64> = t.iter().chain(t).copied().collect();
            let both = self.predict_noise(&doubled, &t2, &context, &mut ForwardContext { training: false, rng: &mut unused })?;
            let (conditional, unconditional) = (both.narrow(0, 0, n)?, both.narrow(0, n, n)?);
            Ok(guided_noise(&conditional, &unconditional, how.guidance)?.to_device(x.device())?)
        };
        let [c, h, w] = self.latent_shape();
        let x_t = Tensor::randn(&[n, c, h, w], 0.0, 1.0, DType::F32, rng);
        let timesteps = ddim_timesteps(self.schedule.num_steps(), how.steps, TimestepSpacing::Leading)?;
        let latents = ddim_sample_from(&mut predict, &self.schedule, x_t, &timesteps, how.eta, rng, progress)?;
        let _guard = no_grad();
        let decoded = self.vae.decode(&self.vae.unscale_latents(&latents.to_device(device)?)?)?;
        Ok(decoded.to_device(Device::Cpu)?)
    }

    /// The device the UNet's parameters are on.
    pub fn device(&self) -> Device {
        named_parameters(&self.unet).first().map_or(Device::Cpu, |(_, p)| p.device())
    }

    /// Writes the pipeline (weights in `dtype`) atomically.
    pub fn save(&self, path: &Path, dtype: DType) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = named_parameters(self).into_iter().map(|(n, t)| Ok((n, t.to_dtype(dtype)?))).collect::<Result<_>>()?;
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let metadata = BTreeMap::from([
            ("format".to_string(), PIPELINE_FORMAT.to_string()),
            ("pipeline_config".to_string(), serde_json::to_string_pretty(&self.config).expect("a config serializes")),
        ]);
        save_safetensors(path, &refs, &metadata)?;
        Ok(())
    }

    /// Reads a pipeline written by [`Txt2Img::save`] (f32 in memory, on the CPU).
    pub fn load(path: &Path) -> Result<Txt2Img> {
        let file = load_safetensors(path)?;
        let fail = |msg: String| TrainError::Checkpoint { path: path.display().to_string(), msg };
        match file.metadata.get("format") {
            Some(format) if format == PIPELINE_FORMAT => {}
            other => return Err(fail(format!("format {other:?}, expected {PIPELINE_FORMAT:?} (a pipeline of ember train --pipeline txt2img)"))),
        }
        let text = file.metadata.get("pipeline_config").ok_or_else(|| fail("no pipeline_config in the metadata".into()))?;
        let config: PipelineConfig = serde_json::from_str(text).map_err(|e| fail(format!("bad pipeline_config: {e}")))?;
        let pipeline = Txt2Img::new(config, &mut Rng::new(0))?;
        let weights = file.tensors.into_iter().map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?))).collect::<Result<_>>()?;
        load_weights(&pipeline, &weights)?;
        Ok(pipeline)
    }
}

/// Whether `path` is a pipeline file (by its metadata; false if it cannot be read as one).
pub fn is_pipeline_file(path: &Path) -> bool {
    load_safetensors(path).is_ok_and(|file| file.metadata.get("format").is_some_and(|f| f == PIPELINE_FORMAT))
}

/// How many canvases of each ordered pair showed both of its garments where they belong.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fidelity {
    /// `(pair, canvases read right, canvases)`, in the order the pairs were given.
    pub per_pair: Vec<((usize, usize), usize, usize)>,
}

impl Fidelity {
    /// Counts `wanted` pairs against the classes read in the left and right cells.
    fn count(wanted: &[(usize, usize)], left: &[usize], right: &[usize]) -> Fidelity {
        let mut per_pair: Vec<((usize, usize), usize, usize)> = Vec::new();
        for (&pair, (&l, &r)) in wanted.iter().zip(left.iter().zip(right)) {
            let at = per_pair.iter().position(|(p, _, _)| *p == pair).unwrap_or_else(|| {
                per_pair.push((pair, 0, 0));
                per_pair.len() - 1
            });
            per_pair[at].1 += usize::from(pair == (l, r));
            per_pair[at].2 += 1;
        }
        Fidelity { per_pair }
    }

    /// The share of all canvases read right.
    pub fn share(&self) -> f64 {
        let (right, all) = self.per_pair.iter().fold((0, 0), |(a, b), (_, r, n)| (a + r, b + n));
        right as f64 / all.max(1) as f64
    }

    /// The share of one pair's canvases read right.
    pub fn share_of(&self, pair: (usize, usize)) -> Option<f64> {
        self.per_pair.iter().find(|(p, _, _)| *p == pair).map(|(_, right, all)| *right as f64 / (*all).max(1) as f64)
    }
}

/// Prompt fidelity: the generated canvases whose left and right cells the classifier reads as
/// the prompt's garments. For each pair, `per_pair` canvases, each prompt a fresh caption of
/// the pair (any template, synonyms, either word order), drawn `batch_size` at a time.
/// Captions, noise and everything else come from `seed`.
pub fn prompt_fidelity(
    pipeline: &Txt2Img,
    classifier: &Classifier,
    pairs: &[(usize, usize)],
    per_pair: usize,
    how: &Generation,
    batch_size: usize,
    seed: u64,
) -> Result<Fidelity> {
    let mut rng = Rng::new(seed);
    let wanted: Vec<(usize, usize)> = pairs.iter().flat_map(|&pair| std::iter::repeat_n(pair, per_pair)).collect();
    let prompts: Vec<String> = wanted.iter().map(|&(left, right)| caption(Scene::Pair { left, right }, &mut rng)).collect();
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for chunk in prompts.chunks(batch_size.max(1)) {
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let (l, r) = cell_classes(classifier, &pipeline.generate(&texts, how, &mut rng, &mut |_, _| {})?)?;
        left.extend(l);
        right.extend(r);
    }
    Ok(Fidelity::count(&wanted, &left, &right))
}

/// The same count for real canvases: `per_pair` canvases of each pair composed from `data`'s
/// garments (the test split's), read by the classifier: the ceiling of [`prompt_fidelity`]
/// with this classifier, which confuses some garments (shirts above all).
pub fn real_canvas_fidelity(classifier: &Classifier, data: &ComposedData, pairs: &[(usize, usize)], per_pair: usize, seed: u64) -> Result<Fidelity> {
    let wanted: Vec<(usize, usize)> = pairs.iter().flat_map(|&pair| std::iter::repeat_n(pair, per_pair)).collect();
    let scenes: Vec<Scene> = wanted.iter().map(|&(left, right)| Scene::Pair { left, right }).collect();
    let (left, right) = cell_classes(classifier, &data.render_batch(&scenes, &mut Rng::new(seed))?)?;
    Ok(Fidelity::count(&wanted, &left, &right))
}

/// The classes the classifier reads in the left and the right cell of canvases `[n, 1, 32, 64]`.
pub fn cell_classes(classifier: &Classifier, canvases: &Tensor) -> Result<(Vec<usize>, Vec<usize>)> {
    let to_device = |t: Tensor| t.to_device(classifier.device());
    let left = to_device(canvases.narrow(3, 0, CELL)?.deep_copy()?)?;
    let right = to_device(canvases.narrow(3, CELL, CELL)?.deep_copy()?)?;
    Ok((classifier.predict(&left, 64)?, classifier.predict(&right, 64)?))
}
