//! The DDPM UNet (diffusers `UNet2DModel` with positional time embedding): time embedding →
//! `conv_in` → down blocks (keeping skips) → mid block → up blocks (consuming skips) →
//! GroupNorm → SiLU → `conv_out`. It predicts the noise ε in an image at timestep t, optionally
//! given a class label (added to the time embedding) or, as diffusers' `UNet2DConditionModel`
//! (Stable Diffusion's UNet), context tokens its transformers cross-attend to.

use ember_tensor::ops::conv::Conv2dParams;
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor, TensorError};

use crate::blocks::{AttentionBlock, BlockSettings, DownBlock, Downsample, EncoderStates, MidBlock, ResnetBlock, SpatialAttention, UpBlock, Upsample};
use crate::config::{ATTN_DOWN_BLOCK, ATTN_UP_BLOCK, CROSS_ATTN_DOWN_BLOCK, CROSS_ATTN_UP_BLOCK, UNetConfig};
use crate::error::Result;
use crate::layers::{Conv2d, GroupNorm, Linear};
use crate::module::{ForwardContext, Module, join, visit_list};
use crate::transformer::{Transformer2D, TransformerSettings};

/// The sinusoidal embedding of timesteps (diffusers `get_timestep_embedding`):
/// `fᵢ = exp(−ln(10000)·i / (half − freq_shift))`, `emb = [sin(t·f), cos(t·f)]` (or
/// `[cos, sin]` when flipped), shape `[len(t), dim]`. Like diffusers, it is computed in f32
/// whatever the model's dtype (with PyTorch's order of operations, so the values agree to the
/// last bits), then converted to `dtype`.
pub fn timestep_embedding(timesteps: &[f64], dim: usize, flip_sin_to_cos: bool, freq_shift: f64, dtype: DType) -> Result<Tensor> {
    let half = dim / 2;
    let mut values = vec![0.0f64; timesteps.len() * dim];
    for (row, &t) in values.chunks_exact_mut(dim).zip(timesteps) {
        for i in 0..half {
            let exponent = (-(10000f64.ln()) as f32 * i as f32) / (half as f32 - freq_shift as f32);
            let arg = t as f32 * exponent.exp();
            let (sin, cos) = (arg.sin() as f64, arg.cos() as f64);
            let (first, second) = if flip_sin_to_cos { (cos, sin) } else { (sin, cos) };
            row[i] = first;
            row[half + i] = second;
        }
    }
    Ok(Tensor::from_f64(&values, &[timesteps.len(), dim], dtype)?)
}

/// How a class label enters a class-conditional UNet: as an embedding added to the time
/// embedding (diffusers `UNet2DModel`'s `class_embedding`, chosen by `class_embed_type`).
pub enum ClassEmbedding {
    /// `class_embed_type` null with `num_class_embeds`: a learned row per class,
    /// `class_embedding.weight` `[num_class_embeds, 4·c0]` (`nn.Embedding`, init N(0, 1)).
    Table(Tensor),
    /// `class_embed_type` "timestep": the label's sinusoidal embedding (as a timestep's) through
    /// `class_embedding.linear_1` → SiLU → `class_embedding.linear_2` (a `TimestepEmbedding`).
    Timestep(Linear, Linear),
}

