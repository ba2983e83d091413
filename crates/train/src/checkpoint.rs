//! Checkpoints: one safetensors file with the model, the EMA weights, Adam's state, the step,
//! the positions of the random streams and the run's config, written atomically (temporary
//! file + rename), so a crash leaves the previous checkpoint intact.
//!
//! Tensor names: `model.<param>`, `ema.<param>`, `adam.exp_avg.<param>`,
//! `adam.exp_avg_sq.<param>` (param names as in diffusers). Metadata: `format`, `step`,
//! `adam_steps` (JSON list), `rng.<stream>` ("seed offset"), `train_config` (JSON).

use std::collections::BTreeMap;
use std::path::Path;

use ember_tensor::Tensor;
use ember_tensor::io::{load_safetensors, save_safetensors};
use ember_tensor::optim::AdamState;
use ember_tensor::rng::Rng;
use ember_unet::module::{load_weights, named_parameters};
use ember_unet::{Module, UNet};

use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::trainer::{TrainConfig, TrainRngs, Trainer};

pub const FORMAT: &str = "ember-checkpoint-1";

fn rng_text(rng: &Rng) -> String {
    format!("{} {}", rng.seed, rng.offset)
}

/// Writes the trainer's whole state to `path` (atomically).
pub fn save_checkpoint(trainer: &Trainer, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(crate::error::io_error(dir))?;
    }
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (prefix, module) in [("model", &trainer.model as &dyn Module), ("ema", &trainer.ema)] {
        tensors.extend(named_parameters(module).into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)));
    }
    let names: Vec<String> = named_parameters(&trainer.model).into_iter().map(|(n, _)| n).collect();
    let state = trainer.adam.state_snapshot()?;
    for (name, s) in names.iter().zip(&state) {
        tensors.push((format!("adam.exp_avg.{name}"), s.exp_avg.clone()));
        tensors.push((format!("adam.exp_avg_sq.{name}"), s.exp_avg_sq.clone()));
    }
    let adam_steps: Vec<u64> = state.iter().map(|s| s.step).collect();
    let metadata = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), trainer.step.to_string()),
        ("adam_steps".to_string(), serde_json::to_string(&adam_steps).unwrap()),
        ("rng.data".to_string(), rng_text(&trainer.rngs.data)),
        ("rng.noise".to_string(), rng_text(&trainer.rngs.noise)),
        ("rng.dropout".to_string(), rng_text(&trainer.rngs.dropout)),
        ("train_config".to_string(), serde_json::to_string_pretty(&trainer.config).unwrap()),
    ]);
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(path, &refs, &metadata)?;
    Ok(())
}

/// A loaded checkpoint, before it becomes a trainer or a sampling model.
pub struct Checkpoint {
    pub path: String,
    pub config: TrainConfig,
    pub step: u64,
    tensors: BTreeMap<String, Tensor>,
    metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let file = load_safetensors(path)?;
        let fail = |msg: String| TrainError::Checkpoint { path: path.display().to_string(), msg };
        let get = |key: &str| file.metadata.get(key).ok_or_else(|| fail(format!("no {key:?} in the metadata: not an ember checkpoint")));
        if get("format")? != FORMAT {
            return Err(fail(format!("format {:?}, expected {FORMAT:?}", get("format")?)));
        }
        let config: TrainConfig = serde_json::from_str(get("train_config")?).map_err(|e| fail(format!("bad train_config: {e}")))?;
        let step = get("step")?.parse().map_err(|e| fail(format!("bad step: {e}")))?;
        Ok(Checkpoint { path: path.display().to_string(), config, step, tensors: file.tensors, metadata: file.metadata })
    }

    fn fail(&self, msg: String) -> TrainError {
        TrainError::Checkpoint { path: self.path.clone(), msg }
    }

    /// The tensors named `prefix.*`, with the prefix removed.
    fn section(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let dotted = format!("{prefix}.");
        self.tensors.iter().filter_map(|(n, t)| n.strip_prefix(&dotted).map(|s| (s.to_string(), t.clone()))).collect()
    }

    /// A model with the trained (`ema` false) or averaged (`ema` true) weights.
    pub fn model(&self, ema: bool) -> Result<UNet> {
        let model = UNet::new(&self.config.unet, ember_tensor::DType::F32, &mut Rng::new(0))?;
        load_weights(&model, &self.section(if ema { "ema" } else { "model" }))?;
        Ok(model)
    }

    /// Writes a sampling-only copy: the EMA weights in `dtype` (f16 makes the tiny model
    /// 3 MB) with the config and step; `ember sample` reads it like a full checkpoint, and
    /// `--resume` refuses it.
    pub fn export_ema(&self, path: &Path, dtype: ember_tensor::DType) -> Result<()> {
        let ema = self.section("ema");
        if ema.is_empty() {
            return Err(self.fail("no EMA weights to export".into()));
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

    fn rng(&self, stream: &str) -> Result<Rng> {
        let text = self.metadata.get(&format!("rng.{stream}")).ok_or_else(|| self.fail(format!("no rng.{stream}")))?;
        let parts: Vec<u64> =
            text.split(' ').map(|p| p.parse()).collect::<std::result::Result<_, _>>().map_err(|_| self.fail(format!("bad rng.{stream}: {text:?}")))?;
        match parts[..] {
            [seed, offset] => Ok(Rng { seed, offset }),
            _ => Err(self.fail(format!("bad rng.{stream}: {text:?}"))),
        }
    }

    /// A trainer that continues this run exactly where it stopped.
    pub fn into_trainer(self, dataset: Dataset) -> Result<Trainer> {
        if self.metadata.contains_key("contents") {
            return Err(self.fail("a sampling-only export (ember export) cannot be resumed; use the run's checkpoint".into()));
        }
        let mut trainer = Trainer::new(self.config.clone(), dataset)?;
        load_weights(&trainer.model, &self.section("model"))?;
        load_weights(&trainer.ema, &self.section("ema"))?;
        let adam_steps: Vec<u64> =
            serde_json::from_str(self.metadata.get("adam_steps").map(String::as_str).unwrap_or("")).map_err(|e| self.fail(format!("bad adam_steps: {e}")))?;
        let names: Vec<String> = named_parameters(&trainer.model).into_iter().map(|(n, _)| n).collect();
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
        trainer.adam.load_state(state)?;
        trainer.step = self.step;
        trainer.rngs = TrainRngs { data: self.rng("data")?, noise: self.rng("noise")?, dropout: self.rng("dropout")? };
        Ok(trainer)
    }
}
