//! The UNet's building blocks, each the counterpart of a diffusers module of the same name
//! (and so with the same parameter names).

use ember_tensor::ops::attention::AttentionMask;
use ember_tensor::ops::conv::{Conv2dParams, ConvTranspose2dParams};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};

use crate::error::{Result, UNetError};

/// The error for an input of the wrong rank.
fn invalid_input(op: &'static str, expected: &str, got: &Tensor) -> UNetError {
    UNetError::Tensor(ember_tensor::TensorError::InvalidArgument { op, msg: format!("expected {expected}, got shape {:?}", got.shape()) })
}
use crate::layers::{Conv2d, ConvTranspose2d, GroupNorm, Linear};
use crate::module::{ForwardContext, Module, join, visit_list};
use crate::transformer::Transformer2D;

/// Residual block (diffusers `ResnetBlock2D`):
/// `h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]`,
/// `h = conv2(dropout(silu(norm2(h))))`, `out = shortcut(x) + h`, where the shortcut is a
/// 1×1 conv when the channel count changes. Without a time embedding (the VAE's blocks,
/// `temb_channels=None`) there is no `time_emb_proj` and nothing is added.
pub struct ResnetBlock {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
    pub dropout: f64,
}

/// Shared settings of the blocks of one model.
#[derive(Clone, Copy, Debug)]
pub struct BlockSettings {
    pub groups: usize,
    pub eps: f64,
    /// The time embedding's width; `None` for blocks without one (the VAE's).
    pub temb_channels: Option<usize>,
    pub dropout: f64,
    pub dtype: DType,
}

impl ResnetBlock {
    pub fn new(c_in: usize, c_out: usize, s: &BlockSettings, rng: &mut Rng) -> Result<ResnetBlock> {
        let same = Conv2dParams::new(1, 1);
        Ok(ResnetBlock {
            norm1: GroupNorm::new(s.groups, c_in, s.eps, s.dtype),
            conv1: Conv2d::new(c_in, c_out, 3, same, s.dtype, rng)?,
            time_emb_proj: s.temb_channels.map(|channels| Linear::new(channels, c_out, s.dtype, rng)).transpose()?,
            norm2: GroupNorm::new(s.groups, c_out, s.eps, s.dtype),
            conv2: Conv2d::new(c_out, c_out, 3, same, s.dtype, rng)?,
            conv_shortcut: if c_in != c_out { Some(Conv2d::new(c_in, c_out, 1, Conv2dParams::default(), s.dtype, rng)?) } else { None },
            dropout: s.dropout,
        })
    }

    /// `temb [B, temb_channels]` is required exactly when the block has a `time_emb_proj`.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, ctx: &mut ForwardContext) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                if temb.rank() != 2 {
                    return Err(invalid_input("ResnetBlock", "a time embedding [B, channels]", temb));
                }
                let t = proj.forward(&temb.silu()?)?;
                let (b, c) = (t.shape()[0], t.shape()[1]);
                h = h.add(&t.reshape(&[b, c, 1, 1])?)?;
            }
            (None, None) => {}
            (Some(_), None) => return Err(invalid_input("ResnetBlock", "a time embedding [B, channels]", x)),
            (None, Some(temb)) => return Err(invalid_input("ResnetBlock", "no time embedding (the block has no time_emb_proj)", temb)),
        }
        let h = self.norm2.forward_silu(&h)?.dropout(self.dropout, ctx.training, ctx.rng)?;
        let h = self.conv2.forward(&h)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        Ok(shortcut.add(&h)?)
    }
}

impl Module for ResnetBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.norm1.visit(&join(prefix, "norm1"), f);
        self.conv1.visit(&join(prefix, "conv1"), f);
        if let Some(proj) = &self.time_emb_proj {
            proj.visit(&join(prefix, "time_emb_proj"), f);
        }
        self.norm2.visit(&join(prefix, "norm2"), f);
        self.conv2.visit(&join(prefix, "conv2"), f);
        if let Some(conv) = &self.conv_shortcut {
            conv.visit(&join(prefix, "conv_shortcut"), f);
        }
    }
}

