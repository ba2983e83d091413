//! A training run on disk: the folder layout and the loop that writes it.
//!
//! ```text
//! OUT/config.json                 the TrainConfig
//! OUT/loss.csv                    step,loss,grad_norm,lr (one row per step)
//! OUT/metrics.csv                 step,name,value: the FID every `eval_every` steps (if set)
//! OUT/loss.png, lr.png, ...       plots of the logs, and OUT/report.html: redrawn at each
//!                                 checkpoint (see `report`)
//! OUT/samples/step_NNNNNNN.png    DDIM samples from the EMA weights every `sample_every` steps
//! OUT/checkpoint.safetensors      the latest checkpoint (atomic; see `checkpoint`)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use ember_tensor::rng::Rng;

use crate::checkpoint::{Checkpoint, save_checkpoint};
use crate::data::{Dataset, Split};
use crate::error::{Result, io_error};
use crate::images::write_grid_png;
use crate::metrics::FidProbe;
use crate::report::RunRecord;
use crate::sampling::{ClassGuidance, Sampler, sample_for_eval, sample_images, sample_images_guided};

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
    /// `step,name,value` rows: what the run measures as it goes (FID, PSNR, retrieval).
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// The page showing the run (see [`crate::report`]).
    pub fn report_html(&self) -> PathBuf {
        self.root.join("report.html")
    }
}

/// The header of `loss.csv`.
pub const LOSS_CSV_HEADER: &str = "step,loss,grad_norm,lr";
/// The header of `metrics.csv` (what a run measures as it goes: FID, PSNR, retrieval).
pub const METRICS_CSV_HEADER: &str = "step,name,value";

/// A CSV log of a run folder (`loss.csv`, `metrics.csv`): one row per line, each appended by
/// one `write_all` of the whole line, so that a crash can at worst cut the last row short.
pub(crate) struct CsvLog {
    file: std::fs::File,
    path: PathBuf,
}

impl CsvLog {
    /// Opens the log at `path` for appending, keeping only its whole rows up to step `up_to`
    /// (those a run resumed at `up_to` has logged), rewritten atomically under `header` so
    /// that a crash here cannot lose them. Returns the kept rows.
    pub(crate) fn reopen(path: &Path, header: &str, up_to: u64) -> Result<(CsvLog, Vec<String>)> {
        let rows = whole_rows(path, header.split(',').count(), up_to);
        let mut text = format!("{header}\n");
        for row in &rows {
            text.push_str(row);
            text.push('\n');
        }
        ember_tensor::io::write_atomically(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(io_error(path))?;
        Ok((CsvLog { file, path: path.to_path_buf() }, rows))
    }

    /// Appends one row (one write of the whole line).
    pub(crate) fn append(&mut self, row: &str) -> Result<()> {
        self.file.write_all(format!("{row}\n").as_bytes()).map_err(io_error(&self.path))
    }

    /// Puts the rows on disk (before a checkpoint says they were logged).
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io_error(&self.path))
    }
}

/// The rows of a CSV log that are whole (the last line counts only with its newline: a row
/// cut short by a crash could still parse if it were cut inside a number), have `fields`
/// fields, and start with a step ≤ `up_to`. The header and anything else are dropped.
fn whole_rows(path: &Path, fields: usize, up_to: u64) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let whole = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    whole
        .lines()
        .filter(|line| line.split(',').count() == fields && line.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|step| step <= up_to))
        .map(str::to_string)
        .collect()
}

/// The logs of a run folder: `loss.csv` and `metrics.csv` on disk, and the record behind
/// its plots and `report.html`.
pub(crate) struct RunLogs {
    loss: CsvLog,
    metrics: CsvLog,
    pub(crate) record: RunRecord,
}

impl RunLogs {
    /// Opens the logs of `dir` for a run at `step` (0, or the step it resumes at), keeping
    /// the rows logged up to that step.
    pub(crate) fn open(dir: &RunDir, step: u64) -> Result<RunLogs> {
        let (loss, loss_rows) = CsvLog::reopen(&dir.loss_csv(), LOSS_CSV_HEADER, step)?;
        let (metrics, metric_rows) = CsvLog::reopen(&dir.metrics_csv(), METRICS_CSV_HEADER, step)?;
        Ok(RunLogs { loss, metrics, record: RunRecord::new(&loss_rows, &metric_rows, step) })
    }

    /// Logs one step.
    pub(crate) fn step(&mut self, stats: &StepStats) -> Result<()> {
        self.loss.append(&format!("{},{},{},{}", stats.step, stats.loss, stats.grad_norm, stats.lr))?;
        self.record.steps.push(*stats);
        Ok(())
    }

