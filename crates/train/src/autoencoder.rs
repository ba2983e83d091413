//! Training the autoencoder of latent diffusion (`ember train-vae`): the objective (a
//! reconstruction term plus β times the KL of the posterior to N(0, I), the negative ELBO up to
//! the reconstruction's weighting), the reconstruction quality it reports (PSNR on the test
//! split), the latent scaling factor measured from the data, and the stage that trains it on
//! composed canvases.

use std::path::Path;

use ember_tensor::optim::Adam;
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor, no_grad};
use ember_unet::{AutoencoderKL, VaeConfig};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{TrainingFile, TrainingState, save_training_state};
use crate::compose::{CANVAS_HEIGHT, CANVAS_WIDTH, ComposedData, Scene};
use crate::data::Split;
use crate::error::{Result, TrainError};
use crate::images::write_grid_png;
use crate::stage::{Stage, StageSettings};
use crate::trainer::{StepStats, TrainRngs};

/// One evaluation of the objective on a batch.
pub struct VaeLoss {
    /// `reconstruction + beta·kl`, differentiable.
    pub loss: Tensor,
    /// The mean squared error of the decoded sample against the input.
    pub reconstruction: f64,
    /// The mean over the batch of `KL(q(z|x) ‖ N(0, I))` (summed over each latent).
    pub kl: f64,
    /// The decoded sample (detached).
    pub decoded: Tensor,
}

/// `mse(decode(z), x) + beta·mean_b KL(q(z|x_b) ‖ N(0, I))` with `z = mean + std·ε`, ε drawn
/// from `rng` (the reparameterization, so the gradient reaches the encoder through both terms).
pub fn vae_loss(model: &AutoencoderKL, x: &Tensor, beta: f64, rng: &mut Rng) -> Result<VaeLoss> {
    let posterior = model.encode(x)?;
    let decoded = model.decode(&posterior.sample(rng)?)?;
    let reconstruction = decoded.mse_loss(x)?;
    let kl = posterior.kl()?.mean(&[0], false)?;
    let loss = reconstruction.add(&kl.mul_scalar(beta)?)?;
    Ok(VaeLoss { reconstruction: reconstruction.item()?, kl: kl.item()?, decoded: decoded.detach(), loss })
}

/// Peak signal-to-noise ratio in dB of images in [−1, 1] (a range of 2):
/// `10·log10(2² / mse)`, over all values of `reconstructed` against `original`; infinite for
/// identical images.
pub fn psnr(reconstructed: &Tensor, original: &Tensor) -> Result<f64> {
    let mse = reconstructed.detach().mse_loss(&original.detach())?.item()?;
    Ok(10.0 * (4.0 / mse).log10())
}

/// The VAE stage's checkpoint format.
pub const VAE_STAGE_FORMAT: &str = "ember-vae-stage-1";

/// Everything that defines a VAE training run (`ember train-vae`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeTrainConfig {
    /// The autoencoder; its `scaling_factor` is measured from the data during training.
    pub vae: VaeConfig,
    /// The weight of the KL term (small: the latents stay informative, and the scaling factor
    /// brings them to unit variance for the diffusion model).
    pub beta: f64,
    #[serde(flatten)]
    pub settings: StageSettings,
}

impl Default for VaeTrainConfig {
    fn default() -> Self {
        VaeTrainConfig { vae: VaeTrainConfig::small_vae(), beta: 1e-6, settings: StageSettings::default() }
    }
}

impl VaeTrainConfig {
    /// The autoencoder of the composed canvases: 64×32×1 → 16×8×4 latents (three levels of
    /// 16, 32, 64 channels, one residual block per level, 8 groups per GroupNorm).
    pub fn small_vae() -> VaeConfig {
        VaeConfig {
            in_channels: 1,
            out_channels: 1,
            block_out_channels: vec![16, 32, 64],
            down_block_types: vec![ember_unet::vae::DOWN_ENCODER_BLOCK.into(); 3],
            up_block_types: vec![ember_unet::vae::UP_DECODER_BLOCK.into(); 3],
            norm_num_groups: 8,
            latent_channels: 4,
            sample_size: serde_json::json!([CANVAS_HEIGHT, CANVAS_WIDTH]),
            scaling_factor: 1.0,
            ..VaeConfig::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.vae.validate()?;
        self.settings.validate()?;
        if self.vae.in_channels != 1 || self.vae.out_channels != 1 {
            return Err(TrainError::Config("the composed canvases have one channel: in_channels and out_channels must be 1".into()));
        }
        if !CANVAS_HEIGHT.is_multiple_of(self.vae.downsampling_factor()) || !CANVAS_WIDTH.is_multiple_of(self.vae.downsampling_factor()) {
            return Err(TrainError::Config(format!("{CANVAS_WIDTH}x{CANVAS_HEIGHT} canvases do not halve {} times", self.vae.block_out_channels.len() - 1)));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(TrainError::Config("beta must be ≥ 0".into()));
        }
        Ok(())
    }
}

/// Canvases measured at every preview: the test split's, always the same ones.
const TEST_CANVASES: usize = 256;
/// Training canvases whose latents give the scaling factor.
const SCALING_CANVASES: usize = 512;

/// The VAE training stage: reconstruction + β·KL on composed canvases, Adam, the test split's
/// PSNR and the latent scaling factor measured at each preview.
pub struct VaeStage {
    pub config: VaeTrainConfig,
    pub model: AutoencoderKL,
    pub adam: Adam,
    /// Steps completed.
    pub step: u64,
    /// Canvases (scenes, garments) are drawn from `data`, the posterior samples from `noise`.
    pub data: Rng,
    pub noise: Rng,
    train: ComposedData,
    test: ComposedData,
}

impl VaeStage {
    /// A new run, the model initialized from the seed.
    pub fn new(config: VaeTrainConfig) -> Result<VaeStage> {
        config.validate()?;
        let model = AutoencoderKL::new(&config.vae, DType::F32, &mut Rng::new(config.settings.seed))?;
        let adam = config.settings.optimizer(&model)?;
        let rngs = TrainRngs::new(config.settings.seed);
        let (train, test) = (config.settings.composed(Split::Train)?, config.settings.composed(Split::Test)?);
        Ok(VaeStage { config, model, adam, step: 0, data: rngs.data, noise: rngs.noise, train, test })
    }

