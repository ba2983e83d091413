//! The text encoder of latent diffusion, trained as CLIP trains it (Radford et al. 2021,
//! "Learning Transferable Visual Models From Natural Language Supervision"): a text model and an
//! image encoder map captions and canvases into one space, and a batch's matching pairs are
//! pulled together against every mismatched pair by the symmetric InfoNCE loss
//!
//! ```text
//! t_i = normalize(W_t · pooled(text_i)),   v_j = normalize(W_v · flatten(cnn(image_j)))
//! L_ij = exp(s) · t_i · v_j                  (s: the learned log-temperature, logit_scale)
//! loss = ½ (CE(L, diag) + CE(Lᵀ, diag))      (caption → canvas and canvas → caption)
//! ```
//!
//! The text model is transformers' `CLIPTextModel` ([`ClipTextModel`]), so its
//! `last_hidden_state` is what the diffusion UNet cross-attends to; the image side is a small
//! CNN (the classifier's blocks) whose last level is flattened, not pooled, so that the
//! embedding keeps where each garment is ("a bag left of a dress" is not "a dress left of a
//! bag"). Parameter names follow transformers' `CLIPModel` where it has the part
//! (`text_model.*`, `text_projection.weight`, `visual_projection.weight`, `logit_scale`);
//! `vision_model.blocks.*` is ember's CNN, not CLIP's ViT.
//!
//! A batch holds distinct scenes only: two canvases of one scene would be a matching pair
//! scored as a mismatch. `ember train-clip` runs the stage; its measure is retrieval: for a
//! caption, the canvas of its scene among 100 canvases of distinct scenes (chance 1%), on the
//! held-out pairs and on training pairs, with the test split's garments.

use std::collections::BTreeSet;
use std::path::Path;

use ember_tensor::optim::Adam;
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor, no_grad};
use ember_unet::Module;
use ember_unet::clip::{ClipTextConfig, ClipTextModel};
use ember_unet::layers::Linear;
use ember_unet::module::{join, visit_list};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{TrainingFile, TrainingState, save_training_state};
use crate::classifier::{ClassifierBlock, argmax_rows};
use crate::compose::{CANVAS_HEIGHT, CANVAS_WIDTH, ComposedData, Scene, caption, caption_words};
use crate::data::Split;
use crate::error::{Result, TrainError};
use crate::images::write_grid_png;
use crate::stage::{Stage, StageSettings};
use crate::tokenizer::{END_ID, Encoded, PAD_ID, START_ID, WordTokenizer};
use crate::trainer::{StepStats, TrainRngs};

/// The contrastive stage's checkpoint format.
pub const CLIP_STAGE_FORMAT: &str = "ember-clip-stage-1";
/// Tokens per caption (start, up to 14 words, end, padding).
pub const MAX_TOKENS: usize = 16;
/// CLIP's bound on the temperature: `exp(logit_scale) ≤ 100`.
pub const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092;
/// Canvases a caption is matched against in [`retrieval_accuracy`].
pub const RETRIEVAL_CANDIDATES: usize = 100;

/// Everything that defines a contrastive training run (`ember train-clip`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContrastiveConfig {
    pub text: ClipTextConfig,
    /// The tokenizer's words (see [`WordTokenizer`]); their count sets `text.vocab_size`.
    pub words: Vec<String>,
    /// Channels of each level of the image CNN (each level halves the canvas).
    pub image_widths: Vec<usize>,
    pub norm_num_groups: usize,
    /// The initial log-temperature (CLIP: ln(1/0.07)).
    pub logit_scale_init: f64,
    #[serde(flatten)]
    pub settings: StageSettings,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        let words = caption_words();
        let tokenizer = WordTokenizer::new(&words, MAX_TOKENS).expect("caption words tokenize");
        ContrastiveConfig {
            text: ClipTextConfig {
                vocab_size: tokenizer.vocab_size(),
                hidden_size: 64,
                intermediate_size: 256,
                projection_dim: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                max_position_embeddings: MAX_TOKENS,
                pad_token_id: PAD_ID,
                bos_token_id: START_ID,
                eos_token_id: END_ID,
                ..ClipTextConfig::default()
            },
            words,
            image_widths: vec![32, 64, 128],
            norm_num_groups: 8,
            logit_scale_init: (1.0f64 / 0.07).ln(),
            settings: StageSettings { batch_size: 64, lr: 5e-4, ..StageSettings::default() },
        }
    }
}

