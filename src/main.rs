//! `ember`: train a DDPM, sample from it, evaluate it, and describe its architecture; train
//! the three stages of a text-to-image pipeline and draw from it (`txt2img`).
//! Run `ember --help` and `ember <command> --help`.

mod txt2img;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use ember::diffusion::{DdpmVariance, TimestepSpacing};
use ember::tensor::precision::{Precision, PrecisionGuard, set_precision};
use ember::tensor::rng::Rng;
use ember::tensor::{DType, Device};
use ember::train::TrainConfig;
use ember::train::checkpoint::Checkpoint;
use ember::train::data::{Dataset, Split};
use ember::train::images::write_grid_png;
use ember::train::run::{Observer, RunDir, train};
use ember::train::sampling::{ClassGuidance, Sampler, sample_for_eval, sample_images, sample_images_guided};
use ember::train::trainer::{LrDecay, StepStats};
use ember::unet::module::{Module, named_parameters, parameter_count};
use ember::unet::{UNet, UNetConfig};

#[derive(Parser)]
#[command(name = "ember", version, about = "A from-scratch DDPM: train, sample, evaluate; and text to image in miniature (VAE, CLIP, latent diffusion)", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// parsed once per process: the size of its largest variant does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train a UNet on images (a run folder gets config, loss CSV and curve, samples, checkpoints)
    Train(TrainArgs),
    /// Draw a grid of samples from a checkpoint
    Sample(SampleArgs),
    /// Bits/dim (the variational bound) and the loss on the test split; or a sample measure
    /// (--class-accuracy, --fid, --prompt-fidelity)
    Eval(EvalArgs),
    /// Print a model's architecture and parameter counts
    Info(InfoArgs),
    /// Write a small sampling-only checkpoint (the EMA weights, f16 by default), or convert a
    /// text-to-image pipeline
    Export(ExportArgs),
    /// Train the image classifier that `ember eval --class-accuracy` reads samples with
    TrainClassifier(TrainClassifierArgs),
    /// Text to image, stage 1: train the VAE (AutoencoderKL) on composed 64x32 canvases
    TrainVae(txt2img::TrainVaeArgs),
    /// Text to image, stage 2: train the CLIP text encoder against an image encoder (InfoNCE)
    TrainClip(txt2img::TrainClipArgs),
    /// Draw canvases for a prompt with a text-to-image pipeline (stage 3 is `ember train
    /// --pipeline txt2img`)
    Txt2img(txt2img::Txt2ImgArgs),
}

/// Where the model runs, and in what arithmetic.
#[derive(Args, Clone)]
struct DeviceArgs {
    /// cpu, or cuda / cuda:N (needs a build with `--features cuda` and a GPU; with
    /// `--features cuda-emu` and no GPU, cuda is the CPU emulator of the CUDA kernels: slow,
    /// for checking only)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CUDA devices: f32 (exact f32 products), tf32 (matmul, convolutions and attention's
    /// products on tensor cores with inputs rounded to TF32, f32 accumulation: PyTorch's
    /// allow_tf32) or bf16 (the same with inputs rounded to bf16 as under autocast, outputs in
    /// f32, the tensors staying f32 in memory). The CPU computes in f32 only
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Architecture preset: tiny, tiny-cond (tiny with class conditioning), labml, ddpm-cifar10
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Image channels for the tiny and labml presets (1 = grayscale, 3 = RGB)
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// A diffusers-style UNet config.json (overrides --preset)
    #[arg(long)]
    unet_config: Option<PathBuf>,
}

