//! The text encoder of latent diffusion: CLIP's text transformer (Radford et al. 2021) in the
//! layout, parameter names and config of transformers' `CLIPTextModel`, as Stable Diffusion
//! uses it. Token ids → token + position embeddings → pre-LayerNorm transformer layers
//! (causal multi-head self-attention, an MLP with quick-GELU) → final LayerNorm: the
//! `last_hidden_state` the UNet cross-attends to, and the `pooler_output` (the end-of-text
//! token's state) a contrastive loss pairs with an image.

use ember_tensor::ops::attention::AttentionMask;
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor, TensorError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::blocks::Attention;
use crate::config::{json_object, with_defaults};
use crate::error::{Result, UNetError};
use crate::layers::{LayerNorm, Linear};
use crate::module::{Module, join, visit_list};

/// The text model's architecture, in the fields of transformers' `CLIPTextConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    /// The width of CLIP's joint embedding (used by a projection head, not by the text model).
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// The longest token sequence (Stable Diffusion's 77).
    pub max_position_embeddings: usize,
    /// "quick_gelu" (OpenAI's CLIP: x·σ(1.702x)) or "gelu" (exact).
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
    /// The standard deviations of the init (transformers' `_init_weights` for CLIP).
    pub initializer_range: f64,
    pub initializer_factor: f64,
    pub pad_token_id: usize,
    pub bos_token_id: usize,
    /// The end-of-text token, whose position gives the pooled output. 2 means the legacy
    /// rule of transformers (the position of each row's largest id), any other value the
    /// first position of this id.
    pub eos_token_id: usize,
}

/// transformers' `CLIPTextConfig` defaults (OpenAI's ViT-B/32 text tower).
impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            model_type: "clip_text_model".into(),
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            initializer_range: 0.02,
            initializer_factor: 1.0,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