impl ContrastiveConfig {
    pub fn tokenizer(&self) -> Result<WordTokenizer> {
        WordTokenizer::new(&self.words, self.text.max_position_embeddings)
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(TrainError::Config(m));
        self.text.validate()?;
        self.settings.validate()?;
        let tokenizer = self.tokenizer()?;
        if tokenizer.vocab_size() != self.text.vocab_size {
            return fail(format!("the tokenizer has {} tokens, the text model {}", tokenizer.vocab_size(), self.text.vocab_size));
        }
        if self.text.eos_token_id != END_ID {
            return fail(format!("eos_token_id must be the tokenizer's end of text, {END_ID}"));
        }
        let levels = self.image_widths.len();
        if levels == 0 || !CANVAS_HEIGHT.is_multiple_of(1 << levels) || self.image_widths.iter().any(|&c| c == 0 || c % self.norm_num_groups.max(1) != 0) {
            return fail(format!("image_widths {:?}: 1 to 5 levels of channel counts divisible by {} groups", self.image_widths, self.norm_num_groups));
        }
        let scenes = training_scene_count(self.settings.held_out.len());
        if self.settings.batch_size < 2 || self.settings.batch_size > scenes {
            return fail(format!("batch_size {}: a batch holds 2 to {scenes} distinct scenes", self.settings.batch_size));
        }
        Ok(())
    }
}

/// The scenes training can show: 10 single garments, 10 doubles, the 90 ordered pairs less the
/// held-out ones.
fn training_scene_count(held_out: usize) -> usize {
    110 - held_out
}

/// `x / ‖x‖` along the last axis.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.div(&x.mul(x)?.sum(&[-1], true)?.add_scalar(1e-12)?.sqrt()?)?)
}

/// The symmetric InfoNCE loss of a square matrix of scores `logits [B, B]` whose diagonal holds
/// the matching pairs: the mean of the cross-entropies of its rows and of its columns against
/// the diagonal (CLIP's loss; each side is InfoNCE, van den Oord et al. 2018).
pub fn info_nce(logits: &Tensor) -> Result<Tensor> {
    let n = logits.shape()[0];
    if logits.shape() != [n, n] {
        return Err(TrainError::Config(format!("info_nce needs square [B, B] scores, got {:?}", logits.shape())));
    }
    let diagonal: Vec<usize> = (0..n).collect();
    let rows = logits.cross_entropy(&diagonal)?;
    let columns = logits.transpose(0, 1)?.cross_entropy(&diagonal)?;
    Ok(rows.add(&columns)?.mul_scalar(0.5)?)
}

/// The scores `[texts, images]` of projected features: `exp(s) · (t/‖t‖) · (v/‖v‖)ᵀ`, `s` the
/// log-temperature (a scalar).
pub fn scores(text: &Tensor, images: &Tensor, logit_scale: &Tensor) -> Result<Tensor> {
    Ok(l2_normalize(text)?.matmul(&l2_normalize(images)?.transpose(0, 1)?)?.mul(&logit_scale.exp()?)?)
}

/// CLIP's loss of a batch of matching features (row i of `text` describes row i of
/// `images`): [`info_nce`] of their [`scores`].
pub fn contrastive_loss(text: &Tensor, images: &Tensor, logit_scale: &Tensor) -> Result<Tensor> {
    info_nce(&scores(text, images, logit_scale)?)
}