pub struct UNet {
    pub config: UNetConfig,
    pub dtype: DType,
    pub time_linear_1: Linear,
    pub time_linear_2: Linear,
    /// Present in class-conditional models.
    pub class_embedding: Option<ClassEmbedding>,
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl UNet {
    /// A freshly initialized model (PyTorch's default inits, from `rng`).
    pub fn new(config: &UNetConfig, dtype: DType, rng: &mut Rng) -> Result<UNet> {
        config.validate()?;
        let channels = &config.block_out_channels;
        let levels = channels.len();
        let c0 = channels[0];
        let temb_channels = 4 * c0;
        let s = BlockSettings { groups: config.norm_num_groups, eps: config.norm_eps, temb_channels: Some(temb_channels), dropout: config.dropout, dtype };
        let same = Conv2dParams::new(1, 1);
        // the attention after a resnet of `channels`: self-attention (UNet2DModel's Attn
        // blocks, heads of `attention_head_dim` channels) or a transformer (UNet2DConditionModel,
        // `attention_head_dim` heads, as diffusers reads it)
        let attention = |channels: usize, cross: bool, rng: &mut Rng| -> Result<SpatialAttention> {
            Ok(if cross {
                let heads = config.attention_head_dim.expect("validated: a UNet2DConditionModel has attention_head_dim");
                let settings = TransformerSettings {
                    channels,
                    heads,
                    context_dim: config.cross_attention_dim.expect("validated: a UNet2DConditionModel has cross_attention_dim"),
                    layers: config.transformer_layers_per_block,
                    norm_groups: config.norm_num_groups,
                    linear_projection: config.use_linear_projection,
                };
                SpatialAttention::Transformer(Transformer2D::new(&settings, dtype, rng)?)
            } else {
                SpatialAttention::SelfAttention(AttentionBlock::new(channels, config.attention_head_dim, &s, rng)?)
            })
        };

        let mut down_blocks = Vec::with_capacity(levels);
        let mut output_channel = c0;
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = channels[i];
            let resnets = (0..config.layers_per_block)
                .map(|j| ResnetBlock::new(if j == 0 { input_channel } else { output_channel }, output_channel, &s, rng))
                .collect::<Result<Vec<_>>>()?;
            let attentions = if kind == ATTN_DOWN_BLOCK || kind == CROSS_ATTN_DOWN_BLOCK {
                (0..config.layers_per_block).map(|_| attention(output_channel, kind == CROSS_ATTN_DOWN_BLOCK, rng)).collect::<Result<_>>()?
            } else {
                Vec::new()
            };
            let downsampler = if i + 1 < levels { Some(Downsample::new(output_channel, config.downsample_padding, dtype, rng)?) } else { None };
            down_blocks.push(DownBlock { resnets, attentions, downsampler });
        }

        let c_last = channels[levels - 1];
        let mid_block = MidBlock {
            resnets: [ResnetBlock::new(c_last, c_last, &s, rng)?, ResnetBlock::new(c_last, c_last, &s, rng)?],
            attention: attention(c_last, config.has_cross_attention(), rng)?,
        };

        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(levels);
        let mut output_channel = reversed[0];
        let layers = config.layers_per_block + 1;
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = reversed[i];
            let input_channel = reversed[(i + 1).min(levels - 1)];
            let resnets = (0..layers)
                .map(|j| {
                    let skip_channels = if j + 1 == layers { input_channel } else { output_channel };
                    let resnet_in = if j == 0 { prev_output_channel } else { output_channel };
                    ResnetBlock::new(resnet_in + skip_channels, output_channel, &s, rng)
                })
                .collect::<Result<Vec<_>>>()?;
            let attentions = if kind == ATTN_UP_BLOCK || kind == CROSS_ATTN_UP_BLOCK {
                (0..layers).map(|_| attention(output_channel, kind == CROSS_ATTN_UP_BLOCK, rng)).collect::<Result<_>>()?
            } else {
                Vec::new()
            };
            let transposed = config.upsample_type == "conv_transpose";
            let upsampler = if i + 1 < levels { Some(Upsample::new(output_channel, transposed, dtype, rng)?) } else { None };
            up_blocks.push(UpBlock { resnets, attentions, upsampler });
        }

