//! The cross-attention transformer of Stable Diffusion's UNet (diffusers `Transformer2DModel`
//! with continuous input and its `BasicTransformerBlock`), the same parameter names: the
//! pixels of a feature map become tokens that attend to each other and to a context of token
//! embeddings (a text encoder's hidden states), then feed forward through a GEGLU.

use ember_tensor::ops::conv::Conv2dParams;
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};

use crate::blocks::{Attention, EncoderStates};
use crate::error::{Result, UNetError};
use crate::layers::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::module::{Module, join, visit_list};

/// The transformer's group norm epsilon (diffusers fixes it at 1e-6).
const TRANSFORMER_GROUP_NORM_EPS: f64 = 1e-6;
/// The blocks' layer norm epsilon (diffusers' `norm_eps` default in `BasicTransformerBlock`).
const LAYER_NORM_EPS: f64 = 1e-5;
/// The feed-forward's hidden width is this multiple of the tokens' (diffusers' `mult`).
const FEED_FORWARD_MULT: usize = 4;

/// diffusers `FeedForward` with its default GEGLU: `net.0.proj` (`dim → 2·inner`), the gate
/// `h ⊙ gelu(g)` of the two halves ([`Tensor::geglu`]), `net.2` (`inner → dim`).
pub struct FeedForward {
    pub proj: Linear,
    pub out: Linear,
}

impl FeedForward {
    pub fn new(dim: usize, dtype: DType, rng: &mut Rng) -> Result<FeedForward> {
        let inner = FEED_FORWARD_MULT * dim;
        Ok(FeedForward { proj: Linear::new(dim, 2 * inner, dtype, rng)?, out: Linear::new(inner, dim, dtype, rng)? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.proj.forward(x)?.geglu()?)
    }
}

impl Module for FeedForward {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.proj.visit(&join(prefix, "net.0.proj"), f);
        self.out.visit(&join(prefix, "net.2"), f);
    }
}

/// diffusers `BasicTransformerBlock` (pre-norm, `norm_type` "layer_norm") on tokens
/// `x [B, S, C]`:
/// `x += attn1(norm1(x))` (self-attention), `x += attn2(norm2(x), context)` (cross-attention,
/// masked context tokens ignored), `x += ff(norm3(x))`.
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(dim: usize, heads: usize, context_dim: usize, dtype: DType, rng: &mut Rng) -> Result<BasicTransformerBlock> {
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::new(dim, LAYER_NORM_EPS, dtype),
            attn1: Attention::new(dim, dim, heads, false, dtype, rng)?,
            norm2: LayerNorm::new(dim, LAYER_NORM_EPS, dtype),
            attn2: Attention::new(dim, context_dim, heads, false, dtype, rng)?,
            norm3: LayerNorm::new(dim, LAYER_NORM_EPS, dtype),
            ff: FeedForward::new(dim, dtype, rng)?,
        })
    }

    pub fn forward(&self, x: &Tensor, encoder: &EncoderStates) -> Result<Tensor> {
        let h = self.attn1.forward(&self.norm1.forward(x)?, None, None)?.add(x)?;
        let h = self.attn2.forward(&self.norm2.forward(&h)?, Some(encoder.hidden_states), encoder.attention_mask)?.add(&h)?;
        Ok(self.ff.forward(&self.norm3.forward(&h)?)?.add(&h)?)
    }
}

impl Module for BasicTransformerBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.norm1.visit(&join(prefix, "norm1"), f);
        self.attn1.visit(&join(prefix, "attn1"), f);
        self.norm2.visit(&join(prefix, "norm2"), f);
        self.attn2.visit(&join(prefix, "attn2"), f);
        self.norm3.visit(&join(prefix, "norm3"), f);
        self.ff.visit(&join(prefix, "ff"), f);
    }
}

/// The map between the feature map's channels and the tokens' features: a 1×1 convolution on
/// `[B, C, H, W]` (diffusers' default) or a Linear layer on the tokens
/// (`use_linear_projection`). Both compute `W·x + b` per pixel.
pub enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(channels: usize, linear: bool, dtype: DType, rng: &mut Rng) -> Result<Projection> {
        Ok(if linear {
            Projection::Linear(Linear::new(channels, channels, dtype, rng)?)
        } else {
            Projection::Conv(Conv2d::new(channels, channels, 1, Conv2dParams::default(), dtype, rng)?)
        })
    }
}

impl Module for Projection {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        match self {
            Projection::Conv(conv) => conv.visit(prefix, f),
            Projection::Linear(linear) => linear.visit(prefix, f),
        }
    }
}

/// diffusers `Transformer2DModel` (continuous input) on a feature map `x [B, C, H, W]`:
/// `group_norm` → `proj_in` → tokens `[B, HW, C]` → the [`BasicTransformerBlock`]s (attending
/// to the context) → `proj_out` → back to `[B, C, H, W]` → `+ x`.
pub struct Transformer2D {
    pub norm: GroupNorm,
    pub proj_in: Projection,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Projection,
}

/// The sizes of one [`Transformer2D`].
#[derive(Clone, Copy, Debug)]
pub struct TransformerSettings {
    pub channels: usize,
    pub heads: usize,
    pub context_dim: usize,
    pub layers: usize,
    pub norm_groups: usize,
    pub linear_projection: bool,
}

impl Transformer2D {
    pub fn new(s: &TransformerSettings, dtype: DType, rng: &mut Rng) -> Result<Transformer2D> {
        Ok(Transformer2D {
            norm: GroupNorm::new(s.norm_groups, s.channels, TRANSFORMER_GROUP_NORM_EPS, dtype),
            proj_in: Projection::new(s.channels, s.linear_projection, dtype, rng)?,
            transformer_blocks: (0..s.layers).map(|_| BasicTransformerBlock::new(s.channels, s.heads, s.context_dim, dtype, rng)).collect::<Result<_>>()?,
            proj_out: Projection::new(s.channels, s.linear_projection, dtype, rng)?,
        })
    }

    pub fn forward(&self, x: &Tensor, encoder: &EncoderStates) -> Result<Tensor> {
        let [b, c, h, w]: [usize; 4] = x.shape().try_into().map_err(|_| {
            UNetError::Tensor(ember_tensor::TensorError::InvalidArgument {
                op: "Transformer2D",
                msg: format!("expected [B, C, H, W], got shape {:?}", x.shape()),
            })
        })?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> { Ok(t.reshape(&[b, c, h * w])?.transpose(1, 2)?) }; // [B, HW, C]
        let to_map = |t: &Tensor| -> Result<Tensor> { Ok(t.transpose(1, 2)?.reshape(&[b, c, h, w])?) };
        let normed = self.norm.forward(x)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(linear) => linear.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(&tokens, encoder)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?)?,
            Projection::Linear(linear) => to_map(&linear.forward(&tokens)?)?,
        };
        Ok(out.add(x)?)
    }
}

impl Module for Transformer2D {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.norm.visit(&join(prefix, "norm"), f);
        self.proj_in.visit(&join(prefix, "proj_in"), f);
        visit_list(&self.transformer_blocks, &join(prefix, "transformer_blocks"), f);
        self.proj_out.visit(&join(prefix, "proj_out"), f);
    }
}