/// The text model, the image CNN, their projections and the temperature (see the module doc).
pub struct ContrastiveModel {
    pub text_model: ClipTextModel,
    pub text_projection: Linear,
    pub vision_blocks: Vec<ClassifierBlock>,
    pub visual_projection: Linear,
    /// The log of the scores' scale, a scalar.
    pub logit_scale: Tensor,
}

impl Module for ContrastiveModel {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.text_model.visit(&join(prefix, "text_model"), f);
        self.text_projection.visit(&join(prefix, "text_projection"), f);
        visit_list(&self.vision_blocks, &join(prefix, "vision_model.blocks"), f);
        self.visual_projection.visit(&join(prefix, "visual_projection"), f);
        f(join(prefix, "logit_scale"), &self.logit_scale);
    }
}

impl ContrastiveModel {
    pub fn new(config: &ContrastiveConfig, rng: &mut Rng) -> Result<ContrastiveModel> {
        config.validate()?;
        let dtype = DType::F32;
        let text_model = ClipTextModel::new(&config.text, dtype, rng)?;
        let projection = config.text.projection_dim;
        let text_projection = Linear::without_bias(config.text.hidden_size, projection, dtype, rng)?;
        let mut vision_blocks = Vec::new();
        let mut c_in = 1;
        for &c in &config.image_widths {
            vision_blocks.push(ClassifierBlock::new(c_in, c, config.norm_num_groups, rng)?);
            c_in = c;
        }
        let shrink = 1 << config.image_widths.len();
        let features = c_in * (CANVAS_HEIGHT / shrink) * (CANVAS_WIDTH / shrink);
        let visual_projection = Linear::without_bias(features, projection, dtype, rng)?;
        let logit_scale = Tensor::scalar(config.logit_scale_init, dtype).variable();
        Ok(ContrastiveModel { text_model, text_projection, vision_blocks, visual_projection, logit_scale })
    }

    /// The features `[B, projection_dim]` of encoded captions: the pooled end-of-text state,
    /// projected.
    pub fn text_features(&self, encoded: &Encoded) -> Result<Tensor> {
        let mask = Tensor::from_f64(&encoded.mask_values(), &[encoded.ids.len(), encoded.ids[0].len()], DType::F32)?;
        let output = self.text_model.forward(&encoded.ids, Some(&mask))?;
        Ok(self.text_projection.forward(&output.pooler_output)?)
    }

    /// The features `[B, projection_dim]` of canvases `[B, 1, 32, 64]`: the CNN's last level
    /// flattened, projected.
    pub fn image_features(&self, canvases: &Tensor) -> Result<Tensor> {
        let mut h = canvases.clone();
        for block in &self.vision_blocks {
            h = block.forward(&h)?;
        }
        let batch = h.shape()[0];
        let flat = h.reshape(&[batch, h.numel() / batch])?;
        Ok(self.visual_projection.forward(&flat)?)
    }

    /// Keeps `exp(logit_scale)` ≤ 100, as CLIP clips it after each step.
    pub fn clamp_logit_scale(&self) -> Result<()> {
        if self.logit_scale.item()? > MAX_LOGIT_SCALE {
            self.logit_scale.assign(&Tensor::scalar(MAX_LOGIT_SCALE, self.logit_scale.dtype()))?;
        }
        Ok(())
    }
}

/// One round of retrieval: up to 10 of `queries` (scenes, drawn without repeats), completed
/// with other scenes drawn at random to [`RETRIEVAL_CANDIDATES`], every scene rendered once
/// with `data`'s garments, each query captioned afresh. Returns the canvases (the queries'
/// first), and for each query the index of the canvas its caption scores highest.
pub fn retrieval_round(
    model: &ContrastiveModel,
    tokenizer: &WordTokenizer,
    data: &ComposedData,
    queries: &[Scene],
    rng: &mut Rng,
) -> Result<(Tensor, Vec<usize>)> {
    let _guard = no_grad();
    let (mut chosen, mut taken) = (Vec::new(), BTreeSet::new());
    draw_distinct(queries, queries.len().min(10), &mut taken, &mut chosen, rng);
    let asked = chosen.len();
    draw_distinct(&Scene::all(), RETRIEVAL_CANDIDATES, &mut taken, &mut chosen, rng);
    let canvases = data.render_batch(&chosen, rng)?;
    let captions: Vec<String> = chosen[..asked].iter().map(|&scene| caption(scene, rng)).collect();
    let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
    let scored = scores(&model.text_features(&tokenizer.encode(&texts)?)?, &model.image_features(&canvases)?, &model.logit_scale)?;
    Ok((canvases, argmax_rows(&scored.to_vec_f64(), chosen.len())))
}

