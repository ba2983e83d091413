//! Checkpoints: one safetensors file with a run's trained model, its EMA weights, Adam's state,
//! the step, the positions of the random streams and the run's config, written atomically
//! (temporary file + rename), so a crash leaves the previous checkpoint intact.
//!
//! Every training stage (the DDPM trainer here, and the text-to-image stages: the VAE, the
//! contrastive text encoder, latent diffusion) writes the same layout through
//! [`save_training_state`] and reads it back through [`TrainingFile`]:
//!
//! Tensor names: `model.<param>`, `ema.<param>` (if the stage keeps an EMA),
//! `adam.exp_avg.<param>`, `adam.exp_avg_sq.<param>` (param names as in diffusers /
//! transformers), and `<name>.<param>` for modules a stage saves beside the trained one
//! without training them (the frozen text encoder and VAE of latent diffusion). Metadata:
//! `format`, `step`, `adam_steps` (JSON list), `rng.<stream>` ("seed offset"), `train_config`
//! (JSON).

use std::collections::BTreeMap;
use std::path::Path;

use ember_tensor::Tensor;
use ember_tensor::io::{load_safetensors, save_safetensors};
use ember_tensor::optim::{Adam, AdamState};
use ember_tensor::rng::Rng;
use ember_unet::module::{load_weights, named_parameters};
use ember_unet::{Module, UNet};
use serde::de::DeserializeOwned;

use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::trainer::{TrainConfig, TrainRngs, Trainer};

/// The format of the DDPM trainer's checkpoints.
pub const FORMAT: &str = "ember-checkpoint-1";

fn rng_text(rng: &Rng) -> String {
    format!("{} {}", rng.seed, rng.offset)
}

/// What a training stage saves (see the module doc for the file's layout).
pub struct TrainingState<'a> {
    /// The file's `format` metadata, naming the stage (checked on load).
    pub format: &'a str,
    /// The trained module (`model.*`); Adam's parameters are its parameters, in order.
    pub model: &'a dyn Module,
    /// Its exponential moving average (`ema.*`), if the stage keeps one.
    pub ema: Option<&'a dyn Module>,
    /// Modules saved beside the model but not trained, by prefix.
    pub frozen: Vec<(&'a str, &'a dyn Module)>,
    pub adam: &'a Adam,
    /// Steps completed.
    pub step: u64,
    /// The random streams, by name.
    pub rngs: Vec<(&'a str, &'a Rng)>,
    /// The stage's config as JSON (`train_config`).
    pub config_json: String,
}

/// Writes a stage's whole state to `path` (atomically).
pub fn save_training_state(state: &TrainingState, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(crate::error::io_error(dir))?;
    }
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let saved = [("model", Some(state.model)), ("ema", state.ema)].into_iter().filter_map(|(prefix, m)| m.map(|m| (prefix, m)));
    for (prefix, module) in saved.chain(state.frozen.iter().copied()) {
        tensors.extend(named_parameters(module).into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)));
    }
    let names: Vec<String> = named_parameters(state.model).into_iter().map(|(n, _)| n).collect();
    let adam = state.adam.state_snapshot()?;
    for (name, s) in names.iter().zip(&adam) {
        tensors.push((format!("adam.exp_avg.{name}"), s.exp_avg.clone()));
        tensors.push((format!("adam.exp_avg_sq.{name}"), s.exp_avg_sq.clone()));
    }
    let adam_steps: Vec<u64> = adam.iter().map(|s| s.step).collect();
    let mut metadata = BTreeMap::from([
        ("format".to_string(), state.format.to_string()),
        ("step".to_string(), state.step.to_string()),
        ("adam_steps".to_string(), serde_json::to_string(&adam_steps).unwrap()),
        ("train_config".to_string(), state.config_json.clone()),
    ]);
    for (name, rng) in &state.rngs {
        metadata.insert(format!("rng.{name}"), rng_text(rng));
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(path, &refs, &metadata)?;
    Ok(())
}

/// A training-state file as loaded, before a stage takes its parts back.
pub struct TrainingFile {
    pub path: String,
    pub step: u64,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TrainingFile {
    /// Loads `path`, checking that its `format` is `format`.
    pub fn load(path: &Path, format: &str) -> Result<TrainingFile> {
        let file = load_safetensors(path)?;
        let fail = |msg: String| TrainError::Checkpoint { path: path.display().to_string(), msg };
        let found = file.metadata.get("format").ok_or_else(|| fail("no \"format\" in the metadata: not an ember checkpoint".into()))?;
        if found != format {
            return Err(fail(format!("format {found:?}, expected {format:?}")));
        }
        let step = file.metadata.get("step").ok_or_else(|| fail("no \"step\" in the metadata".into()))?;
        let step = step.parse().map_err(|e| fail(format!("bad step: {e}")))?;
        Ok(TrainingFile { path: path.display().to_string(), step, tensors: file.tensors, metadata: file.metadata })
    }

    pub fn fail(&self, msg: String) -> TrainError {
        TrainError::Checkpoint { path: self.path.clone(), msg }
    }

    /// The stage's config (`train_config`).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        let text = self.metadata.get("train_config").ok_or_else(|| self.fail("no \"train_config\" in the metadata".into()))?;
        serde_json::from_str(text).map_err(|e| self.fail(format!("bad train_config: {e}")))
    }

    /// The tensors named `prefix.*`, with the prefix removed.
    pub fn section(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let dotted = format!("{prefix}.");
        self.tensors.iter().filter_map(|(n, t)| n.strip_prefix(&dotted).map(|s| (s.to_string(), t.clone()))).collect()
    }

