//! The variational autoencoder of latent diffusion (Kingma & Welling 2014; Rombach et al.
//! 2022), in the layout and parameter names of diffusers' `AutoencoderKL`: an encoder maps an
//! image to the mean and log-variance of a diagonal Gaussian over latents `h/2^(L−1) × w/2^(L−1)`
//! (L levels), a decoder maps a latent back to an image. Trained with reconstruction + β·KL.
//!
//! - Encoder: `conv_in` → `DownEncoderBlock2D`s (resnets without time embedding, a stride-2
//!   downsampler padded right and bottom, except at the last level) → mid block (resnet →
//!   single-head self-attention → resnet) → GroupNorm → SiLU → `conv_out` (2·latent channels)
//!   → `quant_conv` (1×1).
//! - Posterior ([`DiagonalGaussian`]): `[mean, logvar]` split on channels, `logvar` clamped to
//!   [−30, 20]; a sample is `mean + exp(logvar/2)·ε`; `KL(q ‖ N(0, I)) =
//!   ½ Σ (mean² + exp(logvar) − 1 − logvar)` per image.
//! - Decoder: `post_quant_conv` (1×1) → `conv_in` → mid block → `UpDecoderBlock2D`s (one more
//!   resnet per level than the encoder, nearest ×2 + conv upsampler except at the last level)
//!   → GroupNorm → SiLU → `conv_out`.

use ember_tensor::ops::conv::Conv2dParams;
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor, TensorError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::blocks::{AttentionBlock, BlockSettings, DownBlock, Downsample, MidBlock, ResnetBlock, SpatialAttention, Upsample};
use crate::config::{json_object, with_defaults};
use crate::error::{Result, UNetError};
use crate::layers::{Conv2d, GroupNorm};
use crate::module::{ForwardContext, Module, join, visit_list};

/// diffusers' model class of the config (`_class_name`).
pub const AUTOENCODER_KL: &str = "AutoencoderKL";
pub const DOWN_ENCODER_BLOCK: &str = "DownEncoderBlock2D";
pub const UP_DECODER_BLOCK: &str = "UpDecoderBlock2D";
/// The epsilon of every group norm in the encoder and decoder (diffusers fixes it).
const VAE_NORM_EPS: f64 = 1e-6;

/// The autoencoder's architecture, in the fields of diffusers' `AutoencoderKL` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    #[serde(rename = "_class_name")]
    pub model_class: String,
    pub in_channels: usize,
    pub out_channels: usize,
    /// One per level, from the top: [`DOWN_ENCODER_BLOCK`].
    pub down_block_types: Vec<String>,
    /// One per level, from the bottom: [`UP_DECODER_BLOCK`].
    pub up_block_types: Vec<String>,
    /// Channels of each level, from the top (full resolution) down.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level (the decoder has one more).
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// The image size diffusers tiles by (a number or `[h, w]`); ember's model is fully
    /// convolutional and keeps it only to write it back.
    pub sample_size: Value,
    /// Latents are scaled by this before diffusion (`(z − shift_factor)·scaling_factor`, or
    /// `(z − latents_mean[c])·scaling_factor/latents_std[c]` with per-channel statistics), so
    /// that they have about unit variance (Stable Diffusion's 0.18215).
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    /// A precision switch of diffusers (decode in f32 when the model is f16); no effect here.
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    /// Per-channel latent statistics (SDXL's): given together, one per latent channel, in
    /// place of `shift_factor`.
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
}

/// diffusers' own defaults of `AutoencoderKL.__init__` (diffusers 0.42): one level of 64
/// channels, RGB, 4 latent channels, 32 groups.
impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            model_class: AUTOENCODER_KL.into(),
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DOWN_ENCODER_BLOCK.into()],
            up_block_types: vec![UP_DECODER_BLOCK.into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: Value::from(32),
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            latents_mean: None,
            latents_std: None,
        }
    }
}

impl VaeConfig {
    /// Parses a diffusers `config.json` of an `AutoencoderKL`; missing keys take diffusers'
    /// defaults, unknown keys are ignored, what ember does not build is refused.
    pub fn from_json(text: &str) -> Result<VaeConfig> {
        let config = with_defaults(&VaeConfig::default(), json_object(text)?)?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }

    /// The factor between the image's side and the latent's: `2^(levels − 1)`.
    pub fn downsampling_factor(&self) -> usize {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }

    /// Checks what the builder relies on, naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(UNetError::Config(msg));
        let levels = self.block_out_channels.len();
        if self.model_class != AUTOENCODER_KL {
            return fail(format!("_class_name {:?}: expected {AUTOENCODER_KL:?}", self.model_class));
        }
        if levels == 0 || levels > 16 {
            return fail(format!("{levels} levels in block_out_channels: 1 to 16 are supported"));
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return fail(format!("{levels} levels, but {} down and {} up block types", self.down_block_types.len(), self.up_block_types.len()));
        }
        if let Some(t) = self.down_block_types.iter().find(|t| *t != DOWN_ENCODER_BLOCK) {
            return fail(format!("unsupported down block type {t:?} (supported: {DOWN_ENCODER_BLOCK:?})"));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != UP_DECODER_BLOCK) {
            return fail(format!("unsupported up block type {t:?} (supported: {UP_DECODER_BLOCK:?})"));
        }
        if [self.in_channels, self.out_channels, self.latent_channels].contains(&0) || self.block_out_channels.contains(&0) {
            return fail("channel counts must be positive".into());
        }
        if let Some(&c) = self.block_out_channels.iter().find(|&&c| self.norm_num_groups == 0 || c % self.norm_num_groups != 0) {
            return fail(format!("{c} channels do not split into {} groups", self.norm_num_groups));
        }
        if self.layers_per_block == 0 {
            return fail("layers_per_block must be at least 1".into());
        }
        if self.act_fn != "silu" {
            return fail(format!("act_fn {:?}: only \"silu\" is supported", self.act_fn));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return fail(format!("scaling_factor {} must be positive", self.scaling_factor));
        }
        match (&self.latents_mean, &self.latents_std) {
            (None, None) => {}
            (Some(mean), Some(std)) => {
                if mean.len() != self.latent_channels || std.len() != self.latent_channels {
                    return fail(format!("latents_mean and latents_std need one value per latent channel ({})", self.latent_channels));
                }
                if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
                    return fail("latents_std must be positive and latents_mean finite".into());
                }
                if self.shift_factor.is_some() {
                    return fail("shift_factor and latents_mean / latents_std both shift the latents: give one".into());
                }
            }
            _ => return fail("latents_mean and latents_std go together".into()),
        }
        Ok(())
    }
}

/// The posterior `q(z | x) = N(mean, diag(exp(logvar)))` (diffusers
/// `DiagonalGaussianDistribution`), both `[B, latent_channels, h, w]`.
pub struct DiagonalGaussian {
    pub mean: Tensor,
    /// Clamped to [−30, 20], as diffusers does.
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// Splits the encoder's moments `[B, 2·C, h, w]` into mean and log-variance.
    pub fn from_moments(moments: &Tensor) -> Result<DiagonalGaussian> {
        let channels = moments.shape()[1] / 2;
        Ok(DiagonalGaussian { mean: moments.narrow(1, 0, channels)?, logvar: moments.narrow(1, channels, channels)?.clamp(-30.0, 20.0)? })
    }

    /// `mean + exp(logvar/2)·eps` for a standard normal `eps` of the mean's shape (the
    /// reparameterization: differentiable in mean and logvar).
    pub fn sample_with(&self, eps: &Tensor) -> Result<Tensor> {
        Ok(self.mean.add(&self.logvar.mul_scalar(0.5)?.exp()?.mul(eps)?)?)
    }

    /// A sample with `eps` drawn from `rng`.
    pub fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
        let eps = Tensor::randn(self.mean.shape(), 0.0, 1.0, self.mean.dtype(), rng).to_device(self.mean.device())?;
        self.sample_with(&eps)
    }

    /// `KL(q ‖ N(0, I)) = ½ Σ (mean² + exp(logvar) − 1 − logvar)` over each image's latent: `[B]`.
    pub fn kl(&self) -> Result<Tensor> {
        let terms = self.mean.sqr()?.add(&self.logvar.exp()?)?.sub(&self.logvar)?.add_scalar(-1.0)?;
        Ok(terms.sum(&[1, 2, 3], false)?.mul_scalar(0.5)?)
    }
}

/// One level of the decoder (diffusers `UpDecoderBlock2D`): resnets (no skip connections),
/// then an optional upsampler.
pub struct UpDecoderBlock {
    pub resnets: Vec<ResnetBlock>,
    pub upsampler: Option<Upsample>,
}

impl Module for UpDecoderBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_list(&self.resnets, &join(prefix, "resnets"), f);
        if let Some(up) = &self.upsampler {
            up.visit(&join(prefix, "upsamplers.0"), f);
        }
    }
}

/// diffusers `Encoder`: image → the posterior's moments (before `quant_conv`).
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

/// diffusers `Decoder`: latent (after `post_quant_conv`) → image.
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpDecoderBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

pub struct AutoencoderKL {
    pub config: VaeConfig,
    pub dtype: DType,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
}