    /// Logs one measurement.
    pub(crate) fn metric(&mut self, step: u64, name: &str, value: f64) -> Result<()> {
        self.metrics.append(&format!("{step},{name},{value}"))?;
        self.record.metrics.push((step, name.to_string(), value));
        Ok(())
    }

    /// Puts both logs on disk and saves the checkpoint by `save`, then redraws the plots and
    /// the report (so the checkpoint never claims rows the logs lack).
    pub(crate) fn checkpoint(&self, dir: &RunDir, save: impl FnOnce() -> Result<()>, title: &str, config_json: &str, total_steps: u64) -> Result<()> {
        self.loss.sync()?;
        self.metrics.sync()?;
        save()?;
        Ok(self.record.write(&dir.root, title, config_json, total_steps)?)
    }
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

    let mut logs = RunLogs::open(dir, trainer.step)?;
    let c = &trainer.config;
    let probe = if c.eval_every > 0 { Some(FidProbe::new(Path::new(&c.eval_classifier), &c.data, c.unet.in_channels, c.eval_samples)?) } else { None };

    observer.started(trainer.step, trainer.config.steps);
    ember_tensor::profile::reset_mark();
    while trainer.step < trainer.config.steps {
        let stats = trainer.train_step()?;
        logs.step(&stats)?;
        observer.step(&stats);
        let last = stats.step == trainer.config.steps;
        let c = &trainer.config;
        if let Some(probe) = probe.as_ref().filter(|_| last || stats.step.is_multiple_of(c.eval_every)) {
            let classes = c.is_class_conditional().then(|| (c.class_names.len(), c.null_class(), PREVIEW_GUIDANCE));
            let samples = sample_for_eval(&trainer.ema, &trainer.schedule, probe.n, classes, c.sample_steps, 64, &mut Rng::new(c.seed), &mut |_| {})?;
            let fid = probe.fid(&samples)?;
            logs.metric(stats.step, "fid", fid)?;
            observer.note(&format!("step {}: FID {fid:.4} ({} EMA samples vs {} test images, classifier features)", stats.step, probe.n, probe.n));
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
        // after the previews, so that the report shows this step's grid
        if last || (c.checkpoint_every > 0 && stats.step % c.checkpoint_every == 0) {
            logs.checkpoint(dir, || save_checkpoint(&trainer, &dir.checkpoint()), "DDPM", &config_json, c.steps)?;
        }
        if loop_work(c, stats.step) {
            // the buffers of the FID probe, the preview and the checkpoint's copies are not
            // training's: free them, so that memory stays flat between steps
            ember_tensor::cpu::pool::release_cached();
        }
        // with EMBER_PROFILE: the loop's own work (logging, progress, checkpoints, previews)
        ember_tensor::profile::mark("loop", "log, checkpoints, previews");
    }
    // with EMBER_PROFILE set, where the run's time went: the trainer's parts, the loop's, and
    // the model's ops forward and backward
    ember_tensor::profile::report();
    Ok(trainer)
}

/// Whether the loop does more than log at `step`: a FID probe, a preview or a checkpoint.
fn loop_work(c: &TrainConfig, step: u64) -> bool {
    let every = |k: u64| step == c.steps || (k > 0 && step.is_multiple_of(k));
    every(c.checkpoint_every) || every(c.sample_every) || (c.eval_every > 0 && every(c.eval_every))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_rows_keeps_whole_rows_up_to_the_step_and_drops_a_cut_short_last_row() {
        let dir = std::env::temp_dir().join(format!("ember-read-losses-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loss.csv");
        let rows = "step,loss,grad_norm,lr\n1,0.5,1,0.1\n2,0.25,1,0.1\n3,0.125,1,0.1\n";
        // the last row cut inside its loss (it would parse as 0.1), then inside its lr
        for tail in ["4,0.1", "4,0.0625,1,0.", "garbage"] {
            std::fs::write(&path, format!("{rows}{tail}")).unwrap();
            let kept: Vec<u64> = RunRecord::new(&whole_rows(&path, 4, 10), &[], 0).steps.iter().map(|s| s.step).collect();
            assert_eq!(kept, [1, 2, 3], "after {tail:?}");
        }
        std::fs::write(&path, format!("{rows}4,0.0625,1,0.1\nnot,a,row,at all\n")).unwrap();
        let kept: Vec<(u64, f64)> = RunRecord::new(&whole_rows(&path, 4, 3), &[], 0).steps.iter().map(|s| (s.step, s.loss)).collect();
        assert_eq!(kept, [(1, 0.5), (2, 0.25), (3, 0.125)], "rows after the checkpoint's step are dropped");
        assert_eq!(whole_rows(&dir.join("missing.csv"), 4, 10), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