impl ModelArgs {
    fn config(&self) -> Result<UNetConfig> {
        Ok(match &self.unet_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                UNetConfig::from_json(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => UNetConfig::preset(&self.preset, self.channels)?,
        })
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// What to train: ddpm (a UNet on images) or txt2img (text-to-image stage 3: latent
    /// diffusion with cross-attention on the frozen --vae and --text-encoder)
    #[arg(long, value_enum, default_value = "ddpm")]
    pipeline: PipelineName,
    /// --pipeline txt2img: the VAE (an `ember train-vae` checkpoint, or a pipeline such as the shipped one)
    #[arg(long)]
    vae: Option<PathBuf>,
    /// --pipeline txt2img: the text encoder (an `ember train-clip` checkpoint, or a pipeline such as the shipped one)
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// --pipeline txt2img: fine-tune a trained pipeline (such as the shipped one): its UNet is
    /// where training starts (with fresh Adam state and learning-rate schedule), its text
    /// encoder and VAE are the frozen parts
    #[arg(long, conflicts_with_all = ["vae", "text_encoder", "resume", "resume_from"])]
    init_from: Option<PathBuf>,
    /// The run folder
    #[arg(long)]
    out: PathBuf,
    /// Dataset: fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, png:DIR, procedural[:N[:SIZE]]. Default:
    /// Fashion-MNIST if installed (apt-get install dataset-fashion-mnist), else procedural
    #[arg(long)]
    data: Option<String>,
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Images per forward/backward pass
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Gradient accumulation: each optimizer step averages the gradients of K batches of
    /// --batch-size images (the same step as one batch of K times as many, in less memory)
    #[arg(long, default_value_t = 1, value_name = "K")]
    accumulate: usize,
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Linear learning-rate warmup steps
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// After the warmup the learning rate stays (constant, the paper) or decays to 0 at
    /// --steps (linear, cosine)
    #[arg(long, value_enum, default_value = "constant")]
    lr_decay: LrDecayName,
    /// Decoupled weight decay (AdamW); 0 is Adam, as in the paper
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip the global gradient norm (0: off)
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 0.9999)]
    ema_decay: f64,
    /// Noise schedule: linear or cosine
    #[arg(long, default_value = "linear")]
    schedule: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    #[arg(long, default_value_t = 16)]
    sample_count: usize,
    /// DDIM steps for the sample grids written during training
    #[arg(long, default_value_t = 50)]
    sample_steps: usize,
    /// Class-conditional models: the probability that a label is dropped to the null class
    /// during training (for classifier-free guidance); --pipeline txt2img: the probability
    /// that a caption is replaced by the empty one
    #[arg(long, default_value_t = 0.1)]
    cond_drop: f64,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    /// Every this many steps, the FID of --eval-samples EMA samples against as many test
    /// images, in the classifier's features, into OUT/metrics.csv (0: never)
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    #[arg(long, default_value_t = 256)]
    eval_samples: usize,
    /// The classifier for --eval-every (default: the shipped one for the data,
    /// checkpoints/classifier-<data>-f16.safetensors)
    #[arg(long)]
    eval_classifier: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint (OUT/checkpoint.safetensors)
    #[arg(long)]
    resume: bool,
    /// Continue from this checkpoint file instead
    #[arg(long, conflicts_with = "resume")]
    resume_from: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PipelineName {
    Ddpm,
    Txt2img,
}

#[derive(Clone, Copy, ValueEnum)]
enum LrDecayName {
    Constant,
    Linear,
    Cosine,
}

#[derive(Clone, Copy, ValueEnum)]
enum SpacingName {
    Leading,
    Trailing,
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerName {
    Ddpm,
    Ddim,
}

#[derive(Clone, Copy, ValueEnum)]
enum VarianceName {
    /// σ² = β_t
    Beta,
    /// σ² = β̃_t, the posterior variance
    Posterior,
}

/// The trained `tiny` model shipped with the repository (EMA weights in f16, Fashion-MNIST).
const SHIPPED_CHECKPOINT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/checkpoints/tiny-fashion-mnist-f16.safetensors");

#[derive(Args)]
struct SampleArgs {
    /// A checkpoint written by `ember train` or `ember export` (default: the shipped tiny
    /// Fashion-MNIST model, checkpoints/tiny-fashion-mnist-f16.safetensors)
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "ddim")]
    sampler: SamplerName,
    /// Sampling steps: DDIM's (default 50); DDPM's default is all T training steps, fewer
    /// stride over them as diffusers' DDPMScheduler.set_timesteps(N) (every T/N-th, leading)
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM's eta: 0 deterministic, 1 DDPM-like
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// DDIM's timesteps: leading (the paper's: (S-1)k, ..., k, 0 with k = T/S) or trailing
    /// (diffusers' "trailing": from T-1 down in steps of T/S)
    #[arg(long, value_enum, default_value = "leading")]
    spacing: SpacingName,
    /// DDPM's variance choice
    #[arg(long, value_enum, default_value = "beta")]
    variance: VarianceName,
    /// Number of images
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Images drawn at once (the rest follow in further batches from the same random stream;
    /// with DDIM at eta 0 the images do not depend on it)
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the trained weights instead of their EMA
    #[arg(long)]
    no_ema: bool,
    /// Do not clip the predicted clean image to [-1, 1] at each step
    #[arg(long)]
    no_clip: bool,
    /// The grid PNG to write
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// Class-conditional models: the class to draw, by name or index, or `all` (the default)
    /// for one row of --n images per class
    #[arg(long)]
    class: Option<String>,
    /// Class-conditional models: the classifier-free guidance scale w in
    /// eps_u + w (eps_c - eps_u); 0 ignores the class, 1 is the conditional model alone
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset (default: the checkpoint's), test split
    #[arg(long)]
    data: Option<String>,
    /// Test images to evaluate (bits/dim, default 64), images drawn per class
    /// (--class-accuracy, default 64), images drawn and compared (--fid, default 1000), or
    /// canvases per pair (--prompt-fidelity, default 64)
    #[arg(long)]
    n: Option<usize>,
    /// Images per batch (for --class-accuracy, images drawn at once; each step runs twice
    /// as many through the model)
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Instead of bits/dim: draw --n images per class of a class-conditional model and report
    /// the share that a classifier reads as the class they were drawn for
    #[arg(long)]
    class_accuracy: bool,
    /// Instead of bits/dim: draw --n images (a class-conditional model: the classes in turn, at
    /// the first --guidance) and compare them with --n test images in the classifier's
    /// features: FID's and KID's formulas (not Inception features), with the same numbers for
    /// --n training images as the floor
    #[arg(long, conflicts_with = "class_accuracy")]
    fid: bool,
    /// For a text-to-image pipeline (--checkpoint pipeline.safetensors): per --guidance scale,
    /// --n canvases per ordered pair of garments, on the held-out pairs and as many training
    /// pairs; the share whose left and right cells the classifier reads as the prompt's
    #[arg(long, conflicts_with_all = ["class_accuracy", "fid"])]
    prompt_fidelity: bool,
    /// The classifier for --class-accuracy and --fid (default: the shipped one for the checkpoint's
    /// data, checkpoints/classifier-<data>-f16.safetensors)
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Guidance scales for --class-accuracy, e.g. 0,1,3
    #[arg(long, value_delimiter = ',', default_value = "3")]
    guidance: Vec<f64>,
    /// DDIM steps for --class-accuracy
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, value_enum, default_value = "posterior")]
    variance: VarianceName,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    no_ema: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