/// The mid block of the encoder and the decoder: resnet → single-head attention → resnet.
fn mid_block(channels: usize, add_attention: bool, s: &BlockSettings, rng: &mut Rng) -> Result<MidBlock> {
    if !add_attention {
        return Err(UNetError::Config("mid_block_add_attention = false is not supported".into()));
    }
    Ok(MidBlock {
        resnets: [ResnetBlock::new(channels, channels, s, rng)?, ResnetBlock::new(channels, channels, s, rng)?],
        attention: SpatialAttention::SelfAttention(AttentionBlock::new(channels, Some(channels), s, rng)?),
    })
}

impl AutoencoderKL {
    /// A freshly initialized autoencoder (PyTorch's default inits, from `rng`).
    pub fn new(config: &VaeConfig, dtype: DType, rng: &mut Rng) -> Result<AutoencoderKL> {
        config.validate()?;
        let channels = &config.block_out_channels;
        let levels = channels.len();
        let (c_first, c_last, latent) = (channels[0], channels[levels - 1], config.latent_channels);
        let s = BlockSettings { groups: config.norm_num_groups, eps: VAE_NORM_EPS, temb_channels: None, dropout: 0.0, dtype };
        let same = Conv2dParams::new(1, 1);

        let mut down_blocks = Vec::with_capacity(levels);
        let mut output_channel = c_first;
        for (i, &c) in channels.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = c;
            let resnets = (0..config.layers_per_block)
                .map(|j| ResnetBlock::new(if j == 0 { input_channel } else { output_channel }, output_channel, &s, rng))
                .collect::<Result<Vec<_>>>()?;
            let downsampler = if i + 1 < levels { Some(Downsample::new(output_channel, 0, dtype, rng)?) } else { None };
            down_blocks.push(DownBlock { resnets, attentions: Vec::new(), downsampler });
        }
        let encoder = Encoder {
            conv_in: Conv2d::new(config.in_channels, c_first, 3, same, dtype, rng)?,
            down_blocks,
            mid_block: mid_block(c_last, config.mid_block_add_attention, &s, rng)?,
            conv_norm_out: GroupNorm::new(config.norm_num_groups, c_last, VAE_NORM_EPS, dtype),
            conv_out: Conv2d::new(c_last, 2 * latent, 3, same, dtype, rng)?,
        };

