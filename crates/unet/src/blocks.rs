//! The UNet's building blocks, each the counterpart of a diffusers module of the same name
//! (and so with the same parameter names).

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

/// Residual block (diffusers `ResnetBlock2D`):
/// `h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]`,
/// `h = conv2(dropout(silu(norm2(h))))`, `out = shortcut(x) + h`, where the shortcut is a
/// 1×1 conv when the channel count changes.
pub struct ResnetBlock {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Linear,
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
    pub temb_channels: usize,
    pub dropout: f64,
    pub dtype: DType,
}

impl ResnetBlock {
    pub fn new(c_in: usize, c_out: usize, s: &BlockSettings, rng: &mut Rng) -> Result<ResnetBlock> {
        let same = Conv2dParams::new(1, 1);
        Ok(ResnetBlock {
            norm1: GroupNorm::new(s.groups, c_in, s.eps, s.dtype),
            conv1: Conv2d::new(c_in, c_out, 3, same, s.dtype, rng)?,
            time_emb_proj: Linear::new(s.temb_channels, c_out, s.dtype, rng)?,
            norm2: GroupNorm::new(s.groups, c_out, s.eps, s.dtype),
            conv2: Conv2d::new(c_out, c_out, 3, same, s.dtype, rng)?,
            conv_shortcut: if c_in != c_out { Some(Conv2d::new(c_in, c_out, 1, Conv2dParams::default(), s.dtype, rng)?) } else { None },
            dropout: s.dropout,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &mut ForwardContext) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if temb.rank() != 2 {
            return Err(invalid_input("ResnetBlock", "a time embedding [B, channels]", temb));
        }
        let t = self.time_emb_proj.forward(&temb.silu()?)?;
        let (b, c) = (t.shape()[0], t.shape()[1]);
        let h = h.add(&t.reshape(&[b, c, 1, 1])?)?;
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
        self.time_emb_proj.visit(&join(prefix, "time_emb_proj"), f);
        self.norm2.visit(&join(prefix, "norm2"), f);
        self.conv2.visit(&join(prefix, "conv2"), f);
        if let Some(conv) = &self.conv_shortcut {
            conv.visit(&join(prefix, "conv_shortcut"), f);
        }
    }
}

/// Spatial multi-head self-attention (diffusers `Attention` as used by the UNet blocks): the
/// pixels are the tokens and the channels the features.
/// `h = group_norm(x)` → tokens `[B, HW, C]` → `q, k, v` (linear) → heads →
/// `softmax(q·kᵀ/√d)·v` → `to_out` (linear) → back to `[B, C, H, W]` → `+ x`.
pub struct AttentionBlock {
    pub group_norm: GroupNorm,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl AttentionBlock {
    pub fn new(channels: usize, head_dim: Option<usize>, s: &BlockSettings, rng: &mut Rng) -> Result<AttentionBlock> {
        Ok(AttentionBlock {
            group_norm: GroupNorm::new(s.groups, channels, s.eps, s.dtype),
            to_q: Linear::new(channels, channels, s.dtype, rng)?,
            to_k: Linear::new(channels, channels, s.dtype, rng)?,
            to_v: Linear::new(channels, channels, s.dtype, rng)?,
            to_out: Linear::new(channels, channels, s.dtype, rng)?,
            heads: channels / head_dim.unwrap_or(channels),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [b, c, h, w]: [usize; 4] = x.shape().try_into().map_err(|_| invalid_input("AttentionBlock", "[B, C, H, W]", x))?;
        let (heads, tokens) = (self.heads, h * w);
        let head_dim = c / heads;
        let normed = self.group_norm.forward(x)?;
        let tokens_by_channel = normed.reshape(&[b, c, tokens])?.transpose(1, 2)?; // [B, HW, C]
        let split_heads = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape(&[b, tokens, heads, head_dim])?.transpose(1, 2)?) // [B, heads, HW, d]
        };
        let q = split_heads(self.to_q.forward(&tokens_by_channel)?)?;
        let k = split_heads(self.to_k.forward(&tokens_by_channel)?)?;
        let v = split_heads(self.to_v.forward(&tokens_by_channel)?)?;
        let attended = Tensor::scaled_dot_product_attention(&q, &k, &v, None)?; // [B, heads, HW, d]
        let merged = attended.transpose(1, 2)?.reshape(&[b, tokens, c])?;
        let out = self.to_out.forward(&merged)?.transpose(1, 2)?.reshape(&[b, c, h, w])?;
        Ok(out.add(x)?)
    }
}

impl Module for AttentionBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.group_norm.visit(&join(prefix, "group_norm"), f);
        self.to_q.visit(&join(prefix, "to_q"), f);
        self.to_k.visit(&join(prefix, "to_k"), f);
        self.to_v.visit(&join(prefix, "to_v"), f);
        self.to_out.visit(&join(prefix, "to_out.0"), f);
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

/// One level of the down path (diffusers `DownBlock2D` / `AttnDownBlock2D`): residual blocks
/// (each followed by attention in the Attn variant), then an optional downsampler. Every
/// block's output is kept for the skip connections.
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock>,
    pub attentions: Vec<AttentionBlock>,
    pub downsampler: Option<Downsample>,
}

impl DownBlock {
    pub fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &mut ForwardContext, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, temb, ctx)?;
            if let Some(attention) = self.attentions.get(i) {
                h = attention.forward(&h)?;
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

/// One level of the up path (diffusers `UpBlock2D` / `AttnUpBlock2D`): each residual block
/// takes the previous output concatenated (on channels) with the latest unused skip.
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock>,
    pub attentions: Vec<AttentionBlock>,
    pub upsampler: Option<Upsample>,
}

impl UpBlock {
    pub fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &mut ForwardContext, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| {
                UNetError::Tensor(ember_tensor::TensorError::InvalidArgument { op: "UpBlock", msg: "no skip connection left to consume".into() })
            })?;
            h = resnet.forward(&Tensor::cat(&[&h, &skip], 1)?, temb, ctx)?;
            if let Some(attention) = self.attentions.get(i) {
                h = attention.forward(&h)?;
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

/// The bottleneck (diffusers `UNetMidBlock2D`): resnet → attention → resnet.
pub struct MidBlock {
    pub resnets: [ResnetBlock; 2],
    pub attention: AttentionBlock,
}

impl MidBlock {
    pub fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &mut ForwardContext) -> Result<Tensor> {
        let h = self.resnets[0].forward(x, temb, ctx)?;
        let h = self.attention.forward(&h)?;
        self.resnets[1].forward(&h, temb, ctx)
    }
}

impl Module for MidBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_list(&self.resnets, &join(prefix, "resnets"), f);
        self.attention.visit(&join(prefix, "attentions.0"), f);
    }
}
