//! The loop every text-to-image training stage runs (the VAE, the contrastive text encoder,
//! latent diffusion): steps, one `loss.csv` row per step, atomic checkpoints and a loss curve
//! every `checkpoint_every` steps, the stage's preview (reconstructions, retrieval accuracy,
//! sample grids) every `sample_every` steps, and `metrics.csv` for what the previews measure.
//!
//! ```text
//! OUT/config.json                 the stage's config
//! OUT/loss.csv                    step,loss,grad_norm,lr (one row per step)
//! OUT/metrics.csv                 step,name,value (what the previews measure)
//! OUT/loss.png, lr.png, ...       plots of the logs, and OUT/report.html: redrawn at each
//!                                 checkpoint (see `report`)
//! OUT/samples/step_NNNNNNN.png    the stage's preview image
//! OUT/checkpoint.safetensors      the latest checkpoint (see `checkpoint`)
//! ```

use std::path::Path;

use ember_tensor::optim::{Adam, AdamConfig};
use ember_tensor::{Gradients, Tensor};
use ember_unet::Module;
use ember_unet::module::named_parameters;
use serde::{Deserialize, Serialize};

use crate::compose::{ComposedData, held_out_pairs};
use crate::data::{Dataset, Split};
use crate::error::{Result, TrainError, io_error};
use crate::run::{Observer, RunDir, RunLogs};
use crate::trainer::{LrDecay, StepStats, check_optimization, optimizer_step, scheduled_lr};

/// A training stage the loop can drive.
pub trait Stage {
    /// Steps completed.
    fn step(&self) -> u64;
    /// The run's optimization settings.
    fn settings(&self) -> &StageSettings;
    /// The step the run ends at.
    fn total_steps(&self) -> u64 {
        self.settings().steps
    }
    /// `(checkpoint_every, sample_every)`; 0 turns either off (the last step does both).
    fn intervals(&self) -> (u64, u64) {
        (self.settings().checkpoint_every, self.settings().sample_every)
    }
    /// The stage's config as JSON (written to `config.json`).
    fn config_json(&self) -> String;
    /// One optimizer step.
    fn train_step(&mut self) -> Result<StepStats>;
    /// Writes the whole state, for a resume.
    fn save(&self, path: &Path) -> Result<()>;
    /// Writes the stage's preview image to `image` (if it has one) and returns what it
    /// measured, as `(name, value)` pairs.
    fn preview(&mut self, image: &Path) -> Result<Vec<(String, f64)>>;
}

/// Runs `stage` to its last step, writing the run folder (see the module doc); `title`
/// names it in `report.html`. A resumed
/// stage keeps the rows of `loss.csv` and `metrics.csv` up to its step.
pub fn run_stage(stage: &mut dyn Stage, title: &str, dir: &RunDir, observer: &mut dyn Observer) -> Result<()> {
    std::fs::create_dir_all(dir.root.join("samples")).map_err(io_error(&dir.root))?;
    ember_tensor::io::write_atomically(&dir.config(), stage.config_json().as_bytes())?;
    let mut logs = RunLogs::open(dir, stage.step())?;
    let (checkpoint_every, sample_every) = stage.intervals();
    observer.started(stage.step(), stage.total_steps());
    while stage.step() < stage.total_steps() {
        let stats = stage.train_step()?;
        logs.step(&stats)?;
        observer.step(&stats);
        let last = stats.step == stage.total_steps();
        if last || (sample_every > 0 && stats.step.is_multiple_of(sample_every)) {
            let image = dir.samples(stats.step);
            let measured = stage.preview(&image)?;
            let mut message: Vec<String> = measured.iter().map(|(name, value)| format!("{name} {value:.4}")).collect();
            for (name, value) in &measured {
                logs.metric(stats.step, name, *value)?;
            }
            if image.exists() {
                message.push(format!("preview: {}", image.display()));
            }
            observer.note(&format!("step {}: {}", stats.step, message.join(", ")));
        }
        if last || (checkpoint_every > 0 && stats.step.is_multiple_of(checkpoint_every)) {
            // the previews may have measured part of the config (the VAE's scaling factor)
            let config_json = stage.config_json();
            logs.checkpoint(dir, || stage.save(&dir.checkpoint()), title, &config_json, stage.total_steps())?;
            ember_tensor::io::write_atomically(&dir.config(), config_json.as_bytes())?;
        }
        if last || [sample_every, checkpoint_every].iter().any(|&k| k > 0 && stats.step.is_multiple_of(k)) {
            // the preview's buffers and the checkpoint's copies are not training's: free them
            ember_tensor::cpu::pool::release_cached();
        }
    }
    Ok(())
}

/// Refuses to start a new stage in a folder that holds a run.
pub fn check_fresh(dir: &RunDir) -> Result<()> {
    if dir.checkpoint().exists() {
        return Err(TrainError::Config(format!("{} already holds a run; pass --resume to continue it, or choose another --out", dir.root.display())));
    }
    Ok(())
}

/// The optimization settings every stage has (flattened into its config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageSettings {
    /// Garments of this dataset (a labelled one-channel 32×32 dataset of 10 classes:
    /// `fashion-mnist[:DIR]`) composed on canvases (see [`crate::compose`]).
    pub data: String,
    /// Ordered pairs (left class, right class) never shown in training, for measuring
    /// generalization; every stage of one pipeline holds out the same pairs.
    pub held_out: Vec<(usize, usize)>,
    pub batch_size: usize,
    pub steps: u64,
    /// Peak learning rate (Adam / AdamW).
    pub lr: f64,
    pub warmup_steps: u64,
    pub lr_decay: LrDecay,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; 0 turns clipping off.
    pub grad_clip: f64,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub sample_every: u64,
}

/// The number of ordered pairs of different garments held out by default (of 90).
pub const HELD_OUT_PAIRS: usize = 10;

impl Default for StageSettings {
    fn default() -> Self {
        StageSettings {
            data: "fashion-mnist".into(),
            held_out: held_out_pairs(HELD_OUT_PAIRS, 0),
            batch_size: 32,
            steps: 2000,
            lr: 1e-3,
            warmup_steps: 100,
            lr_decay: LrDecay::Cosine,
            weight_decay: 0.0,
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: 500,
            sample_every: 500,
        }
    }
}

impl StageSettings {
    pub fn validate(&self) -> Result<()> {
        check_optimization(self.batch_size, self.lr, self.weight_decay, self.grad_clip)
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        scheduled_lr(self.lr, self.warmup_steps, self.lr_decay, step, self.steps)
    }

    /// The composed canvases of `split`'s garments, with this run's held-out pairs.
    pub fn composed(&self, split: Split) -> Result<ComposedData> {
        ComposedData::new(Dataset::from_name(&self.data, split, 1)?, &self.held_out)
    }

    /// Adam (AdamW with a weight decay) over `model`'s parameters.
    pub fn optimizer(&self, model: &dyn Module) -> Result<Adam> {
        let params = named_parameters(model).into_iter().map(|(_, p)| p).collect();
        Ok(Adam::new(params, AdamConfig::adamw(self.lr, self.weight_decay))?)
    }

    /// One optimizer step (0-based `step`) on `loss`: its gradients, then these settings'
    /// clipping and learning rate ([`optimizer_step`], which stops on a non-finite loss or
    /// gradient before anything is updated).
    pub fn minimize(&self, adam: &mut Adam, loss: &Tensor, step: u64) -> Result<StepStats> {
        let value = loss.item()?;
        let grads = if value.is_finite() { loss.backward()? } else { Gradients::default() };
        optimizer_step(adam, &grads, value, step, self.grad_clip, self.lr_at(step))
    }
}
