//! The text-to-image commands: `ember train-vae`, `ember train-clip`, `ember train --pipeline
//! txt2img` (latent diffusion), `ember txt2img` and `ember eval --prompt-fidelity`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use ember::tensor::rng::Rng;
use ember::train::TrainError;
use ember::train::autoencoder::{VaeStage, VaeTrainConfig};
use ember::train::classifier::Classifier;
use ember::train::compose::ComposedData;
use ember::train::contrastive::{ClipStage, ContrastiveConfig};
use ember::train::data::{Dataset, Split};
use ember::train::latent_diffusion::{FrozenTextEncoder, LatentDiffusionConfig, LatentDiffusionStage, load_frozen_vae};
use ember::train::pipeline::{Generation, Txt2Img, prompt_fidelity, real_canvas_fidelity};
use ember::train::run::RunDir;
use ember::train::stage::{Stage, StageSettings, check_fresh, run_stage};
use ember::train::trainer::LrDecay;
use ember::unet::VaeConfig;

use crate::{BarObserver, LrDecayName, TrainArgs, progress_bar};

/// The trained text-to-image pipeline shipped with the repository (f16).
pub const SHIPPED_PIPELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/checkpoints/txt2img-fashion-mnist-f16.safetensors");

/// The options every stage shares.
#[derive(Args)]
pub struct StageArgs {
    /// The run folder
    #[arg(long)]
    out: PathBuf,
    /// The garments: fashion-mnist[:DIR] (composed on 64x32 canvases with captions)
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Canvases per step (default: 32 for the VAE, 64 distinct scenes for CLIP)
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate (default: 1e-3 for the VAE, 5e-4 for CLIP)
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// After the warmup: constant, linear or cosine decay to 0 at --steps
    #[arg(long, value_enum, default_value = "cosine")]
    lr_decay: LrDecayName,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Previews (reconstructions and PSNR, retrieval accuracy) every this many steps
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    /// Continue the run in --out from its checkpoint (to --steps)
    #[arg(long)]
    resume: bool,
}

impl StageArgs {
    fn settings(&self, defaults: StageSettings) -> StageSettings {
        StageSettings {
            data: self.data.clone(),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            steps: self.steps,
            lr: self.lr.unwrap_or(defaults.lr),
            warmup_steps: self.warmup,
            lr_decay: lr_decay(self.lr_decay),
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            sample_every: self.sample_every,
            ..defaults
        }
    }
}

pub fn lr_decay(name: LrDecayName) -> LrDecay {
    match name {
        LrDecayName::Constant => LrDecay::Constant,
        LrDecayName::Linear => LrDecay::Linear,
        LrDecayName::Cosine => LrDecay::Cosine,
    }
}

