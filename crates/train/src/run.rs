//! A training run on disk: the folder layout and the loop that writes it.
//!
//! ```text
//! OUT/config.json                 the TrainConfig
//! OUT/loss.csv                    step,loss,grad_norm,lr (one row per step)
//! OUT/loss.png                    the loss curve (raw and smoothed), redrawn at each checkpoint
//! OUT/samples/step_NNNNNNN.png    DDIM samples from the EMA weights every `sample_every` steps
//! OUT/checkpoint.safetensors      the latest checkpoint (atomic; see `checkpoint`)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use ember_tensor::rng::Rng;

use crate::checkpoint::{Checkpoint, save_checkpoint};
use crate::data::{Dataset, Split};
use crate::error::{Result, io_error};
use crate::images::{write_grid_png, write_loss_curve_png};
use crate::sampling::{ClassGuidance, Sampler, sample_images, sample_images_guided};

/// The guidance scale of a class-conditional run's preview grids (the classes in turn).
pub const PREVIEW_GUIDANCE: f64 = 3.0;
use crate::trainer::{StepStats, TrainConfig, Trainer};

/// What the loop reports, for progress bars and logs.
pub trait Observer {
    fn started(&mut self, _first_step: u64, _total_steps: u64) {}
    fn step(&mut self, _stats: &StepStats) {}
    fn note(&mut self, _message: &str) {}
}

/// Paths inside a run folder.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint.safetensors")
    }
    pub fn loss_csv(&self) -> PathBuf {
        self.root.join("loss.csv")
    }
    pub fn loss_png(&self) -> PathBuf {
        self.root.join("loss.png")
    }
    pub fn samples(&self, step: u64) -> PathBuf {
        self.root.join("samples").join(format!("step_{step:07}.png"))
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
}

/// Reads `loss.csv` rows `(step, loss)`, keeping only steps ≤ `up_to`.
fn read_losses(path: &Path, up_to: u64) -> Vec<(u64, f64, String)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let step: u64 = fields.next()?.parse().ok()?;
            let loss: f64 = fields.next()?.parse().ok()?;
            (step <= up_to).then(|| (step, loss, line.to_string()))
        })
        .collect()
}

/// Trains from scratch (`resume` None) or from a checkpoint until `config.steps` on `device`,
/// writing the run folder. The loss CSV is rewritten on resume to drop rows logged after the checkpoint.
pub fn train(config: Option<TrainConfig>, resume: Option<&Path>, dir: &RunDir, device: ember_tensor::Device, observer: &mut dyn Observer) -> Result<Trainer> {
    std::fs::create_dir_all(dir.root.join("samples")).map_err(io_error(&dir.root))?;
    let mut trainer = match resume {
        Some(path) => {
            let checkpoint = Checkpoint::load(path)?;
            let mut config_now = checkpoint.config.clone();
            if let Some(c) = &config {
                config_now.steps = c.steps; // a resumed run may be extended
            }
            let dataset = Dataset::from_name(&config_now.data, Split::Train, config_now.unet.in_channels)?;
            let mut trainer = checkpoint.into_trainer(dataset)?;
            trainer.config.steps = config_now.steps;
            observer.note(&format!("resumed from {} at step {}", path.display(), trainer.step));
            trainer
        }
        None => {
            if dir.checkpoint().exists() {
                return Err(crate::TrainError::Config(format!(
                    "{} already holds a run; pass --resume to continue it, or choose another --out",
                    dir.root.display()
                )));
            }
            let config = config.unwrap_or_default();
            let dataset = Dataset::from_name(&config.data, Split::Train, config.unet.in_channels)?;
            Trainer::new(config, dataset)?
        }
    };
    trainer.to_device(device)?;
    let config_json = serde_json::to_string_pretty(&trainer.config).unwrap();
    ember_tensor::io::write_atomically(&dir.config(), config_json.as_bytes())?;

    let kept = read_losses(&dir.loss_csv(), trainer.step);
    let mut losses: Vec<(u64, f64)> = kept.iter().map(|(s, l, _)| (*s, *l)).collect();
    let mut csv_text = String::from("step,loss,grad_norm,lr\n");
    for (_, _, line) in &kept {
        csv_text.push_str(line);
        csv_text.push('\n');
    }
    std::fs::write(dir.loss_csv(), csv_text).map_err(io_error(&dir.loss_csv()))?;
    let mut csv = std::fs::OpenOptions::new().append(true).open(dir.loss_csv()).map_err(io_error(&dir.loss_csv()))?;

    observer.started(trainer.step, trainer.config.steps);
    while trainer.step < trainer.config.steps {
        let stats = trainer.train_step()?;
        writeln!(csv, "{},{},{},{}", stats.step, stats.loss, stats.grad_norm, stats.lr).map_err(io_error(&dir.loss_csv()))?;
        losses.push((stats.step, stats.loss));
        observer.step(&stats);
        let last = stats.step == trainer.config.steps;
        let c = &trainer.config;
        if last || (c.checkpoint_every > 0 && stats.step % c.checkpoint_every == 0) {
            save_checkpoint(&trainer, &dir.checkpoint())?;
            write_loss_curve_png(dir.loss_png(), &losses, 800, 400)?;
        }
        if last || (c.sample_every > 0 && stats.step % c.sample_every == 0) {
            let sampler = Sampler::Ddim { steps: c.sample_steps, eta: 0.0, spacing: ember_diffusion::TimestepSpacing::Leading };
            let images = if c.is_class_conditional() {
                // the classes in turn, under classifier-free guidance
                let classes = (0..c.sample_count).map(|i| i % c.class_names.len()).collect();
                let guidance = ClassGuidance { classes, null_class: c.null_class(), scale: PREVIEW_GUIDANCE };
                sample_images_guided(&trainer.ema, &trainer.schedule, &guidance, sampler, true, &mut Rng::new(c.seed), &mut |_, _| {})?
            } else {
                sample_images(&trainer.ema, &trainer.schedule, c.sample_count, sampler, true, &mut Rng::new(c.seed), &mut |_, _| {})?
            };
            let path = dir.samples(stats.step);
            write_grid_png(&path, &images, (c.sample_count as f64).sqrt().ceil() as usize)?;
            observer.note(&format!("samples: {}", path.display()));
        }
    }
    Ok(trainer)
}