    /// Continues the run saved at `path`, to `steps` if given (a run may be extended).
    pub fn resume(path: &Path, steps: Option<u64>) -> Result<VaeStage> {
        let file = TrainingFile::load(path, VAE_STAGE_FORMAT)?;
        let mut config: VaeTrainConfig = file.config()?;
        config.settings.steps = steps.unwrap_or(config.settings.steps);
        let mut stage = VaeStage::new(config)?;
        file.restore(&stage.model, None, &mut stage.adam)?;
        (stage.step, stage.data, stage.noise) = (file.step, file.rng("data")?, file.rng("noise")?);
        Ok(stage)
    }

    /// The trained autoencoder of a stage checkpoint (with the scaling factor it measured).
    pub fn load_model(path: &Path) -> Result<AutoencoderKL> {
        let file = TrainingFile::load(path, VAE_STAGE_FORMAT)?;
        let config: VaeTrainConfig = file.config()?;
        let model = AutoencoderKL::new(&config.vae, DType::F32, &mut Rng::new(0))?;
        file.load_into("model", &model)?;
        Ok(model)
    }

    /// The same test canvases at every call (their own stream).
    fn test_canvases(&self, n: usize) -> Result<Tensor> {
        let mut rng = Rng::new(self.config.settings.seed ^ (7 << 40));
        let scenes: Vec<Scene> = (0..n).map(|_| self.test.training_scene(&mut rng)).collect();
        self.test.render_batch(&scenes, &mut rng)
    }

    /// The PSNR (dB) of the test canvases decoded from their posterior means.
    pub fn test_psnr(&self) -> Result<f64> {
        let _guard = no_grad();
        let x = self.test_canvases(TEST_CANVASES)?;
        let decoded = self.model.decode(&self.model.encode(&x)?.mean)?;
        psnr(&decoded, &x)
    }

    /// Stable Diffusion's latent scaling factor measured here: `1/std` of the posterior samples
    /// of training canvases (Rombach et al. 2022, appendix: "we rescale the latents by the
    /// component-wise standard deviation"; 0.18215 for SD's VAE), so that the diffusion model
    /// sees latents of unit variance.
    pub fn measure_scaling_factor(&self) -> Result<f64> {
        let _guard = no_grad();
        let mut rng = Rng::new(self.config.settings.seed ^ (8 << 40));
        let (x, _, _) = self.train.training_batch(SCALING_CANVASES, DType::F32, &mut rng)?;
        let z = self.model.encode(&x)?.sample(&mut rng)?;
        let values = z.to_vec_f64();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        Ok(1.0 / variance.sqrt().max(1e-12))
    }
}

impl Stage for VaeStage {
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
        let (x, _, _) = self.train.training_batch(self.config.settings.batch_size, DType::F32, &mut self.data)?;
        let objective = vae_loss(&self.model, &x, self.config.beta, &mut self.noise)?;
        let stats = self.config.settings.minimize(&mut self.adam, &objective.loss, self.step)?;
        self.step += 1;
        Ok(stats)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let state = TrainingState {
            format: VAE_STAGE_FORMAT,
            model: &self.model,
            ema: None,
            frozen: Vec::new(),
            adam: &self.adam,
            step: self.step,
            rngs: vec![("data", &self.data), ("noise", &self.noise)],
            config_json: self.config_json(),
        };
        save_training_state(&state, path)
    }

    /// Test canvases over their reconstructions; measures the test PSNR and the scaling
    /// factor (kept in the config, so the checkpoint that follows carries it).
    fn preview(&mut self, image: &Path) -> Result<Vec<(String, f64)>> {
        let scaling_factor = self.measure_scaling_factor()?;
        self.config.vae.scaling_factor = scaling_factor;
        self.model.config.scaling_factor = scaling_factor;
        let x = self.test_canvases(8)?;
        let decoded = {
            let _guard = no_grad();
            self.model.decode(&self.model.encode(&x)?.mean)?
        };
        write_grid_png(image, &Tensor::cat(&[&x, &decoded], 0)?, 8)?;
        Ok(vec![("test_psnr".into(), self.test_psnr()?), ("scaling_factor".into(), scaling_factor)])
    }
}