/// Multi-head attention (diffusers `Attention`): queries from the tokens `x [B, Sq, C]`, keys
/// and values from `context [B, Sk, C_ctx]` (x itself for self-attention), `heads` heads of
/// `C / heads` channels: `q, k, v` (linear) → heads → `softmax(q·kᵀ/√d)·v` (context tokens
/// whose mask entry is 0 ignored) → merged heads → `to_out` (linear) `[B, Sq, C]`.
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl Attention {
    /// Projections `query_dim → query_dim` (queries, output) and `context_dim → query_dim`
    /// (keys, values); `qkv_bias` false as in diffusers' transformer blocks.
    pub fn new(query_dim: usize, context_dim: usize, heads: usize, qkv_bias: bool, dtype: DType, rng: &mut Rng) -> Result<Attention> {
        let projection =
            |from: usize, rng: &mut Rng| if qkv_bias { Linear::new(from, query_dim, dtype, rng) } else { Linear::without_bias(from, query_dim, dtype, rng) };
        Ok(Attention {
            to_q: projection(query_dim, rng)?,
            to_k: projection(context_dim, rng)?,
            to_v: projection(context_dim, rng)?,
            to_out: Linear::new(query_dim, query_dim, dtype, rng)?,
            heads,
        })
    }

    /// `x [B, Sq, C]` attending to `context [B, Sk, C_ctx]` (to itself when `None`), with an
    /// optional key mask `[B, Sk]` (1 attend, 0 ignore).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>, key_mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_masked(x, context, AttentionMask { key_padding: key_mask, causal: false })
    }

    /// [`Attention::forward`] with any mask: key padding and/or causal (token i attends to
    /// tokens j ≤ i, as CLIP's text encoder).
    pub fn forward_masked(&self, x: &Tensor, context: Option<&Tensor>, mask: AttentionMask) -> Result<Tensor> {
        let [b, sq, c]: [usize; 3] = x.shape().try_into().map_err(|_| invalid_input("Attention", "tokens [B, S, C]", x))?;
        let context = context.unwrap_or(x);
        if context.rank() != 3 || context.shape()[0] != b {
            return Err(invalid_input("Attention", &format!("a context [{b}, S, C]"), context));
        }
        let (heads, sk) = (self.heads, context.shape()[1]);
        let head_dim = c / heads;
        let split_heads = |t: Tensor, tokens: usize| -> Result<Tensor> {
            Ok(t.reshape(&[b, tokens, heads, head_dim])?.transpose(1, 2)?) // [B, heads, S, d]
        };
        let q = split_heads(self.to_q.forward(x)?, sq)?;
        let k = split_heads(self.to_k.forward(context)?, sk)?;
        let v = split_heads(self.to_v.forward(context)?, sk)?;
        let attended = Tensor::scaled_dot_product_attention_masked(&q, &k, &v, mask, None)?; // [B, heads, Sq, d]
        self.to_out.forward(&attended.transpose(1, 2)?.reshape(&[b, sq, c])?)
    }
}

impl Module for Attention {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.to_q.visit(&join(prefix, "to_q"), f);
        self.to_k.visit(&join(prefix, "to_k"), f);
        self.to_v.visit(&join(prefix, "to_v"), f);
        self.to_out.visit(&join(prefix, "to_out.0"), f);
    }
}

/// Spatial multi-head self-attention (the attention of diffusers' `AttnDownBlock2D`,
/// `AttnUpBlock2D` and `UNetMidBlock2D`): the pixels are the tokens and the channels the
/// features. `h = group_norm(x)` → tokens `[B, HW, C]` → [`Attention`] → back to
/// `[B, C, H, W]` → `+ x`.
pub struct AttentionBlock {
    pub group_norm: GroupNorm,
    pub attention: Attention,
}