        let time_linear_1 = Linear::new(c0, temb_channels, dtype, rng)?;
        let time_linear_2 = Linear::new(temb_channels, temb_channels, dtype, rng)?;
        let class_embedding = match (config.class_embed_type.as_deref(), config.num_class_embeds) {
            (Some("timestep"), _) => {
                Some(ClassEmbedding::Timestep(Linear::new(c0, temb_channels, dtype, rng)?, Linear::new(temb_channels, temb_channels, dtype, rng)?))
            }
            (None, Some(classes)) => Some(ClassEmbedding::Table(Tensor::randn(&[classes, temb_channels], 0.0, 1.0, dtype, rng).variable())),
            _ => None,
        };
        Ok(UNet {
            config: config.clone(),
            dtype,
            time_linear_1,
            time_linear_2,
            class_embedding,
            conv_in: Conv2d::new(config.in_channels, c0, 3, same, dtype, rng)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(config.norm_num_groups, c0, config.norm_eps, dtype),
            conv_out: Conv2d::new(c0, config.out_channels, 3, same, dtype, rng)?,
        })
    }

    /// Predicts the noise in `x [B, in_channels, H, W]` at `timesteps` (one per image), for an
    /// unconditional model ([`UNet::forward_with_classes`] for a class-conditional one).
    pub fn forward(&self, x: &Tensor, timesteps: &[f64], ctx: &mut ForwardContext) -> Result<Tensor> {
        self.forward_with_classes(x, timesteps, None, ctx)
    }

    /// The number of classes a class-conditional model with a table of class embeddings takes
    /// (`None` for other models: unconditional, or "timestep" embeddings, which take any label).
    pub fn num_classes(&self) -> Option<usize> {
        match &self.class_embedding {
            Some(ClassEmbedding::Table(table)) => Some(table.shape()[0]),
            _ => None,
        }
    }

    /// [`UNet::forward`] with one class label per image (`classes`, required exactly when the
    /// model is class-conditional): the label's embedding is added to the time embedding that
    /// every residual block receives, as in diffusers' `UNet2DModel(class_labels=…)`.
    pub fn forward_with_classes(&self, x: &Tensor, timesteps: &[f64], classes: Option<&[usize]>, ctx: &mut ForwardContext) -> Result<Tensor> {
        self.forward_conditioned(x, timesteps, &Condition { classes, encoder: None }, ctx)
    }

    /// [`UNet::forward`] given everything the model is conditioned on: class labels (see
    /// [`UNet::forward_with_classes`]) and, for a cross-attention model (required exactly
    /// there), the context tokens `[B, S, cross_attention_dim]` with an optional mask `[B, S]`
    /// (1 attend, 0 padding; every sample keeps at least one token), as diffusers'
    /// `UNet2DConditionModel(sample, t, encoder_hidden_states, encoder_attention_mask=…)`.
    pub fn forward_conditioned(&self, x: &Tensor, timesteps: &[f64], condition: &Condition, ctx: &mut ForwardContext) -> Result<Tensor> {
        let classes = condition.classes;
        let c = &self.config;
        let shape = x.shape();
        let factor = 1 << (c.block_out_channels.len() - 1);
        if shape.len() != 4 || shape[1] != c.in_channels || !shape[2].is_multiple_of(factor) || !shape[3].is_multiple_of(factor) {
            return Err(TensorError::InvalidArgument {
                op: "UNet::forward",
                msg: format!("expected [B, {}, H, W] with H and W multiples of {factor}, got {shape:?}", c.in_channels),
            }
            .into());
        }
        if timesteps.len() != shape[0] {
            return Err(TensorError::InvalidArgument { op: "UNet::forward", msg: format!("{} timesteps for a batch of {}", timesteps.len(), shape[0]) }.into());
        }
        let t_emb = timestep_embedding(timesteps, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift, x.dtype())?.to_device(x.device())?;
        let mut temb = self.time_linear_2.forward(&self.time_linear_1.forward(&t_emb)?.silu()?)?;
        let invalid = |msg: String| -> crate::UNetError { TensorError::InvalidArgument { op: "UNet::forward", msg }.into() };
        match (&self.class_embedding, classes) {
            (None, None) => {}
            (None, Some(_)) => return Err(invalid("class labels given to a model without a class embedding (num_class_embeds / class_embed_type)".into())),
            (Some(_), None) => return Err(invalid("this model is class-conditional: give one class label per image".into())),
            (Some(embedding), Some(classes)) => {
                if classes.len() != shape[0] {
                    return Err(invalid(format!("{} class labels for a batch of {}", classes.len(), shape[0])));
                }
                let class_emb = match embedding {
                    ClassEmbedding::Table(table) => {
                        if let Some(&bad) = classes.iter().find(|&&c| c >= table.shape()[0]) {
                            return Err(invalid(format!("class label {bad} is out of range for {} classes", table.shape()[0])));
                        }
                        table.embedding(classes)?
                    }
                    ClassEmbedding::Timestep(linear_1, linear_2) => {
                        let labels: Vec<f64> = classes.iter().map(|&c| c as f64).collect();
                        let sinusoid =
                            timestep_embedding(&labels, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift, x.dtype())?.to_device(x.device())?;
                        linear_2.forward(&linear_1.forward(&sinusoid)?.silu()?)?
                    }
                };
                temb = temb.add(&class_emb)?;
            }
        }

        let encoder = self.checked_encoder_states(condition.encoder.as_ref(), x)?;
        let encoder = encoder.as_ref().map(|(hidden_states, mask)| EncoderStates { hidden_states, attention_mask: mask.as_ref() });
        let encoder = encoder.as_ref();

        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(&h, Some(&temb), encoder, ctx, &mut skips)?;
        }
        h = self.mid_block.forward(&h, Some(&temb), encoder, ctx)?;
        for block in &self.up_blocks {
            h = block.forward(&h, Some(&temb), encoder, ctx, &mut skips)?;
        }
        debug_assert!(skips.is_empty());
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
    }
}