    /// Loads the tensors `prefix.*` into `module` (every parameter must be there).
    pub fn load_into(&self, prefix: &str, module: &dyn Module) -> Result<()> {
        load_weights(module, &self.section(prefix)).map_err(|e| self.fail(format!("{prefix}: {e}")))
    }

    /// The position of the random stream `name`.
    pub fn rng(&self, name: &str) -> Result<Rng> {
        let text = self.metadata.get(&format!("rng.{name}")).ok_or_else(|| self.fail(format!("no rng.{name}")))?;
        let parts: Vec<u64> =
            text.split(' ').map(|p| p.parse()).collect::<std::result::Result<_, _>>().map_err(|_| self.fail(format!("bad rng.{name}: {text:?}")))?;
        match parts[..] {
            [seed, offset] => Ok(Rng { seed, offset }),
            _ => Err(self.fail(format!("bad rng.{name}: {text:?}"))),
        }
    }

    /// Whether this is a sampling-only export (no optimizer state to resume from).
    pub fn is_export(&self) -> bool {
        self.metadata.contains_key("contents")
    }

    /// Restores a stage's model, its EMA (if it keeps one) and Adam's state, for a resume.
    pub fn restore(&self, model: &dyn Module, ema: Option<&dyn Module>, adam: &mut Adam) -> Result<()> {
        if self.is_export() {
            return Err(self.fail("a sampling-only export cannot be resumed; use the run's checkpoint".into()));
        }
        self.load_into("model", model)?;
        if let Some(ema) = ema {
            self.load_into("ema", ema)?;
        }
        let adam_steps: Vec<u64> =
            serde_json::from_str(self.metadata.get("adam_steps").map(String::as_str).unwrap_or("")).map_err(|e| self.fail(format!("bad adam_steps: {e}")))?;
        let names: Vec<String> = named_parameters(model).into_iter().map(|(n, _)| n).collect();
        if adam_steps.len() != names.len() {
            return Err(self.fail(format!("{} Adam step counts for {} parameters", adam_steps.len(), names.len())));
        }
        let state = names
            .iter()
            .zip(adam_steps)
            .map(|(name, step)| {
                let get =
                    |kind: &str| self.tensors.get(&format!("adam.{kind}.{name}")).cloned().ok_or_else(|| self.fail(format!("missing adam.{kind}.{name}")));
                Ok(AdamState { step, exp_avg: get("exp_avg")?, exp_avg_sq: get("exp_avg_sq")? })
            })
            .collect::<Result<Vec<_>>>()?;
        adam.load_state(state)?;
        Ok(())
    }
}

/// Writes the DDPM trainer's whole state to `path` (atomically).
pub fn save_checkpoint(trainer: &Trainer, path: &Path) -> Result<()> {
    let r = &trainer.rngs;
    let state = TrainingState {
        format: FORMAT,
        model: &trainer.model,
        ema: Some(&trainer.ema),
        frozen: Vec::new(),
        adam: &trainer.adam,
        step: trainer.step,
        rngs: vec![("data", &r.data), ("noise", &r.noise), ("dropout", &r.dropout)],
        config_json: serde_json::to_string_pretty(&trainer.config).unwrap(),
    };
    save_training_state(&state, path)
}

/// A loaded DDPM checkpoint, before it becomes a trainer or a sampling model.
pub struct Checkpoint {
    pub path: String,
    pub config: TrainConfig,
    pub step: u64,
    file: TrainingFile,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let file = TrainingFile::load(path, FORMAT)?;
        Ok(Checkpoint { path: file.path.clone(), config: file.config()?, step: file.step, file })
    }

    /// A model with the trained (`ema` false) or averaged (`ema` true) weights.
    pub fn model(&self, ema: bool) -> Result<UNet> {
        let model = UNet::new(&self.config.unet, ember_tensor::DType::F32, &mut Rng::new(0))?;
        load_weights(&model, &self.file.section(if ema { "ema" } else { "model" }))?;
        Ok(model)
    }

    /// Writes a sampling-only copy: the EMA weights in `dtype` (f16 makes the tiny model
    /// 3 MB) with the config and step; `ember sample` reads it like a full checkpoint, and
    /// `--resume` refuses it.
    pub fn export_ema(&self, path: &Path, dtype: ember_tensor::DType) -> Result<()> {
        let ema = self.file.section("ema");
        if ema.is_empty() {
            return Err(self.file.fail("no EMA weights to export".into()));
        }
        let converted: Vec<(String, Tensor)> = ema.iter().map(|(n, t)| Ok((format!("ema.{n}"), t.to_dtype(dtype)?))).collect::<Result<_>>()?;
        let refs: Vec<(&str, &Tensor)> = converted.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let metadata = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("step".to_string(), self.step.to_string()),
            ("train_config".to_string(), serde_json::to_string_pretty(&self.config).unwrap()),
            ("contents".to_string(), "EMA weights only (for sampling)".to_string()),
        ]);
        save_safetensors(path, &refs, &metadata)?;
        Ok(())
    }

    /// A trainer that continues this run exactly where it stopped.
    pub fn into_trainer(self, dataset: Dataset) -> Result<Trainer> {
        if self.file.is_export() {
            return Err(self.file.fail("a sampling-only export (ember export) cannot be resumed; use the run's checkpoint".into()));
        }
        let mut trainer = Trainer::new(self.config.clone(), dataset)?;
        self.file.restore(&trainer.model, Some(&trainer.ema), &mut trainer.adam)?;
        trainer.step = self.step;
        let f = &self.file;
        trainer.rngs = TrainRngs { data: f.rng("data")?, noise: f.rng("noise")?, dropout: f.rng("dropout")? };
        Ok(trainer)
    }
}