impl EvalArgs {
    /// `--n`, or its default for the measure asked for (FID needs many images to settle).
    fn n(&self) -> usize {
        self.n.unwrap_or(if self.fid { 1000 } else { 64 })
    }
}

#[derive(Args)]
struct TrainClassifierArgs {
    /// A labelled dataset (see `ember train --help`)
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Image channels (1 = grayscale, 3 = RGB)
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// The classifier file to write (default: checkpoints/classifier-<data>-f16.safetensors)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Channels of each level of the CNN, e.g. 32,64,128
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    widths: Vec<usize>,
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (Adam), after a linear warmup, then a cosine decay to 0
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weights' dtype in the file: f16, bf16 or f32
    #[arg(long, default_value = "f16")]
    dtype: String,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct ExportArgs {
    /// A training checkpoint, or a text-to-image pipeline (pipeline.safetensors of `ember
    /// train --pipeline txt2img`), converted whole
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// f16, bf16 or f32
    #[arg(long, default_value = "f16")]
    dtype: String,
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => run_train(args),
        Command::Sample(args) => run_sample(args),
        Command::Eval(args) => run_eval(args),
        Command::Info(args) => run_info(args),
        Command::Export(args) => run_export(args),
        Command::TrainClassifier(args) => run_train_classifier(args),
        Command::TrainVae(args) => txt2img::run_train_vae(args),
        Command::TrainClip(args) => txt2img::run_train_clip(args),
        Command::Txt2img(args) => txt2img::run_txt2img(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn default_data(config: &UNetConfig) -> String {
    let installed = ["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"].iter().any(|f| Path::new(FASHION_MNIST_DIR).join(f).exists());
    if config.in_channels == 1 && config.sample_size == 32 && installed {
        "fashion-mnist".into()
    } else {
        eprintln!(
            "note: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist) or does not fit the model; training on the built-in procedural data"
        );
        "procedural".into()
    }
}

fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).unwrap().progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// The training progress: a progress bar on a terminal; elsewhere (a pipe, a log file, CI),
/// where the bar stays hidden, a plain line every 5% of the run and the notes, so that a log
/// shows the run as it goes.
struct BarObserver {
    bar: ProgressBar,
    smoothed: Option<f64>,
    /// Write plain lines (stderr is not a terminal).
    plain: bool,
    total: u64,
    started_at: std::time::Instant,
}

impl BarObserver {
    fn new(bar: ProgressBar) -> BarObserver {
        use std::io::IsTerminal;
        BarObserver { bar, smoothed: None, plain: !std::io::stderr().is_terminal(), total: 0, started_at: std::time::Instant::now() }
    }
}

impl Observer for BarObserver {
    fn started(&mut self, first_step: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(first_step);
        self.bar.reset_eta();
        (self.total, self.started_at) = (total, std::time::Instant::now());
        if self.plain {
            eprintln!("training from step {first_step} to {total}");
        }
    }
    fn step(&mut self, stats: &StepStats) {
        let s = self.smoothed.map_or(stats.loss, |m| 0.98 * m + 0.02 * stats.loss);
        self.smoothed = Some(s);
        let message = format!("loss {:.4} (avg {s:.4}) lr {:.1e}", stats.loss, stats.lr);
        if self.plain && (stats.step.is_multiple_of(self.total.div_ceil(20).max(1)) || stats.step == self.total) {
            eprintln!("step {}/{} {message} ({:.1} s)", stats.step, self.total, self.started_at.elapsed().as_secs_f64());
        }
        self.bar.set_position(stats.step);
        self.bar.set_message(message);
    }
    fn note(&mut self, message: &str) {
        if self.plain {
            eprintln!("{message}");
        } else {
            self.bar.println(message);
        }
    }
}

fn run_train(args: TrainArgs) -> Result<()> {
    if args.pipeline == PipelineName::Txt2img {
        anyhow::ensure!(args.device.device == "cpu" && args.device.precision == Precision::F32, "--pipeline txt2img trains on the CPU (in f32) for now");
        return txt2img::run_train_latent(&args);
    }
    anyhow::ensure!(
        args.vae.is_none() && args.text_encoder.is_none() && args.init_from.is_none(),
        "--vae, --text-encoder and --init-from are for --pipeline txt2img"
    );
    let (device, _precision) = parse_device(&args.device)?;
    let mut unet = args.model.config()?;
    let data = args.data.clone().unwrap_or_else(|| default_data(&unet));
    if args.model.unet_config.is_none() && unet.num_class_embeds.is_some() && !args.resume && args.resume_from.is_none() {
        // a class-conditional preset: one class embedding per class of the data, and the null class
        let classes = Dataset::from_name(&data, Split::Train, unet.in_channels)?.class_names().len();
        anyhow::ensure!(classes > 0, "--preset {} is class-conditional, but the data {data:?} has no labels", args.model.preset);
        unet.num_class_embeds = Some(classes + 1);
    }
    let eval_classifier = match (&args.eval_classifier, args.eval_every) {
        (Some(path), _) => path.display().to_string(),
        (None, 0) => String::new(),
        (None, _) => shipped_classifier(&data).display().to_string(),
    };
    let config = TrainConfig {
        unet,
        data,
        batch_size: args.batch_size,
        accumulate: args.accumulate,
        steps: args.steps,
        lr: args.lr,
        warmup_steps: args.warmup,
        lr_decay: match args.lr_decay {
            LrDecayName::Constant => LrDecay::Constant,
            LrDecayName::Linear => LrDecay::Linear,
            LrDecayName::Cosine => LrDecay::Cosine,
        },
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        ema_decay: args.ema_decay,
        random_flip: !args.no_flip,
        schedule: args.schedule.clone(),
        num_timesteps: 1000,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        sample_every: args.sample_every,
        sample_count: args.sample_count,
        sample_steps: args.sample_steps,
        cond_drop: args.cond_drop,
        class_names: Vec::new(),
        eval_every: args.eval_every,
        eval_samples: args.eval_samples,
        eval_classifier,
    };
    let dir = RunDir::new(&args.out);
    let resume = if args.resume { Some(dir.checkpoint()) } else { args.resume_from.clone() };
    let bar = progress_bar(args.steps, "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}");
    let mut observer = BarObserver::new(bar);
    let trainer = train(Some(config), resume.as_deref(), &dir, device, &mut observer)?;
    observer.bar.finish();
    println!("trained {} steps; run folder {} (report.html, checkpoint.safetensors, loss.csv, metrics.csv, plots, samples/)", trainer.step, args.out.display());
    Ok(())
}

/// `cpu`, `cuda` (device 0) or `cuda:N`, checked to be available now rather than at the
/// first step, and the precision of its products, set for this thread until the guard drops.
fn parse_device(args: &DeviceArgs) -> Result<(Device, PrecisionGuard)> {
    let name = args.device.as_str();
    let device = match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match name.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(ordinal) => Device::Cuda(ordinal),
            None => bail!("unknown device {name:?}: use cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(ordinal) = device {
        let backend = ember::tensor::cuda::device(ordinal)?;
        eprintln!("device: {} ({} products)", backend.describe(), args.precision);
    } else if args.precision != Precision::F32 {
        bail!("--precision {} is for CUDA devices: the CPU computes in f32", args.precision);
    }
    Ok((device, set_precision(args.precision)))
}

fn variance(v: VarianceName) -> DdpmVariance {
    match v {
        VarianceName::Beta => DdpmVariance::Beta,
        VarianceName::Posterior => DdpmVariance::Posterior,
    }
}

fn run_sample(args: SampleArgs) -> Result<()> {
    let path = args.checkpoint.clone().unwrap_or_else(|| PathBuf::from(SHIPPED_CHECKPOINT));
    let (device, _precision) = parse_device(&args.device)?;
    let checkpoint = Checkpoint::load(&path)?;
    let model = checkpoint.model(!args.no_ema)?;
    ember::unet::module::to_device(&model, device)?;
    let schedule = ember::diffusion::NoiseSchedule::from_name(&checkpoint.config.schedule, checkpoint.config.num_timesteps)?;
    let sampler = match args.sampler {
        SamplerName::Ddpm => Sampler::Ddpm { variance: variance(args.variance), steps: args.steps.unwrap_or(checkpoint.config.num_timesteps) },
        SamplerName::Ddim => Sampler::Ddim {
            steps: args.steps.unwrap_or(50),
            eta: args.eta,
            spacing: match args.spacing {
                SpacingName::Leading => TimestepSpacing::Leading,
                SpacingName::Trailing => TimestepSpacing::Trailing,
            },
        },
    };
    anyhow::ensure!(args.n > 0 && args.batch_size > 0, "--n and --batch-size must be at least 1");
    let batches = args.n.div_ceil(args.batch_size);
    let bar = progress_bar(1, "{spinner} sampling [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} {msg}");
    let mut batch = 0;
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done == total {
            batch += 1;
        }
        if batches > 1 {
            bar.set_message(format!("batch {} of {batches}", (batch + 1).min(batches)));
        }
    };
    let mut rng = Rng::new(args.seed);
    let config = &checkpoint.config;
    let (images, columns, what) = if config.is_class_conditional() {
        let names = &config.class_names;
        let wanted = args.class.as_deref().unwrap_or("all");
        let (classes, columns, what) = if wanted == "all" {
            let classes: Vec<usize> = (0..names.len()).flat_map(|c| std::iter::repeat_n(c, args.n)).collect();
            (classes, args.n, format!("one row of {} per class", args.n))
        } else {
            let class = names.iter().position(|name| name == wanted).or_else(|| wanted.parse::<usize>().ok().filter(|&i| i < names.len()));
            let class = class.ok_or_else(|| anyhow::anyhow!("--class {wanted:?}: not a class of this model; its classes are {}, or all", names.join(", ")))?;
            (vec![class; args.n], (args.n as f64).sqrt().ceil() as usize, format!("class {}", names[class]))
        };
        let mut images = Vec::new();
        for chunk in classes.chunks(args.batch_size) {
            let guidance = ClassGuidance { classes: chunk.to_vec(), null_class: config.null_class(), scale: args.guidance };
            images.push(sample_images_guided(&model, &schedule, &guidance, sampler, !args.no_clip, &mut rng, &mut progress)?);
        }
        (ember::tensor::Tensor::cat(&images.iter().collect::<Vec<_>>(), 0)?, columns, format!("{what}, guidance {}", args.guidance))
    } else {
        if let Some(class) = &args.class {
            anyhow::bail!("--class {class:?}: this model is not class-conditional");
        }
        let mut images = Vec::new();
        for start in (0..args.n).step_by(args.batch_size) {
            let count = args.batch_size.min(args.n - start);
            images.push(sample_images(&model, &schedule, count, sampler, !args.no_clip, &mut rng, &mut progress)?);
        }
        (ember::tensor::Tensor::cat(&images.iter().collect::<Vec<_>>(), 0)?, (args.n as f64).sqrt().ceil() as usize, "unconditional".to_string())
    };
    bar.finish_and_clear();
    write_grid_png(&args.out, &images, columns)?;
    println!("wrote {} ({} images, {what}, step {} of {})", args.out.display(), images.shape()[0], checkpoint.step, path.display());
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    if args.prompt_fidelity {
        anyhow::ensure!(args.device.device == "cpu" && args.device.precision == Precision::F32, "--prompt-fidelity runs on the CPU (in f32) for now");
        let classifier = args.classifier.clone().unwrap_or_else(|| shipped_classifier("fashion-mnist"));
        let data = args.data.clone().unwrap_or_else(|| "fashion-mnist".into());
        return txt2img::run_prompt_fidelity(&args.checkpoint, &classifier, &data, &args.guidance, args.n(), args.steps, args.batch_size, args.seed);
    }
    let (device, _precision) = parse_device(&args.device)?;
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let model = checkpoint.model(!args.no_ema)?;
    ember::unet::module::to_device(&model, device)?;
    let config = &checkpoint.config;
    let schedule = ember::diffusion::NoiseSchedule::from_name(&config.schedule, config.num_timesteps)?;
    if args.class_accuracy {
        return run_class_accuracy(&args, &checkpoint, &model, &schedule, device);
    }
    if args.fid {
        return run_fid(&args, &checkpoint, &model, &schedule, device);
    }
    let data = args.data.clone().unwrap_or_else(|| config.data.clone());
    let dataset = Dataset::from_name(&data, Split::Test, config.unet.in_channels)?;
    let n = args.n().min(dataset.len());
    let mut rng = Rng::new(args.seed);
    let (mut bpd_sum, mut loss_sum, mut batches) = (0.0, 0.0, 0usize);
    let bar = progress_bar(n as u64, "{spinner} eval [{bar:30}] {pos}/{len} images ETA {eta} {msg}");
    let _guard = ember::tensor::no_grad();
    for start in (0..n).step_by(args.batch_size.max(1)) {
        let indices: Vec<usize> = (start..(start + args.batch_size).min(n)).collect();
        let x0 = dataset.batch(&indices, &vec![false; indices.len()])?;
        // a class-conditional model is evaluated on the images' own labels (the conditional bound)
        let classes = if config.is_class_conditional() {
            let labels = dataset.batch_labels(&indices)?;
            Some(labels.ok_or_else(|| anyhow::anyhow!("the model is class-conditional, but {data:?} has no labels"))?)
        } else {
            None
        };
        let mut unused = Rng::new(0);
        // The data and the bound's arithmetic stay on the CPU; the model runs on `device`.
        let mut predict = |x: &ember::tensor::Tensor, t: &[f64]| -> std::result::Result<ember::tensor::Tensor, ember::unet::UNetError> {
            let mut ctx = ember::unet::ForwardContext { training: false, rng: &mut unused };
            let eps = model.forward_with_classes(&x.to_device(device)?, t, classes.as_deref(), &mut ctx)?;
            Ok(eps.to_device(x.device())?)
        };
        let loss = ember::diffusion::epsilon_loss(&mut predict, &schedule, &x0, &mut rng)?;
        loss_sum += loss.item()? * indices.len() as f64;
        let bpd = ember::diffusion::bits_per_dim(&mut predict, &schedule, &x0, variance(args.variance), &mut rng, &mut |_, _| {})?;
        bpd_sum += bpd.iter().sum::<f64>();
        batches += 1;
        bar.inc(indices.len() as u64);
        bar.set_message(format!("bits/dim {:.3}", bpd_sum / (start + indices.len()) as f64));
    }
    bar.finish_and_clear();
    println!("{n} test images of {data} ({batches} batches), step {}: bits/dim {:.4}, loss {:.5}", checkpoint.step, bpd_sum / n as f64, loss_sum / n as f64);
    Ok(())
}

/// The file name of the classifier for a dataset spec (`fashion-mnist`, `fashion-mnist:DIR`,
/// ...): `classifier-<dataset>-f16.safetensors`.
fn classifier_file_name(data: &str) -> String {
    format!("classifier-{}-f16.safetensors", data.split(':').next().unwrap_or(data))
}

/// The classifier shipped for a dataset spec, in the repository's checkpoints/.
fn shipped_classifier(data: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints").join(classifier_file_name(data))
}

/// `ember eval --class-accuracy`: per guidance scale, --n images per class read by the classifier.
fn run_class_accuracy(args: &EvalArgs, checkpoint: &Checkpoint, model: &UNet, schedule: &ember::diffusion::NoiseSchedule, device: Device) -> Result<()> {
    let config = &checkpoint.config;
    anyhow::ensure!(config.is_class_conditional(), "--class-accuracy needs a class-conditional model; {} is unconditional", args.checkpoint.display());
    let loaded = eval_classifier(args, config, device)?;
    let sampler = Sampler::Ddim { steps: args.steps, eta: 0.0, spacing: TimestepSpacing::Leading };
    for &scale in &args.guidance {
        let total = args.n() * config.class_names.len();
        let bar = progress_bar(total as u64, "{spinner} guidance {msg} [{bar:30}] {pos}/{len} images ETA {eta}");
        bar.set_message(format!("{scale}"));
        let started = std::time::Instant::now();
        let accuracy = ember::train::classifier::sampled_class_accuracy(
            model,
            &config.class_names,
            config.null_class(),
            schedule,
            &loaded.classifier,
            args.n(),
            scale,
            sampler,
            args.batch_size,
            &mut Rng::new(args.seed),
            &mut |done, _| bar.set_position(done as u64),
        )?;
        bar.finish_and_clear();
        println!(
            "guidance {scale}: {} images per class, DDIM {} steps, seed {} ({:.0} s): {:.2}% read as their class",
            args.n(),
            args.steps,
            args.seed,
            started.elapsed().as_secs_f64(),
            100.0 * accuracy.overall()
        );
        print!("{}", accuracy.table());
    }
    Ok(())
}

/// The classifier named by --classifier, or the one shipped for the checkpoint's data.
fn eval_classifier(args: &EvalArgs, config: &TrainConfig, device: Device) -> Result<ember::train::classifier::LoadedClassifier> {
    let path = args.classifier.clone().unwrap_or_else(|| shipped_classifier(&config.data));
    anyhow::ensure!(
        path.exists(),
        "no classifier at {} for the data {:?}: train one with `ember train-classifier --data {}` and pass it with --classifier",
        path.display(),
        config.data,
        config.data
    );
    let loaded = ember::train::classifier::Classifier::load(&path)?;
    ember::unet::module::to_device(&loaded.classifier, device)?;
    let accuracy_note = loaded.test_accuracy.map_or(String::new(), |a| format!(", {:.2}% on its test split", 100.0 * a));
    println!("classifier {} (trained on {}{accuracy_note})", path.display(), loaded.data);
    Ok(loaded)
}

/// `ember eval --fid`: FID and KID of --n samples against --n test images, in the classifier's
/// features, beside the same for --n training images (the floor).
fn run_fid(args: &EvalArgs, checkpoint: &Checkpoint, model: &UNet, schedule: &ember::diffusion::NoiseSchedule, device: Device) -> Result<()> {
    use ember::train::metrics::{FeatureStats, frechet_distance, kernel_distance};
    let config = &checkpoint.config;
    let loaded = eval_classifier(args, config, device)?;
    let classifier = &loaded.classifier;
    let data = args.data.clone().unwrap_or_else(|| config.data.clone());
    let (test, train) = (Dataset::from_name(&data, Split::Test, config.unet.in_channels)?, Dataset::from_name(&data, Split::Train, config.unet.in_channels)?);
    let n = args.n().min(test.len()).min(train.len());
    anyhow::ensure!(n >= 2, "--fid needs --n of at least 2 images");
    let bar = progress_bar(n as u64, "{spinner} sampling [{bar:30}] {pos}/{len} images ETA {eta}");
    let started = std::time::Instant::now();
    let classes = config.is_class_conditional().then(|| (config.class_names.len(), config.null_class(), args.guidance.first().copied().unwrap_or(1.0)));
    let mut rng = Rng::new(args.seed);
    let samples = sample_for_eval(model, schedule, n, classes, args.steps, args.batch_size, &mut rng, &mut |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let first = |set: &Dataset| set.batch(&(0..n).collect::<Vec<_>>(), &vec![false; n]);
    let dim = classifier.feature_dim();
    let features = |x: &ember::tensor::Tensor| classifier.features_of(x, 256);
    let (f_samples, f_test, f_train) = (features(&samples)?, features(&first(&test)?)?, features(&first(&train)?)?);
    let test_stats = FeatureStats::from_features(&f_test, dim)?;
    // KID's subsets: half the images (so that they differ), at most 1000 as in the KID paper
    let subset = (n / 2).clamp(2, 1000);
    let report = |what: &str, f: &[f64]| -> Result<()> {
        let fid = frechet_distance(&FeatureStats::from_features(f, dim)?, &test_stats)?;
        let (kid, kid_sd) = kernel_distance(f, &f_test, dim, 10, subset, &mut Rng::new(args.seed))?;
        println!("  {what:<26} FID {fid:>9.4}   KID {kid:>9.5} ± {kid_sd:.5}");
        Ok(())
    };
    println!(
        "{n} images each, against the first {n} test images of {data}, in the classifier's {dim} features (FID/KID formulas, not Inception features; DDIM {} steps, {:.0} s):",
        args.steps,
        started.elapsed().as_secs_f64()
    );
    report("samples", &f_samples)?;
    report("training images (floor)", &f_train)?;
    Ok(())
}

fn run_train_classifier(args: TrainClassifierArgs) -> Result<()> {
    use ember::train::classifier::{Classifier, ClassifierConfig, ClassifierEvent, ClassifierTraining, train_classifier};
    let dtype = parse_dtype(&args.dtype)?;
    let (device, _precision) = parse_device(&args.device)?;
    let train_set = Dataset::from_name(&args.data, Split::Train, args.channels)?;
    let test_set = Dataset::from_name(&args.data, Split::Test, args.channels)?;
    let names = train_set.class_names().to_vec();
    anyhow::ensure!(!names.is_empty(), "the data {:?} has no labels to train a classifier on", args.data);
    let config = ClassifierConfig { block_out_channels: args.widths.clone(), ..ClassifierConfig::small(args.channels, train_set.size(), names) };
    let classifier = Classifier::new(&config, &mut Rng::new(args.seed))?;
    let training = ClassifierTraining {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup_steps: args.warmup,
        random_flip: !args.no_flip,
        seed: args.seed,
    };
    println!(
        "classifier: {} parameters, levels {:?}; {} training and {} test images of {} ({} classes)",
        thousands(parameter_count(&classifier)),
        config.block_out_channels,
        train_set.len(),
        test_set.len(),
        args.data,
        config.class_names.len()
    );
    let bar = progress_bar(1, "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}");
    let mut observer = BarObserver::new(bar);
    let started = std::time::Instant::now();
    let accuracy = train_classifier(&classifier, &train_set, Some(&test_set), &training, device, &mut |event| match event {
        ClassifierEvent::Step { step, total, loss, lr } => {
            if step == 1 {
                observer.started(0, total);
            }
            observer.step(&StepStats { step, loss, grad_norm: f64::NAN, lr });
        }
        ClassifierEvent::Epoch { epoch, accuracy } => {
            if let Some(accuracy) = accuracy {
                observer.note(&format!("epoch {epoch}: test accuracy {:.2}% ({:.0} s)", 100.0 * accuracy.overall(), started.elapsed().as_secs_f64()));
            }
        }
    })?;
    observer.bar.finish_and_clear();
    // the accuracy of the weights as the file stores them (rounded to --dtype)
    let accuracy = match (dtype, accuracy) {
        (DType::F32, accuracy) | (_, accuracy @ None) => accuracy,
        (_, Some(trained)) => {
            for (_, p) in named_parameters(&classifier) {
                p.assign(&p.to_dtype(dtype)?.to_dtype(DType::F32)?)?;
            }
            let rounded = ember::train::classifier::dataset_accuracy(&classifier, &test_set, 256)?;
            println!("test accuracy {:.2}% in f32, {:.2}% with the weights rounded to {dtype:?}", 100.0 * trained.overall(), 100.0 * rounded.overall());
            Some(rounded)
        }
    };
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("checkpoints").join(classifier_file_name(&args.data)));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let test_accuracy = accuracy.as_ref().map(|a| a.overall());
    classifier.save(&out, dtype, &args.data, test_accuracy)?;
    if let Some(accuracy) = &accuracy {
        println!("test accuracy per class ({} images):\n{}", test_set.len(), accuracy.table().trim_end());
    }
    println!("wrote {} ({:?}, {:.0} s of training)", out.display(), dtype, started.elapsed().as_secs_f64());
    Ok(())
}

fn parse_dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => bail!("--dtype {other:?}: f16, bf16 or f32"),
    })
}