impl AttentionBlock {
    pub fn new(channels: usize, head_dim: Option<usize>, s: &BlockSettings, rng: &mut Rng) -> Result<AttentionBlock> {
        let heads = channels / head_dim.unwrap_or(channels);
        Ok(AttentionBlock {
            group_norm: GroupNorm::new(s.groups, channels, s.eps, s.dtype),
            attention: Attention::new(channels, channels, heads, true, s.dtype, rng)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [b, c, h, w]: [usize; 4] = x.shape().try_into().map_err(|_| invalid_input("AttentionBlock", "[B, C, H, W]", x))?;
        let tokens = self.group_norm.forward(x)?.reshape(&[b, c, h * w])?.transpose(1, 2)?; // [B, HW, C]
        let out = self.attention.forward(&tokens, None, None)?.transpose(1, 2)?.reshape(&[b, c, h, w])?;
        Ok(out.add(x)?)
    }
}

impl Module for AttentionBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.group_norm.visit(&join(prefix, "group_norm"), f);
        self.attention.visit(prefix, f);
    }
}

/// The context a cross-attention UNet attends to (diffusers' `encoder_hidden_states` and
/// `encoder_attention_mask`): token embeddings `[B, S, cross_attention_dim]` and an optional
/// mask `[B, S]`, 1 for a token to attend to, 0 for padding.
#[derive(Clone, Copy)]
pub struct EncoderStates<'a> {
    pub hidden_states: &'a Tensor,
    pub attention_mask: Option<&'a Tensor>,
}

/// The attention that follows a residual block: self-attention over the pixels
/// (`UNet2DModel`'s Attn blocks) or a transformer that also cross-attends to the context
/// (`UNet2DConditionModel`'s CrossAttn blocks).
pub enum SpatialAttention {
    SelfAttention(AttentionBlock),
    Transformer(Transformer2D),
}

impl SpatialAttention {
    pub fn forward(&self, x: &Tensor, encoder: Option<&EncoderStates>) -> Result<Tensor> {
        match (self, encoder) {
            (SpatialAttention::SelfAttention(block), _) => block.forward(x),
            (SpatialAttention::Transformer(transformer), Some(encoder)) => transformer.forward(x, encoder),
            (SpatialAttention::Transformer(_), None) => Err(UNetError::Tensor(ember_tensor::TensorError::InvalidArgument {
                op: "Transformer2D",
                msg: "a cross-attention block needs encoder hidden states to attend to".into(),
            })),
        }
    }
}

impl Module for SpatialAttention {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        match self {
            SpatialAttention::SelfAttention(block) => block.visit(prefix, f),
            SpatialAttention::Transformer(transformer) => transformer.visit(prefix, f),
        }
    }
}

/// Halves the resolution with a stride-2 3×3 conv. With `padding` 0 (DDPM's choice) the input
/// is first padded by one on the right and bottom only.
pub struct Downsample {
    pub conv: Conv2d,
    pub padding: usize,
}