impl UNet {
    /// The context tokens and mask of `encoder`, checked against the model and the batch of
    /// `x` and moved to its dtype and device; `None` for a model without cross-attention.
    fn checked_encoder_states(&self, encoder: Option<&EncoderStates>, x: &Tensor) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let invalid = |msg: String| -> crate::UNetError { TensorError::InvalidArgument { op: "UNet::forward", msg }.into() };
        let batch = x.shape()[0];
        let encoder = match (self.config.cross_attention_dim, encoder) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err(invalid("encoder hidden states given to a model without cross-attention (a UNet2DModel)".into())),
            (Some(_), None) => {
                return Err(invalid("this model cross-attends to context tokens: give encoder hidden states [B, S, cross_attention_dim]".into()));
            }
            (Some(dim), Some(encoder)) => {
                let shape = encoder.hidden_states.shape();
                if shape.len() != 3 || shape[0] != batch || shape[1] == 0 || shape[2] != dim {
                    return Err(invalid(format!("encoder hidden states of shape {shape:?}, expected [{batch}, S ≥ 1, {dim}]")));
                }
                encoder
            }
        };
        let tokens = encoder.hidden_states.shape()[1];
        let mask = match encoder.attention_mask {
            None => None,
            Some(mask) => {
                if mask.shape() != [batch, tokens] {
                    return Err(invalid(format!("encoder attention mask of shape {:?}, expected [{batch}, {tokens}]", mask.shape())));
                }
                let values = mask.to_vec_f64();
                if let Some(sample) = values.chunks(tokens).position(|row| row.iter().all(|&m| m == 0.0)) {
                    return Err(invalid(format!("the encoder attention mask of sample {sample} hides every context token")));
                }
                Some(mask.detach().to_dtype(x.dtype())?.to_device(x.device())?)
            }
        };
        Ok(Some((encoder.hidden_states.to_dtype(x.dtype())?.to_device(x.device())?, mask)))
    }
}

/// What a UNet is conditioned on besides the timestep (see [`UNet::forward_conditioned`]).
#[derive(Clone, Copy, Default)]
pub struct Condition<'a> {
    /// One class label per image, for a class-conditional model.
    pub classes: Option<&'a [usize]>,
    /// Context tokens (and their mask), for a cross-attention model.
    pub encoder: Option<EncoderStates<'a>>,
}

impl Module for UNet {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.time_linear_1.visit(&join(prefix, "time_embedding.linear_1"), f);
        self.time_linear_2.visit(&join(prefix, "time_embedding.linear_2"), f);
        match &self.class_embedding {
            Some(ClassEmbedding::Table(table)) => f(join(prefix, "class_embedding.weight"), table),
            Some(ClassEmbedding::Timestep(linear_1, linear_2)) => {
                linear_1.visit(&join(prefix, "class_embedding.linear_1"), f);
                linear_2.visit(&join(prefix, "class_embedding.linear_2"), f);
            }
            None => {}
        }
        self.conv_in.visit(&join(prefix, "conv_in"), f);
        visit_list(&self.down_blocks, &join(prefix, "down_blocks"), f);
        self.mid_block.visit(&join(prefix, "mid_block"), f);
        visit_list(&self.up_blocks, &join(prefix, "up_blocks"), f);
        self.conv_norm_out.visit(&join(prefix, "conv_norm_out"), f);
        self.conv_out.visit(&join(prefix, "conv_out"), f);
    }
}