/// The share of captions whose own canvas scores highest among [`RETRIEVAL_CANDIDATES`]
/// canvases of distinct scenes, over `rounds` rounds of [`retrieval_round`]. Deterministic
/// given `seed`.
pub fn retrieval_accuracy(
    model: &ContrastiveModel,
    tokenizer: &WordTokenizer,
    data: &ComposedData,
    queries: &[Scene],
    rounds: usize,
    seed: u64,
) -> Result<f64> {
    let mut rng = Rng::new(seed);
    let (mut correct, mut total) = (0, 0);
    for _ in 0..rounds {
        let (_, best) = retrieval_round(model, tokenizer, data, queries, &mut rng)?;
        correct += best.iter().enumerate().filter(|&(i, &b)| i == b).count();
        total += best.len();
    }
    Ok(correct as f64 / total.max(1) as f64)
}

/// Appends scenes of `pool` not yet `taken`, drawn at random, until `chosen` holds `count`
/// (or the pool runs out).
fn draw_distinct(pool: &[Scene], count: usize, taken: &mut BTreeSet<Scene>, chosen: &mut Vec<Scene>, rng: &mut Rng) {
    let mut remaining: Vec<Scene> = pool.iter().filter(|s| !taken.contains(*s)).copied().collect();
    while chosen.len() < count && !remaining.is_empty() {
        let scene = remaining.swap_remove(((rng.uniform_values(1)[0] * remaining.len() as f64) as usize).min(remaining.len() - 1));
        taken.insert(scene);
        chosen.push(scene);
    }
}

/// The contrastive training stage (see the module doc).
pub struct ClipStage {
    pub config: ContrastiveConfig,
    pub model: ContrastiveModel,
    pub adam: Adam,
    pub tokenizer: WordTokenizer,
    /// Steps completed.
    pub step: u64,
    /// Scenes, garments and captions are drawn from `data`.
    pub data: Rng,
    train: ComposedData,
    test: ComposedData,
}

impl ClipStage {
    pub fn new(config: ContrastiveConfig) -> Result<ClipStage> {
        config.validate()?;
        let model = ContrastiveModel::new(&config, &mut Rng::new(config.settings.seed))?;
        let adam = config.settings.optimizer(&model)?;
        let tokenizer = config.tokenizer()?;
        let (train, test) = (config.settings.composed(Split::Train)?, config.settings.composed(Split::Test)?);
        Ok(ClipStage { data: TrainRngs::new(config.settings.seed).data, config, model, adam, tokenizer, step: 0, train, test })
    }

    /// Continues the run saved at `path`, to `steps` if given.
    pub fn resume(path: &Path, steps: Option<u64>) -> Result<ClipStage> {
        let file = TrainingFile::load(path, CLIP_STAGE_FORMAT)?;
        let mut config: ContrastiveConfig = file.config()?;
        config.settings.steps = steps.unwrap_or(config.settings.steps);
        let mut stage = ClipStage::new(config)?;
        file.restore(&stage.model, None, &mut stage.adam)?;
        (stage.step, stage.data) = (file.step, file.rng("data")?);
        Ok(stage)
    }