impl Downsample {
    pub fn new(channels: usize, padding: usize, dtype: DType, rng: &mut Rng) -> Result<Downsample> {
        Ok(Downsample { conv: Conv2d::new(channels, channels, 3, Conv2dParams::new(2, padding), dtype, rng)?, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.padding == 0 {
            return self.conv.forward(&x.pad(&[(0, 0), (0, 0), (0, 1), (0, 1)], 0.0)?);
        }
        self.conv.forward(x)
    }
}

impl Module for Downsample {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.conv.visit(&join(prefix, "conv"), f);
    }
}

/// Doubles the resolution: nearest ×2 then a 3×3 conv, or one 4×4 stride-2 transposed conv.
pub enum Upsample {
    NearestConv(Conv2d),
    ConvTranspose(ConvTranspose2d),
}

impl Upsample {
    pub fn new(channels: usize, transposed: bool, dtype: DType, rng: &mut Rng) -> Result<Upsample> {
        Ok(if transposed {
            Upsample::ConvTranspose(ConvTranspose2d::new(channels, channels, 4, ConvTranspose2dParams::new(2, 1, 0), dtype, rng)?)
        } else {
            Upsample::NearestConv(Conv2d::new(channels, channels, 3, Conv2dParams::new(1, 1), dtype, rng)?)
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Upsample::NearestConv(conv) => conv.forward(&x.upsample_nearest2d(2)?),
            Upsample::ConvTranspose(conv) => conv.forward(x),
        }
    }
}

impl Module for Upsample {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        match self {
            Upsample::NearestConv(conv) => conv.visit(&join(prefix, "conv"), f),
            Upsample::ConvTranspose(conv) => conv.visit(&join(prefix, "conv"), f),
        }
    }
}

/// One level of the down path (diffusers `DownBlock2D` / `AttnDownBlock2D` /
/// `CrossAttnDownBlock2D`): residual blocks (each followed by attention in the Attn and
/// CrossAttn variants), then an optional downsampler. Every
/// block's output is kept for the skip connections.
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock>,
    pub attentions: Vec<SpatialAttention>,
    pub downsampler: Option<Downsample>,
}

impl DownBlock {
    pub fn forward(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        encoder: Option<&EncoderStates>,
        ctx: &mut ForwardContext,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, temb, ctx)?;
            if let Some(attention) = self.attentions.get(i) {
                h = attention.forward(&h, encoder)?;
            }
            skips.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

impl Module for DownBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_list(&self.resnets, &join(prefix, "resnets"), f);
        visit_list(&self.attentions, &join(prefix, "attentions"), f);
        if let Some(down) = &self.downsampler {
            down.visit(&join(prefix, "downsamplers.0"), f);
        }
    }
}

/// One level of the up path (diffusers `UpBlock2D` / `AttnUpBlock2D` / `CrossAttnUpBlock2D`):
/// each residual block
/// takes the previous output concatenated (on channels) with the latest unused skip.
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock>,
    pub attentions: Vec<SpatialAttention>,
    pub upsampler: Option<Upsample>,
}

impl UpBlock {
    pub fn forward(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        encoder: Option<&EncoderStates>,
        ctx: &mut ForwardContext,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| {
                UNetError::Tensor(ember_tensor::TensorError::InvalidArgument { op: "UpBlock", msg: "no skip connection left to consume".into() })
            })?;
            h = resnet.forward(&Tensor::cat(&[&h, &skip], 1)?, temb, ctx)?;
            if let Some(attention) = self.attentions.get(i) {
                h = attention.forward(&h, encoder)?;
            }
        }
        if let Some(up) = &self.upsampler {
            h = up.forward(&h)?;
        }
        Ok(h)
    }
}

impl Module for UpBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_list(&self.resnets, &join(prefix, "resnets"), f);
        visit_list(&self.attentions, &join(prefix, "attentions"), f);
        if let Some(up) = &self.upsampler {
            up.visit(&join(prefix, "upsamplers.0"), f);
        }
    }
}

/// The bottleneck (diffusers `UNetMidBlock2D` / `UNetMidBlock2DCrossAttn`): resnet →
/// attention (self-attention, or a cross-attention transformer) → resnet.
pub struct MidBlock {
    pub resnets: [ResnetBlock; 2],
    pub attention: SpatialAttention,
}

impl MidBlock {
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, encoder: Option<&EncoderStates>, ctx: &mut ForwardContext) -> Result<Tensor> {
        let h = self.resnets[0].forward(x, temb, ctx)?;
        let h = self.attention.forward(&h, encoder)?;
        self.resnets[1].forward(&h, temb, ctx)
    }
}

impl Module for MidBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_list(&self.resnets, &join(prefix, "resnets"), f);
        self.attention.visit(&join(prefix, "attentions.0"), f);
    }
}