#[derive(Args)]
pub struct TrainVaeArgs {
    #[command(flatten)]
    stage: StageArgs,
    /// The weight of the KL term
    #[arg(long, default_value_t = 1e-6)]
    beta: f64,
    /// A diffusers AutoencoderKL config.json (default: 3 levels of 16, 32, 64 channels, 4
    /// latent channels: 64x32x1 canvases to 16x8x4 latents)
    #[arg(long)]
    vae_config: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainClipArgs {
    #[command(flatten)]
    stage: StageArgs,
}

#[derive(Args)]
pub struct Txt2ImgArgs {
    /// What to draw, in the captions' language: "a sneaker", "a bag left of a dress", "a dress
    /// to the right of a bag", "two shirts" (garments: t-shirt/top/tee, pair of trousers/pants,
    /// pullover/sweater, dress, coat/jacket, sandal, shirt, sneaker/trainer, bag/handbag, ankle
    /// boot/boot)
    #[arg(long)]
    prompt: String,
    /// The unconditional side of guidance (default: the empty caption)
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Classifier-free guidance scale: 1 is the conditional model alone, above 1 follows the
    /// prompt more closely
    #[arg(long, default_value_t = 4.0)]
    guidance: f64,
    /// DDIM steps
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM's eta (0: deterministic)
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Number of canvases
    #[arg(long, default_value_t = 8)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The pipeline (default: the shipped one, checkpoints/txt2img-fashion-mnist-f16.safetensors)
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// The grid PNG to write
    #[arg(long, default_value = "txt2img.png")]
    out: PathBuf,
}

fn run_stage_with_bar(stage: &mut dyn Stage, dir: &RunDir, what: &str) -> Result<()> {
    let bar = progress_bar(stage.total_steps(), "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}");
    let mut observer = BarObserver::new(bar);
    run_stage(stage, what, dir, &mut observer)?;
    observer.bar.finish();
    println!(
        "{what}: trained {} steps; run folder {} (report.html, checkpoint.safetensors, loss.csv, metrics.csv, plots, samples/)",
        stage.step(),
        dir.root.display()
    );
    Ok(())
}

pub fn run_train_vae(args: TrainVaeArgs) -> Result<()> {
    let dir = RunDir::new(&args.stage.out);
    let mut stage = if args.stage.resume {
        VaeStage::resume(&dir.checkpoint(), Some(args.stage.steps))?
    } else {
        check_fresh(&dir)?;
        let defaults = VaeTrainConfig::default();
        let vae = match &args.vae_config {
            Some(path) => VaeConfig::from_json(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
                .with_context(|| format!("in {}", path.display()))?,
            None => defaults.vae.clone(),
        };
        VaeStage::new(VaeTrainConfig { vae, beta: args.beta, settings: args.stage.settings(defaults.settings) })?
    };
    run_stage_with_bar(&mut stage, &dir, "train-vae")?;
    println!("test PSNR {:.2} dB, latent scaling factor {:.5}", stage.test_psnr()?, stage.config.vae.scaling_factor);
    Ok(())
}

pub fn run_train_clip(args: TrainClipArgs) -> Result<()> {
    let dir = RunDir::new(&args.stage.out);
    let mut stage = if args.stage.resume {
        ClipStage::resume(&dir.checkpoint(), Some(args.stage.steps))?
    } else {
        check_fresh(&dir)?;
        let defaults = ContrastiveConfig::default();
        ClipStage::new(ContrastiveConfig { settings: args.stage.settings(defaults.settings.clone()), ..defaults })?
    };
    run_stage_with_bar(&mut stage, &dir, "train-clip")?;
    let (held_out, training) = stage.retrieval()?;
    println!("retrieval among 100 canvases: held-out prompts {:.1}%, training prompts {:.1}% (chance 1%)", 100.0 * held_out, 100.0 * training);
    Ok(())
}

/// `ember train --pipeline txt2img`: latent diffusion on the frozen VAE and text encoder.
pub fn run_train_latent(args: &TrainArgs) -> Result<()> {
    let dir = RunDir::new(&args.out);
    let mut stage = if args.resume {
        LatentDiffusionStage::resume(&dir.checkpoint(), Some(args.steps))?
    } else {
        check_fresh(&dir)?;
        let defaults = LatentDiffusionConfig::default();
        let mut config = LatentDiffusionConfig {
            ema_decay: args.ema_decay,
            caption_drop: args.cond_drop,
            sample_steps: args.sample_steps,
            settings: StageSettings {
                data: args.data.clone().unwrap_or(defaults.settings.data.clone()),
                batch_size: args.batch_size,
                steps: args.steps,
                lr: args.lr,
                warmup_steps: args.warmup,
                lr_decay: lr_decay(args.lr_decay),
                weight_decay: args.weight_decay,
                grad_clip: args.grad_clip,
                seed: args.seed,
                checkpoint_every: args.checkpoint_every,
                sample_every: args.sample_every,
                ..defaults.settings.clone()
            },
            ..defaults
        };
        if let Some(init) = &args.init_from {
            anyhow::ensure!(args.model.unet_config.is_none(), "--init-from takes the UNet's config from the pipeline");
            let pipeline = Txt2Img::load(init).with_context(|| format!("--init-from {}", init.display()))?;
            (config.vae_checkpoint, config.text_encoder_checkpoint) = (init.display().to_string(), init.display().to_string());
            LatentDiffusionStage::from_pipeline(config, &pipeline)?
        } else {
            let (Some(vae_path), Some(text_path)) = (&args.vae, &args.text_encoder) else {
                anyhow::bail!(
                    "--pipeline txt2img needs --vae (a train-vae checkpoint or a pipeline) and --text-encoder (a train-clip checkpoint or a pipeline), or --init-from PIPELINE"
                );
            };
            let vae = load_frozen_vae(vae_path).with_context(|| format!("--vae {}", vae_path.display()))?;
            let text = FrozenTextEncoder::load(text_path).with_context(|| format!("--text-encoder {}", text_path.display()))?;
            (config.vae_checkpoint, config.text_encoder_checkpoint) = (vae_path.display().to_string(), text_path.display().to_string());
            config.pipeline.schedule = args.schedule.clone();
            if args.model.unet_config.is_some() {
                config.pipeline.unet = args.model.config()?;
            }
            LatentDiffusionStage::new(config, &text, &vae)?
        }
    };
    run_stage_with_bar(&mut stage, &dir, "latent diffusion")?;
    println!("pipeline: {}", LatentDiffusionStage::pipeline_path(&dir.checkpoint()).display());
    Ok(())
}

pub fn run_txt2img(args: Txt2ImgArgs) -> Result<()> {
    let path = args.pipeline.clone().unwrap_or_else(|| PathBuf::from(SHIPPED_PIPELINE));
    let pipeline = Txt2Img::load(&path)?;
    let unknown = pipeline.tokenizer.unknown_words(&args.prompt);
    if !unknown.is_empty() {
        eprintln!("note: the pipeline does not know {}: they read as an unknown word (see --help for its words)", unknown.join(", "));
    }
    anyhow::ensure!(args.n > 0, "--n must be at least 1");
    let how = Generation { negative_prompt: args.negative_prompt.clone(), guidance: args.guidance, steps: args.steps, eta: args.eta };
    let bar = progress_bar(args.steps as u64, "{spinner} sampling [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta}");
    let prompts = vec![args.prompt.as_str(); args.n];
    let canvases = pipeline.generate(&prompts, &how, &mut Rng::new(args.seed), &mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    ember::train::images::write_grid_png(&args.out, &canvases, 4)?;
    println!(
        "wrote {} ({} canvases of {:?}, guidance {}, {} DDIM steps, from {})",
        args.out.display(),
        args.n,
        args.prompt,
        args.guidance,
        args.steps,
        path.display()
    );
    Ok(())
}

/// `ember eval --prompt-fidelity`: the share of canvases whose two cells the classifier reads
/// as the prompt's garments, per guidance scale, on held-out and on training pairs.
#[allow(clippy::too_many_arguments)]
pub fn run_prompt_fidelity(
    checkpoint: &Path,
    classifier: &Path,
    data: &str,
    guidance: &[f64],
    per_pair: usize,
    steps: usize,
    batch_size: usize,
    seed: u64,
) -> Result<()> {
    let pipeline = Txt2Img::load(checkpoint)?;
    let classifier: Classifier = Classifier::load(classifier).with_context(|| format!("the classifier {}", classifier.display()))?.classifier;
    let held_out = pipeline.config.held_out.clone();
    let training = training_pairs(&held_out, held_out.len().max(10), seed);
    println!(
        "prompt fidelity of {}: both cells read as the prompt's garments (chance 1%), {per_pair} canvases per pair, DDIM {steps} steps",
        checkpoint.display()
    );
    println!("| canvases | training pairs ({}) | held-out pairs ({}) |", training.len(), held_out.len());
    println!("|---|---|---|");
    let real = match Dataset::from_name(data, Split::Test, 1).map_err(TrainError::from).and_then(|garments| ComposedData::new(garments, &[])) {
        Ok(real) => {
            let (on_training, on_held_out) =
                (real_canvas_fidelity(&classifier, &real, &training, per_pair, seed)?, real_canvas_fidelity(&classifier, &real, &held_out, per_pair, seed)?);
            println!("| real, {data} test garments (the classifier's ceiling) | {:.1}% | {:.1}% |", 100.0 * on_training.share(), 100.0 * on_held_out.share());
            Some(on_held_out)
        }
        Err(e) => {
            eprintln!("note: no real-canvas row ({e})");
            None
        }
    };
    let mut generated = Vec::new();
    for &scale in guidance {
        let how = Generation { guidance: scale, steps, ..Generation::default() };
        let started = std::time::Instant::now();
        let on_training = prompt_fidelity(&pipeline, &classifier, &training, per_pair, &how, batch_size, seed)?;
        let on_held_out = prompt_fidelity(&pipeline, &classifier, &held_out, per_pair, &how, batch_size, seed)?;
        println!(
            "| generated, guidance {scale} | {:.1}% | {:.1}% |   ({:.0} s)",
            100.0 * on_training.share(),
            100.0 * on_held_out.share(),
            started.elapsed().as_secs_f64()
        );
        generated.push(on_held_out);
    }
    // the held-out pairs one by one
    let names = &classifier.config.class_names;
    println!();
    let columns: Vec<String> = guidance.iter().map(|g| format!("guidance {g}")).collect();
    println!("| held-out pair | real |{}|", columns.iter().map(|c| format!(" {c} ")).collect::<Vec<_>>().join("|"));
    println!("|---|---|{}", "---|".repeat(columns.len()));
    for &pair in &held_out {
        let percent = |f: Option<f64>| f.map_or("-".to_string(), |v| format!("{:.0}%", 100.0 * v));
        let cells: Vec<String> = generated.iter().map(|g| percent(g.share_of(pair))).collect();
        println!("| {} left of {} | {} | {} |", names[pair.0], names[pair.1], percent(real.as_ref().and_then(|r| r.share_of(pair))), cells.join(" | "));
    }
    Ok(())
}

/// `count` ordered pairs of different garments that training shows, drawn from `seed`.
fn training_pairs(held_out: &[(usize, usize)], count: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut pool: Vec<(usize, usize)> = (0..10).flat_map(|l| (0..10).map(move |r| (l, r))).filter(|&(l, r)| l != r && !held_out.contains(&(l, r))).collect();
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut chosen = Vec::new();
    while chosen.len() < count && !pool.is_empty() {
        let i = ((rng.uniform_values(1)[0] * pool.len() as f64) as usize).min(pool.len() - 1);
        chosen.push(pool.swap_remove(i));
    }
    chosen.sort();
    chosen
}