    /// The trained model of a stage checkpoint, with its config.
    pub fn load_model(path: &Path) -> Result<(ContrastiveConfig, ContrastiveModel)> {
        let file = TrainingFile::load(path, CLIP_STAGE_FORMAT)?;
        let config: ContrastiveConfig = file.config()?;
        let model = ContrastiveModel::new(&config, &mut Rng::new(0))?;
        file.load_into("model", &model)?;
        Ok((config, model))
    }

    /// `batch_size` distinct training scenes, their canvases and captions.
    fn batch(&mut self) -> Result<(Tensor, Vec<String>)> {
        let mut seen = BTreeSet::new();
        let mut scenes = Vec::with_capacity(self.config.settings.batch_size);
        while scenes.len() < self.config.settings.batch_size {
            let scene = self.train.training_scene(&mut self.data);
            if seen.insert(scene) {
                scenes.push(scene);
            }
        }
        let canvases = self.train.render_batch(&scenes, &mut self.data)?;
        let captions = scenes.iter().map(|&scene| caption(scene, &mut self.data)).collect();
        Ok((canvases, captions))
    }

    /// Retrieval accuracy among 100 on the held-out pairs and on the training pairs (10
    /// rounds each, test garments).
    pub fn retrieval(&self) -> Result<(f64, f64)> {
        let held_out: Vec<Scene> = self.config.settings.held_out.iter().map(|&(left, right)| Scene::Pair { left, right }).collect();
        let training: Vec<Scene> = Scene::all()
            .into_iter()
            .filter(|s| matches!(s, Scene::Pair { left, right } if left != right && !self.config.settings.held_out.contains(&(*left, *right))))
            .collect();
        let seed = self.config.settings.seed ^ (9 << 40);
        let on = |queries: &[Scene]| retrieval_accuracy(&self.model, &self.tokenizer, &self.test, queries, 10, seed);
        Ok((on(&held_out)?, on(&training)?))
    }
}

impl Stage for ClipStage {
    fn step(&self) -> u64 {
        self.step
    }
    fn settings(&self) -> &StageSettings {
        &self.config.settings
    }
    fn config_json(&self) -> String {
        serde_json::to_string_pretty(&self.config).expect("a config serializes")
    }

    fn train_step(&mut self) -> Result<StepStats> {
        let (canvases, captions) = self.batch()?;
        let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let text = self.model.text_features(&self.tokenizer.encode(&texts)?)?;
        let loss = contrastive_loss(&text, &self.model.image_features(&canvases)?, &self.model.logit_scale)?;
        let stats = self.config.settings.minimize(&mut self.adam, &loss, self.step)?;
        self.model.clamp_logit_scale()?;
        self.step += 1;
        Ok(stats)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let state = TrainingState {
            format: CLIP_STAGE_FORMAT,
            model: &self.model,
            ema: None,
            frozen: Vec::new(),
            adam: &self.adam,
            step: self.step,
            rngs: vec![("data", &self.data)],
            config_json: self.config_json(),
        };
        save_training_state(&state, path)
    }

    /// The retrieval accuracies and the temperature; the image shows, for held-out captions,
    /// the caption's own canvas (left) beside the one it retrieved among 100 (right).
    fn preview(&mut self, image: &Path) -> Result<Vec<(String, f64)>> {
        let (held_out, training) = self.retrieval()?;
        let queries: Vec<Scene> = self.config.settings.held_out.iter().map(|&(left, right)| Scene::Pair { left, right }).collect();
        if !queries.is_empty() {
            let mut rng = Rng::new(self.config.settings.seed ^ (10 << 40));
            let (canvases, best) = retrieval_round(&self.model, &self.tokenizer, &self.test, &queries, &mut rng)?;
            let pairs: Vec<usize> = best.iter().enumerate().flat_map(|(own, &retrieved)| [own, retrieved]).collect();
            write_grid_png(image, &canvases.index_select(0, &pairs)?, 4)?;
        }
        Ok(vec![
            ("retrieval_held_out".into(), held_out),
            ("retrieval_training".into(), training),
            ("logit_scale_exp".into(), self.model.logit_scale.item()?.exp()),
        ])
    }
}