fn run_export(args: ExportArgs) -> Result<()> {
    let dtype = parse_dtype(&args.dtype)?;
    if ember::train::pipeline::is_pipeline_file(&args.checkpoint) {
        let pipeline = ember::train::pipeline::Txt2Img::load(&args.checkpoint)?;
        pipeline.save(&args.out, dtype)?;
        println!("wrote {} (the text-to-image pipeline, {:?}, {} parameters)", args.out.display(), dtype, parameter_count(&pipeline));
        return Ok(());
    }
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    checkpoint.export_ema(&args.out, dtype)?;
    println!("wrote {} (EMA weights of step {}, {:?})", args.out.display(), checkpoint.step, dtype);
    Ok(())
}

/// `writeln!` into a `String` (which cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        writeln!($out, $($arg)*).expect("writing to a String");
    }};
}

/// Writes `text` to stdout; a reader that went away (`ember info | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn run_info(args: InfoArgs) -> Result<()> {
    let config = args.model.config()?;
    let model = UNet::new(&config, DType::F32, &mut Rng::new(0))?;
    let total = parameter_count(&model);
    let mut out = String::new();
    outln!(out, "UNet ({}x{}x{} → {} channels)", config.in_channels, config.sample_size, config.sample_size, config.out_channels);
    let mut size = config.sample_size;
    for (i, (c, kind)) in config.block_out_channels.iter().zip(&config.down_block_types).enumerate() {
        outln!(out, "  level {i}: {size}x{size}x{c}  {kind} x{}", config.layers_per_block);
        if i + 1 < config.block_out_channels.len() {
            size /= 2;
        }
    }
    outln!(
        out,
        "  groups {} (eps {}), dropout {}, heads: {}, time embedding {} → {}",
        config.norm_num_groups,
        config.norm_eps,
        config.dropout,
        match (config.has_cross_attention(), config.attention_head_dim) {
            (true, Some(heads)) => format!("{heads} per transformer"),
            (_, Some(d)) => format!("{d} channels each"),
            (_, None) => "1 per block".to_string(),
        },
        config.block_out_channels[0],
        4 * config.block_out_channels[0]
    );
    let conditioning = match (config.class_embed_type.as_deref(), config.num_class_embeds) {
        (Some("timestep"), _) => "class labels through a timestep embedding (class_embed_type \"timestep\")".to_string(),
        (_, Some(n)) => format!("{n} class embeddings (num_class_embeds; with classifier-free guidance, the last is the null class)"),
        _ if config.has_cross_attention() => String::new(),
        _ => "none (unconditional)".to_string(),
    };
    let cross_attention = config.cross_attention_dim.map(|dim| {
        format!(
            "context tokens of {dim} dims, cross-attended by {} transformer block(s) after each CrossAttn resnet and in the middle ({} projections)",
            config.transformer_layers_per_block,
            if config.use_linear_projection { "linear" } else { "1×1 conv" }
        )
    });
    let conditioning = [Some(conditioning).filter(|c| !c.is_empty()), cross_attention].into_iter().flatten().collect::<Vec<_>>().join("; ");
    outln!(out, "  conditioning: {conditioning}");
    outln!(out, "parameters by part:");
    let class_parts = ClassEmbeddingPart(model.class_embedding.as_ref());
    let parts: [(&str, &dyn Module); 8] = [
        ("time_embedding", &ModuleGroup(vec![&model.time_linear_1, &model.time_linear_2])),
        ("class_embedding", &class_parts),
        ("conv_in", &model.conv_in),
        ("down_blocks", &ModuleGroup(model.down_blocks.iter().map(|b| b as &dyn Module).collect())),
        ("mid_block", &model.mid_block),
        ("up_blocks", &ModuleGroup(model.up_blocks.iter().map(|b| b as &dyn Module).collect())),
        ("conv_norm_out", &model.conv_norm_out),
        ("conv_out", &model.conv_out),
    ];
    for (name, part) in parts {
        outln!(out, "  {name:<15} {:>12}", thousands(parameter_count(part)));
    }
    outln!(
        out,
        "total parameters: {} ({:.1}M; {} tensors, {:.1} MB in f32)",
        thousands(total),
        total as f64 / 1e6,
        named_parameters(&model).len(),
        total as f64 * 4.0 / 1e6
    );
    write_stdout(&out)
}

/// A UNet's class embedding (none for an unconditional model), for counting its parameters.
struct ClassEmbeddingPart<'a>(Option<&'a ember::unet::ClassEmbedding>);

impl Module for ClassEmbeddingPart<'_> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &ember::tensor::Tensor)) {
        match self.0 {
            Some(ember::unet::ClassEmbedding::Table(table)) => f(format!("{prefix}weight"), table),
            Some(ember::unet::ClassEmbedding::Timestep(linear_1, linear_2)) => {
                linear_1.visit(&format!("{prefix}linear_1"), f);
                linear_2.visit(&format!("{prefix}linear_2"), f);
            }
            None => {}
        }
    }
}

/// Several modules counted together.
struct ModuleGroup<'a>(Vec<&'a dyn Module>);

impl Module for ModuleGroup<'_> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &ember::tensor::Tensor)) {
        for (i, m) in self.0.iter().enumerate() {
            m.visit(&format!("{prefix}{i}"), f);
        }
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