impl ClipTextConfig {
    /// Parses a transformers `config.json` of a `CLIPTextModel` (or the `text_config` of a
    /// whole `CLIPModel`'s); missing keys take transformers' defaults, unknown keys are
    /// ignored, what ember does not build is refused.
    pub fn from_json(text: &str) -> Result<ClipTextConfig> {
        let mut given = json_object(text)?;
        if let Some(Value::Object(text_config)) = given.remove("text_config") {
            given = text_config;
        }
        let config = with_defaults(&ClipTextConfig::default(), given)?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(UNetError::Config(msg));
        if [self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.num_attention_heads, self.max_position_embeddings]
            .contains(&0)
        {
            return fail(
                "vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and max_position_embeddings must be positive".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return fail(format!("hidden_size {} does not split into {} heads", self.hidden_size, self.num_attention_heads));
        }
        if self.hidden_act != "quick_gelu" && self.hidden_act != "gelu" {
            return fail(format!("hidden_act {:?}: \"quick_gelu\" or \"gelu\"", self.hidden_act));
        }
        if self.attention_dropout != 0.0 {
            return fail("attention_dropout other than 0 is not supported".into());
        }
        Ok(())
    }
}

/// One pre-LayerNorm transformer layer (transformers `CLIPEncoderLayer`):
/// `x += out_proj(causal_attention(layer_norm1(x)))`, `x += fc2(act(fc1(layer_norm2(x))))`.
pub struct ClipEncoderLayer {
    pub layer_norm1: LayerNorm,
    /// `q_proj`, `k_proj`, `v_proj`, `out_proj` (with biases), as [`Attention`]'s projections.
    pub self_attn: Attention,
    pub layer_norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

/// What the text model returns.
pub struct ClipTextOutput {
    /// `[B, S, hidden_size]`, after the final LayerNorm: the UNet's context tokens.
    pub last_hidden_state: Tensor,
    /// `[B, hidden_size]`: each row's end-of-text token state.
    pub pooler_output: Tensor,
}

pub struct ClipTextModel {
    pub config: ClipTextConfig,
    pub dtype: DType,
    /// `[vocab_size, hidden_size]`.
    pub token_embedding: Tensor,
    /// `[max_position_embeddings, hidden_size]`.
    pub position_embedding: Tensor,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: LayerNorm,
}

/// A `[out, in]` weight drawn from N(0, std²) and a zero bias (transformers' CLIP init).
fn normal_linear(in_features: usize, out_features: usize, std: f64, dtype: DType, rng: &mut Rng) -> Linear {
    Linear {
        weight: Tensor::randn(&[out_features, in_features], 0.0, std, dtype, rng).variable(),
        bias: Some(Tensor::zeros(&[out_features], dtype).variable()),
    }
}

impl ClipTextModel {
    /// A freshly initialized text model, with transformers' init for CLIP: embeddings
    /// N(0, 0.02·f) (positions 0.01·f), attention projections N(0, (d^−½·(2L)^−½·f)²) (`out_proj`
    /// d^−½·f), `fc1` (2d)^−½·f, `fc2` d^−½·(2L)^−½·f, zero biases, unit LayerNorms.
    pub fn new(config: &ClipTextConfig, dtype: DType, rng: &mut Rng) -> Result<ClipTextModel> {
        config.validate()?;
        let (d, f) = (config.hidden_size, config.initializer_factor);
        let depth = (2.0 * config.num_hidden_layers as f64).powf(-0.5);
        let width = (d as f64).powf(-0.5);
        let token_embedding = Tensor::randn(&[config.vocab_size, d], 0.0, config.initializer_range * f, dtype, rng).variable();
        let position_embedding = Tensor::randn(&[config.max_position_embeddings, d], 0.0, 0.01 * f, dtype, rng).variable();
        let layers = (0..config.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                layer_norm1: LayerNorm::new(d, config.layer_norm_eps, dtype),
                self_attn: Attention {
                    to_q: normal_linear(d, d, width * depth * f, dtype, rng),
                    to_k: normal_linear(d, d, width * depth * f, dtype, rng),
                    to_v: normal_linear(d, d, width * depth * f, dtype, rng),
                    to_out: normal_linear(d, d, width * f, dtype, rng),
                    heads: config.num_attention_heads,
                },
                layer_norm2: LayerNorm::new(d, config.layer_norm_eps, dtype),
                fc1: normal_linear(d, config.intermediate_size, (2.0 * d as f64).powf(-0.5) * f, dtype, rng),
                fc2: normal_linear(config.intermediate_size, d, width * depth * f, dtype, rng),
            })
            .collect();
        Ok(ClipTextModel {
            config: config.clone(),
            dtype,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm: LayerNorm::new(d, config.layer_norm_eps, dtype),
        })
    }