        let decoder_conv_in = Conv2d::new(latent, c_last, 3, same, dtype, rng)?;
        let decoder_mid = mid_block(c_last, config.mid_block_add_attention, &s, rng)?;
        let mut up_blocks = Vec::with_capacity(levels);
        let mut output_channel = c_last;
        for (i, &c) in channels.iter().rev().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = c;
            let resnets = (0..config.layers_per_block + 1)
                .map(|j| ResnetBlock::new(if j == 0 { prev_output_channel } else { output_channel }, output_channel, &s, rng))
                .collect::<Result<Vec<_>>>()?;
            let upsampler = if i + 1 < levels { Some(Upsample::new(output_channel, false, dtype, rng)?) } else { None };
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
        }
        let decoder = Decoder {
            conv_in: decoder_conv_in,
            mid_block: decoder_mid,
            up_blocks,
            conv_norm_out: GroupNorm::new(config.norm_num_groups, c_first, VAE_NORM_EPS, dtype),
            conv_out: Conv2d::new(c_first, config.out_channels, 3, same, dtype, rng)?,
        };
        let one_by_one = |c: usize, rng: &mut Rng| Conv2d::new(c, c, 1, Conv2dParams::default(), dtype, rng);
        let quant_conv = if config.use_quant_conv { Some(one_by_one(2 * latent, rng)?) } else { None };
        let post_quant_conv = if config.use_post_quant_conv { Some(one_by_one(latent, rng)?) } else { None };
        Ok(AutoencoderKL { config: config.clone(), dtype, encoder, decoder, quant_conv, post_quant_conv })
    }

    /// The posterior over latents of images `x [B, in_channels, H, W]` (H and W multiples of
    /// the downsampling factor).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussian> {
        let c = &self.config;
        self.check_input("AutoencoderKL::encode", x, c.in_channels, c.downsampling_factor())?;
        let mut ctx = no_dropout_context();
        let mut h = self.encoder.conv_in.forward(x)?;
        for block in &self.encoder.down_blocks {
            // the encoder keeps no skip connections
            h = block.forward(&h, None, None, &mut ctx.context(), &mut Vec::new())?;
        }
        h = self.encoder.mid_block.forward(&h, None, None, &mut ctx.context())?;
        let mut moments = self.encoder.conv_out.forward(&self.encoder.conv_norm_out.forward_silu(&h)?)?;
        if let Some(conv) = &self.quant_conv {
            moments = conv.forward(&moments)?;
        }
        DiagonalGaussian::from_moments(&moments)
    }

    /// Images from latents `z [B, latent_channels, h, w]`: `[B, out_channels, h·f, w·f]`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.check_input("AutoencoderKL::decode", z, self.config.latent_channels, 1)?;
        let mut ctx = no_dropout_context();
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z)?,
            None => z.clone(),
        };
        let mut h = self.decoder.conv_in.forward(&z)?;
        h = self.decoder.mid_block.forward(&h, None, None, &mut ctx.context())?;
        for block in &self.decoder.up_blocks {
            for resnet in &block.resnets {
                h = resnet.forward(&h, None, &mut ctx.context())?;
            }
            if let Some(up) = &block.upsampler {
                h = up.forward(&h)?;
            }
        }
        self.decoder.conv_out.forward(&self.decoder.conv_norm_out.forward_silu(&h)?)
    }

    /// Latents as the diffusion model sees them: `(z − shift_factor)·scaling_factor`.
    /// With per-channel statistics, `(z − latents_mean[c])·scaling_factor/latents_std[c]`.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        match self.channel_statistics(z)? {
            Some((mean, std)) => Ok(z.sub(&mean)?.div(&std)?.mul_scalar(self.config.scaling_factor)?),
            None => Ok(z.add_scalar(-self.config.shift_factor.unwrap_or(0.0))?.mul_scalar(self.config.scaling_factor)?),
        }
    }

    /// The inverse of [`AutoencoderKL::scale_latents`], before [`AutoencoderKL::decode`].
    pub fn unscale_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let unscaled = latents.mul_scalar(1.0 / self.config.scaling_factor)?;
        match self.channel_statistics(latents)? {
            Some((mean, std)) => Ok(unscaled.mul(&std)?.add(&mean)?),
            None => Ok(unscaled.add_scalar(self.config.shift_factor.unwrap_or(0.0))?),
        }
    }

    /// `latents_mean` and `latents_std` as `[1, C, 1, 1]` tensors in `like`'s dtype and device.
    fn channel_statistics(&self, like: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        let (Some(mean), Some(std)) = (&self.config.latents_mean, &self.config.latents_std) else { return Ok(None) };
        let per_channel =
            |values: &[f64]| -> Result<Tensor> { Ok(Tensor::from_f64(values, &[1, values.len(), 1, 1], like.dtype())?.to_device(like.device())?) };
        Ok(Some((per_channel(mean)?, per_channel(std)?)))
    }

    fn check_input(&self, op: &'static str, x: &Tensor, channels: usize, factor: usize) -> Result<()> {
        let shape = x.shape();
        if shape.len() != 4 || shape[1] != channels || shape[2] == 0 || shape[3] == 0 || !shape[2].is_multiple_of(factor) || !shape[3].is_multiple_of(factor) {
            return Err(TensorError::InvalidArgument {
                op,
                msg: format!("expected [B, {channels}, H, W] with H and W positive multiples of {factor}, got {shape:?}"),
            }
            .into());
        }
        Ok(())
    }
}

/// The forward context of the VAE's blocks: never training and with no dropout, so its random
/// stream is never drawn from.
struct NoDropout(Rng);

fn no_dropout_context() -> NoDropout {
    NoDropout(Rng::new(0))
}

impl NoDropout {
    fn context(&mut self) -> ForwardContext<'_> {
        ForwardContext { training: false, rng: &mut self.0 }
    }
}

impl Module for Encoder {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.conv_in.visit(&join(prefix, "conv_in"), f);
        visit_list(&self.down_blocks, &join(prefix, "down_blocks"), f);
        self.mid_block.visit(&join(prefix, "mid_block"), f);
        self.conv_norm_out.visit(&join(prefix, "conv_norm_out"), f);
        self.conv_out.visit(&join(prefix, "conv_out"), f);
    }
}

impl Module for Decoder {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.conv_in.visit(&join(prefix, "conv_in"), f);
        self.mid_block.visit(&join(prefix, "mid_block"), f);
        visit_list(&self.up_blocks, &join(prefix, "up_blocks"), f);
        self.conv_norm_out.visit(&join(prefix, "conv_norm_out"), f);
        self.conv_out.visit(&join(prefix, "conv_out"), f);
    }
}

impl Module for AutoencoderKL {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.encoder.visit(&join(prefix, "encoder"), f);
        self.decoder.visit(&join(prefix, "decoder"), f);
        if let Some(conv) = &self.quant_conv {
            conv.visit(&join(prefix, "quant_conv"), f);
        }
        if let Some(conv) = &self.post_quant_conv {
            conv.visit(&join(prefix, "post_quant_conv"), f);
        }
    }
}