    /// Encodes token ids (`input_ids`: B rows of one length S ≤ `max_position_embeddings`, ids
    /// < `vocab_size`) with an optional padding mask `[B, S]` (1 token, 0 padding), as
    /// transformers' `CLIPTextModel(input_ids, attention_mask)`: causal self-attention, so
    /// token i sees tokens ≤ i (and no padding).
    pub fn forward(&self, input_ids: &[Vec<usize>], attention_mask: Option<&Tensor>) -> Result<ClipTextOutput> {
        let c = &self.config;
        let invalid = |msg: String| -> UNetError { TensorError::InvalidArgument { op: "ClipTextModel::forward", msg }.into() };
        let batch = input_ids.len();
        let len = input_ids.first().map_or(0, Vec::len);
        if batch == 0 || len == 0 || input_ids.iter().any(|row| row.len() != len) {
            return Err(invalid("expected one or more token rows of one positive length".into()));
        }
        if len > c.max_position_embeddings {
            return Err(invalid(format!("{len} tokens, but the model has {} positions", c.max_position_embeddings)));
        }
        if let Some(&bad) = input_ids.iter().flatten().find(|&&id| id >= c.vocab_size) {
            return Err(invalid(format!("token id {bad} is outside the vocabulary of {}", c.vocab_size)));
        }
        let device = self.token_embedding.device();
        let mask = match attention_mask {
            Some(mask) if mask.shape() != [batch, len] => {
                return Err(invalid(format!("attention mask of shape {:?}, expected [{batch}, {len}]", mask.shape())));
            }
            Some(mask) => Some(mask.detach().to_dtype(self.dtype)?.to_device(device)?),
            None => None,
        };
        let ids: Vec<usize> = input_ids.iter().flatten().copied().collect();
        let tokens = self.token_embedding.embedding(&ids)?.reshape(&[batch, len, c.hidden_size])?;
        let mut h = tokens.add(&self.position_embedding.narrow(0, 0, len)?)?;
        let mask_spec = AttentionMask { key_padding: mask.as_ref(), causal: true };
        for layer in &self.layers {
            let attended = layer.self_attn.forward_masked(&layer.layer_norm1.forward(&h)?, None, mask_spec)?;
            h = h.add(&attended)?;
            let hidden = layer.fc1.forward(&layer.layer_norm2.forward(&h)?)?;
            let activated = if c.hidden_act == "gelu" { hidden.gelu()? } else { hidden.quick_gelu()? };
            h = h.add(&layer.fc2.forward(&activated)?)?;
        }
        let last_hidden_state = self.final_layer_norm.forward(&h)?;
        let rows: Vec<usize> = input_ids.iter().enumerate().map(|(b, row)| b * len + self.pooled_position(row)).collect();
        let pooler_output = last_hidden_state.reshape(&[batch * len, c.hidden_size])?.embedding(&rows)?;
        Ok(ClipTextOutput { last_hidden_state, pooler_output })
    }

    /// The position of a row's end-of-text token, by transformers' rule: with the legacy
    /// `eos_token_id` 2, the first position of the row's largest id; otherwise the first
    /// position of `eos_token_id` (0 if absent).
    pub fn pooled_position(&self, row: &[usize]) -> usize {
        if self.config.eos_token_id == 2 {
            let max = row.iter().copied().max().unwrap_or(0);
            row.iter().position(|&id| id == max).unwrap_or(0)
        } else {
            row.iter().position(|&id| id == self.config.eos_token_id).unwrap_or(0)
        }
    }
}

impl Module for ClipEncoderLayer {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.layer_norm1.visit(&join(prefix, "layer_norm1"), f);
        let attention = join(prefix, "self_attn");
        let a = &self.self_attn;
        for (name, linear) in [("q_proj", &a.to_q), ("k_proj", &a.to_k), ("v_proj", &a.to_v), ("out_proj", &a.to_out)] {
            linear.visit(&join(&attention, name), f);
        }
        self.layer_norm2.visit(&join(prefix, "layer_norm2"), f);
        self.fc1.visit(&join(prefix, "mlp.fc1"), f);
        self.fc2.visit(&join(prefix, "mlp.fc2"), f);
    }
}

/// Parameter names as transformers' `CLIPTextModel` state dict in its current form
/// (`embeddings.token_embedding.weight`, `encoder.layers.0.self_attn.q_proj.weight`, …);
/// files that prefix them with `text_model.` (transformers 4's layout, Stable Diffusion's
/// `text_encoder/`) load through [`strip_text_model_prefix`].
impl Module for ClipTextModel {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "embeddings.token_embedding.weight"), &self.token_embedding);
        f(join(prefix, "embeddings.position_embedding.weight"), &self.position_embedding);
        visit_list(&self.layers, &join(prefix, "encoder.layers"), f);
        self.final_layer_norm.visit(&join(prefix, "final_layer_norm"), f);
    }
}

/// Weights named the transformers 4 way (`text_model.embeddings…`) under the current names.
pub fn strip_text_model_prefix(weights: std::collections::BTreeMap<String, Tensor>) -> std::collections::BTreeMap<String, Tensor> {
    weights.into_iter().map(|(name, t)| (name.strip_prefix("text_model.").map(str::to_string).unwrap_or(name), t)).collect()
}
