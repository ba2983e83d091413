//! The UNet's architecture, in the fields and spelling of diffusers' `UNet2DModel` and
//! `UNet2DConditionModel` configs (so a diffusers `config.json` loads as is), plus ember's
//! presets.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, UNetError};

/// A down-path block: residual blocks, optionally each followed by self-attention.
pub const DOWN_BLOCK: &str = "DownBlock2D";
pub const ATTN_DOWN_BLOCK: &str = "AttnDownBlock2D";
pub const UP_BLOCK: &str = "UpBlock2D";
pub const ATTN_UP_BLOCK: &str = "AttnUpBlock2D";
/// Residual blocks each followed by a transformer that cross-attends to the context tokens
/// (`UNet2DConditionModel` only).
pub const CROSS_ATTN_DOWN_BLOCK: &str = "CrossAttnDownBlock2D";
pub const CROSS_ATTN_UP_BLOCK: &str = "CrossAttnUpBlock2D";
/// The bottleneck: resnet → self-attention → resnet, or resnet → transformer → resnet.
pub const MID_BLOCK: &str = "UNetMidBlock2D";
pub const CROSS_ATTN_MID_BLOCK: &str = "UNetMidBlock2DCrossAttn";
/// diffusers' model classes, the config's `_class_name`: the DDPM UNet (conditioned at most on
/// a class label) and Stable Diffusion's UNet (cross-attention to `encoder_hidden_states`).
pub const UNET_2D: &str = "UNet2DModel";
pub const UNET_2D_CONDITION: &str = "UNet2DConditionModel";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// The diffusers model class the config describes: [`UNET_2D`] or [`UNET_2D_CONDITION`].
    #[serde(rename = "_class_name")]
    pub model_class: String,
    /// Image side in pixels.
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels of each resolution level, from the top (full resolution) down.
    pub block_out_channels: Vec<usize>,
    /// One per level, from the top: [`DOWN_BLOCK`] or [`ATTN_DOWN_BLOCK`].
    pub down_block_types: Vec<String>,
    /// One per level, from the bottom: [`UP_BLOCK`] or [`ATTN_UP_BLOCK`].
    pub up_block_types: Vec<String>,
    /// Residual blocks per level on the way down (the way up has one more).
    pub layers_per_block: usize,
    /// In a `UNet2DModel`, channels per attention head (`None`: one head over all channels).
    /// In a `UNet2DConditionModel`, as in diffusers (whose name for it is a historical
    /// misnomer), the number of heads of every transformer.
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub dropout: f64,
    /// Sinusoidal time embedding: `[cos, sin]` instead of `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// The embedding's frequencies are `exp(−ln(10000)·i / (half − freq_shift))`.
    pub freq_shift: f64,
    /// 0 means the DDPM downsampler: pad right and bottom by one, then a stride-2 conv.
    pub downsample_padding: usize,
    /// "conv" (nearest ×2 then a 3×3 conv) or "conv_transpose" (a 4×4 stride-2 transposed conv).
    pub upsample_type: String,
    pub act_fn: String,
    pub time_embedding_type: String,
    pub mid_block_scale_factor: f64,
    pub center_input_sample: bool,
    // diffusers options ember accepts only at the values it implements (checked by `validate`,
    // so that a config.json using them fails loudly instead of building a different model)
    pub attn_norm_num_groups: Option<usize>,
    pub resnet_time_scale_shift: String,
    pub add_attention: bool,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub time_embedding_dim: Option<usize>,
    pub downsample_type: String,
    /// [`MID_BLOCK`] (`UNet2DModel`) or [`CROSS_ATTN_MID_BLOCK`] (`UNet2DConditionModel`).
    pub mid_block_type: String,
    /// The width of the context tokens the transformers cross-attend to (`UNet2DConditionModel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_attention_dim: Option<usize>,
    /// `BasicTransformerBlock`s in each transformer (`UNet2DConditionModel`).
    pub transformer_layers_per_block: usize,
    /// The transformers' `proj_in` / `proj_out` as Linear layers on the tokens instead of 1×1
    /// convolutions (Stable Diffusion 2's choice; the same map, stored as `[C, C]`).
    pub use_linear_projection: bool,
}

/// diffusers `UNet2DConditionModel` options that ember builds only at one value: `(key, the
/// value as JSON)`. A config.json with another value is refused rather than read as a
/// different model. (diffusers writes every key, so the accepted values are its defaults.)
const CONDITION_OPTIONS_AT_ONE_VALUE: &[(&str, &str)] = &[
    ("only_cross_attention", "false"),
    ("dual_cross_attention", "false"),
    ("num_attention_heads", "null"),
    ("encoder_hid_dim", "null"),
    ("encoder_hid_dim_type", "null"),
    ("addition_embed_type", "null"),
    ("addition_time_embed_dim", "null"),
    ("conv_in_kernel", "3"),
    ("conv_out_kernel", "3"),
    ("time_cond_proj_dim", "null"),
    ("timestep_post_act", "null"),
    ("time_embedding_act_fn", "null"),
    ("projection_class_embeddings_input_dim", "null"),
    ("class_embeddings_concat", "false"),
    ("mid_block_only_cross_attention", "null"),
    ("cross_attention_norm", "null"),
    ("attention_type", "\"default\""),
    ("reverse_transformer_layers_per_block", "null"),
    ("resnet_skip_time_act", "false"),
    ("resnet_out_scale_factor", "1.0"),
];

/// Options diffusers lets a `UNet2DConditionModel` give per level as a list; ember takes one
/// value for all levels, so a list of equal values reads as that value.
const PER_LEVEL_OPTIONS: &[&str] = &["attention_head_dim", "cross_attention_dim", "transformer_layers_per_block"];

/// The keys of a config.json, which holds one JSON object.
pub(crate) fn json_object(text: &str) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_str(text).map_err(|e| UNetError::Config(e.to_string()))? {
        Value::Object(keys) => Ok(keys),
        _ => Err(UNetError::Config("a config.json holds one JSON object".into())),
    }
}

/// The config a config.json's keys (`given`) make over `defaults`: each key given replaces the
/// default's, the others keep it.
pub(crate) fn with_defaults<T: Serialize + serde::de::DeserializeOwned>(defaults: &T, given: serde_json::Map<String, Value>) -> Result<T> {
    let Value::Object(mut merged) = serde_json::to_value(defaults).expect("a config serializes") else { unreachable!("a config serializes to an object") };
    merged.extend(given);
    serde_json::from_value(Value::Object(merged)).map_err(|e| UNetError::Config(e.to_string()))
}

/// Equal JSON values, numbers compared as numbers (`1` = `1.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// diffusers' own defaults ([`UNetConfig::diffusers_defaults`]): the values a `config.json`'s
/// missing keys take, so that a config reads as the model diffusers would build from it.
impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig::diffusers_defaults()
    }
}

impl UNetConfig {
    /// The DDPM paper's CIFAR-10 model (Ho et al. 2020; diffusers `google/ddpm-cifar10-32`):
    /// 35.7M parameters.
    pub fn ddpm_cifar10() -> UNetConfig {
        UNetConfig {
            sample_size: 32,
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 256, 256],
            down_block_types: [DOWN_BLOCK, ATTN_DOWN_BLOCK, DOWN_BLOCK, DOWN_BLOCK].map(String::from).to_vec(),
            up_block_types: [UP_BLOCK, UP_BLOCK, ATTN_UP_BLOCK, UP_BLOCK].map(String::from).to_vec(),
            layers_per_block: 2,
            attention_head_dim: None,
            norm_num_groups: 32,
            norm_eps: 1e-6,
            dropout: 0.1,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            downsample_padding: 0,
            upsample_type: "conv".into(),
            act_fn: "silu".into(),
            time_embedding_type: "positional".into(),
            mid_block_scale_factor: 1.0,
            center_input_sample: false,
            attn_norm_num_groups: None,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            time_embedding_dim: None,
            downsample_type: "conv".into(),
            mid_block_type: MID_BLOCK.into(),
            model_class: UNET_2D.into(),
            cross_attention_dim: None,
            transformer_layers_per_block: 1,
            use_linear_projection: false,
        }
    }

    /// The defaults of diffusers' `UNet2DModel.__init__` (diffusers 0.42): four levels
    /// (224, 448, 672, 896) with attention on the last three, heads of 8 channels,
    /// `flip_sin_to_cos` true, `freq_shift` 0, `downsample_padding` 1, `norm_eps` 1e-5, no
    /// dropout. diffusers has no default `sample_size` (any size); ember needs one, so it is 0
    /// here and [`UNetConfig::validate`] asks for it.
    pub fn diffusers_defaults() -> UNetConfig {
        UNetConfig {
            sample_size: 0,
            block_out_channels: vec![224, 448, 672, 896],
            down_block_types: [DOWN_BLOCK, ATTN_DOWN_BLOCK, ATTN_DOWN_BLOCK, ATTN_DOWN_BLOCK].map(String::from).to_vec(),
            up_block_types: [ATTN_UP_BLOCK, ATTN_UP_BLOCK, ATTN_UP_BLOCK, UP_BLOCK].map(String::from).to_vec(),
            attention_head_dim: Some(8),
            norm_eps: 1e-5,
            dropout: 0.0,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            ..UNetConfig::ddpm_cifar10()
        }
    }

    /// The defaults of diffusers' `UNet2DConditionModel.__init__` (diffusers 0.42): Stable
    /// Diffusion 1's UNet (four levels 320, 640, 1280, 1280, cross-attention on the first three
    /// down and last three up levels and in the middle, 8 heads, 4 latent channels, context
    /// tokens of 1280 dims). As for `UNet2DModel`, `sample_size` has to be given.
    pub fn diffusers_condition_defaults() -> UNetConfig {
        UNetConfig {
            model_class: UNET_2D_CONDITION.into(),
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            down_block_types: [CROSS_ATTN_DOWN_BLOCK, CROSS_ATTN_DOWN_BLOCK, CROSS_ATTN_DOWN_BLOCK, DOWN_BLOCK].map(String::from).to_vec(),
            up_block_types: [UP_BLOCK, CROSS_ATTN_UP_BLOCK, CROSS_ATTN_UP_BLOCK, CROSS_ATTN_UP_BLOCK].map(String::from).to_vec(),
            mid_block_type: CROSS_ATTN_MID_BLOCK.into(),
            cross_attention_dim: Some(1280),
            attention_head_dim: Some(8),
            ..UNetConfig::diffusers_defaults()
        }
    }

    /// Whether the model cross-attends to context tokens (a `UNet2DConditionModel`).
    pub fn has_cross_attention(&self) -> bool {
        self.model_class == UNET_2D_CONDITION
    }

    /// The labml.ai annotated DDPM's UNet: base 64, multipliers (1, 2, 2, 4), attention on the
    /// two lowest levels, 2 blocks per level.
    pub fn labml(channels: usize) -> UNetConfig {
        UNetConfig {
            in_channels: channels,
            out_channels: channels,
            block_out_channels: vec![64, 128, 128, 256],
            down_block_types: [DOWN_BLOCK, DOWN_BLOCK, ATTN_DOWN_BLOCK, ATTN_DOWN_BLOCK].map(String::from).to_vec(),
            up_block_types: [ATTN_UP_BLOCK, ATTN_UP_BLOCK, UP_BLOCK, UP_BLOCK].map(String::from).to_vec(),
            ..UNetConfig::ddpm_cifar10()
        }
    }

    /// A small UNet that trains on 2 CPU cores: base 32, multipliers (1, 2, 2), 2 blocks per
    /// level, attention at 8×8, 8 groups per GroupNorm.
    pub fn tiny(channels: usize) -> UNetConfig {
        UNetConfig {
            in_channels: channels,
            out_channels: channels,
            block_out_channels: vec![32, 64, 64],
            down_block_types: [DOWN_BLOCK, DOWN_BLOCK, ATTN_DOWN_BLOCK].map(String::from).to_vec(),
            up_block_types: [ATTN_UP_BLOCK, UP_BLOCK, UP_BLOCK].map(String::from).to_vec(),
            norm_num_groups: 8,
            ..UNetConfig::ddpm_cifar10()
        }
    }

    /// A preset by name: `tiny`, `labml`, `ddpm-cifar10` (the first two for `channels` image
    /// channels; the CIFAR-10 model is always RGB).
    pub fn preset(name: &str, channels: usize) -> Result<UNetConfig> {
        match name {
            "tiny" => Ok(UNetConfig::tiny(channels)),
            "labml" => Ok(UNetConfig::labml(channels)),
            "ddpm-cifar10" => Ok(UNetConfig::ddpm_cifar10()),
            // 10 classes (Fashion-MNIST's) and the null class of classifier-free guidance;
            // `ember train` sizes the table to the data's classes
            "tiny-cond" => Ok(UNetConfig { num_class_embeds: Some(11), ..UNetConfig::tiny(channels) }),
            other => Err(UNetError::Config(format!("unknown preset {other:?} (known: tiny, tiny-cond, labml, ddpm-cifar10)"))),
        }
    }

    /// Parses a diffusers-style `config.json`. Keys ember does not know (such as `_class_name`)
    /// are ignored; known options it does not implement are refused by [`Self::validate`];
    /// missing keys take diffusers' defaults ([`Self::diffusers_defaults`]), so that the config
    /// means the model diffusers builds from it.
    pub fn from_json(text: &str) -> Result<UNetConfig> {
        let fail = |msg: String| UNetError::Config(msg);
        let mut given = json_object(text)?;
        let defaults = match given.get("_class_name").map(|v| v.as_str()) {
            None | Some(Some(UNET_2D)) => UNetConfig::diffusers_defaults(),
            Some(Some(UNET_2D_CONDITION)) => UNetConfig::diffusers_condition_defaults(),
            Some(_) => return Err(fail(format!("_class_name {}: ember builds {UNET_2D} and {UNET_2D_CONDITION}", given["_class_name"]))),
        };
        for (key, only) in CONDITION_OPTIONS_AT_ONE_VALUE {
            let only: Value = serde_json::from_str(only).expect("a JSON literal");
            if let Some(value) = given.get(*key).filter(|v| !same_json(v, &only)) {
                return Err(fail(format!("{key} = {value} is not supported (only {only})")));
            }
        }
        for key in PER_LEVEL_OPTIONS {
            if let Some(Value::Array(values)) = given.get(*key) {
                let first = values.first().cloned().unwrap_or(Value::Null);
                if values.iter().any(|v| !same_json(v, &first)) {
                    return Err(fail(format!(
                        "{key} = {}: one value for every level is supported, not a list of different ones",
                        Value::Array(values.clone())
                    )));
                }
                given.insert(key.to_string(), first);
            }
        }
        let config = with_defaults(&defaults, given)?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }

    /// Checks what the model builder relies on, naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(UNetError::Config(msg));
        let levels = self.block_out_channels.len();
        if levels == 0 {
            return fail("block_out_channels is empty".into());
        }
        if self.sample_size == 0 {
            return fail("sample_size is missing or 0: ember needs the image size the model is for".into());
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return fail(format!(
                "{levels} levels in block_out_channels, but {} down and {} up block types",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let (down_types, up_types, mid_type) = match self.model_class.as_str() {
            UNET_2D => ([DOWN_BLOCK, ATTN_DOWN_BLOCK], [UP_BLOCK, ATTN_UP_BLOCK], MID_BLOCK),
            UNET_2D_CONDITION => ([DOWN_BLOCK, CROSS_ATTN_DOWN_BLOCK], [UP_BLOCK, CROSS_ATTN_UP_BLOCK], CROSS_ATTN_MID_BLOCK),
            other => return fail(format!("_class_name {other:?}: ember builds {UNET_2D} and {UNET_2D_CONDITION}")),
        };
        let class = &self.model_class;
        for t in &self.down_block_types {
            if !down_types.contains(&t.as_str()) {
                return fail(format!("unsupported down block type {t:?} in a {class} (supported: {down_types:?})"));
            }
        }
        for t in &self.up_block_types {
            if !up_types.contains(&t.as_str()) {
                return fail(format!("unsupported up block type {t:?} in a {class} (supported: {up_types:?})"));
            }
        }
        if self.mid_block_type != mid_type {
            return fail(format!("mid_block_type {:?}: a {class} has a {mid_type:?}", self.mid_block_type));
        }
        if self.has_cross_attention() {
            if self.cross_attention_dim.is_none_or(|d| d == 0) {
                return fail("a UNet2DConditionModel needs a positive cross_attention_dim".into());
            }
            if self.attention_head_dim.is_none() {
                return fail("a UNet2DConditionModel needs attention_head_dim (its number of heads)".into());
            }
            if self.transformer_layers_per_block == 0 {
                return fail("transformer_layers_per_block must be at least 1".into());
            }
            if self.upsample_type != "conv" {
                return fail(format!("upsample_type {:?}: a UNet2DConditionModel upsamples with \"conv\"", self.upsample_type));
            }
        } else if self.cross_attention_dim.is_some() {
            return fail(format!("cross_attention_dim is set but a {UNET_2D} has no cross-attention (_class_name {UNET_2D_CONDITION} has)"));
        }
        for &c in self.block_out_channels.iter().chain([&self.in_channels, &self.out_channels]) {
            if c == 0 {
                return fail("channel counts must be positive".into());
            }
        }
        for &c in &self.block_out_channels {
            if self.norm_num_groups == 0 || c % self.norm_num_groups != 0 {
                return fail(format!("{c} channels do not split into {} groups", self.norm_num_groups));
            }
            if let Some(h) = self.attention_head_dim
                && (h == 0 || c % h != 0)
            {
                return fail(if self.has_cross_attention() {
                    format!("{c} channels do not split into {h} heads")
                } else {
                    format!("{c} channels do not split into heads of {h}")
                });
            }
        }
        if self.layers_per_block == 0 {
            return fail("layers_per_block must be at least 1".into());
        }
        if levels > 16 {
            return fail(format!("{levels} levels: at most 16 are supported"));
        }
        if !self.sample_size.is_multiple_of(1 << (levels - 1)) {
            return fail(format!("sample_size {} does not halve {} times", self.sample_size, levels - 1));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout {} is outside [0, 1)", self.dropout));
        }
        if self.act_fn != "silu" {
            return fail(format!("act_fn {:?}: only \"silu\" is supported", self.act_fn));
        }
        if self.time_embedding_type != "positional" {
            return fail(format!("time_embedding_type {:?}: only \"positional\" is supported", self.time_embedding_type));
        }
        if self.upsample_type != "conv" && self.upsample_type != "conv_transpose" {
            return fail(format!("upsample_type {:?}: \"conv\" or \"conv_transpose\"", self.upsample_type));
        }
        if self.mid_block_scale_factor != 1.0 || self.center_input_sample {
            return fail("mid_block_scale_factor ≠ 1 and center_input_sample are not supported".into());
        }
        match (self.class_embed_type.as_deref(), self.num_class_embeds) {
            (None, Some(0)) => return fail("num_class_embeds must be at least 1".into()),
            (None, _) | (Some("timestep"), _) => {}
            (Some(other), _) => return fail(format!("class_embed_type {other:?}: only null (with num_class_embeds) and \"timestep\" are supported")),
        }
        let unsupported = [
            (self.attn_norm_num_groups.is_some_and(|g| g != self.norm_num_groups), "attn_norm_num_groups ≠ norm_num_groups"),
            (self.resnet_time_scale_shift != "default", "resnet_time_scale_shift other than \"default\""),
            (!self.add_attention, "add_attention = false"),
            (self.time_embedding_dim.is_some_and(|d| d != 4 * self.block_out_channels[0]), "time_embedding_dim ≠ 4 × block_out_channels[0]"),
            (self.downsample_type != "conv", "downsample_type other than \"conv\""),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
            return fail(format!("{what} is not supported"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip_through_json() {
        for name in ["tiny", "labml", "ddpm-cifar10"] {
            let config = UNetConfig::preset(name, 1).unwrap();
            config.validate().unwrap();
            assert_eq!(UNetConfig::from_json(&config.to_json()).unwrap(), config, "{name}");
        }
        assert!(UNetConfig::preset("huge", 1).is_err());
    }

    #[test]
    fn a_diffusers_config_loads_and_unsupported_options_are_refused() {
        let diffusers = r#"{"_class_name": "UNet2DModel", "_diffusers_version": "0.42.1", "act_fn": "silu",
            "attention_head_dim": null, "block_out_channels": [128, 256, 256, 256], "center_input_sample": false,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
            "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
            "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}"#;
        let config = UNetConfig::from_json(diffusers).unwrap();
        // google/ddpm-cifar10-32's config.json has no "dropout": diffusers builds the model
        // with its default, 0 (dropout matters only to training)
        assert_eq!(config, UNetConfig { dropout: 0.0, ..UNetConfig::ddpm_cifar10() });
        // a minimal config: the missing keys take diffusers' defaults, not a preset's
        let minimal = UNetConfig::from_json(
            r#"{"sample_size": 32, "block_out_channels": [32, 64], "norm_num_groups": 8,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}"#,
        )
        .unwrap();
        let defaults = UNetConfig::diffusers_defaults();
        assert_eq!((minimal.flip_sin_to_cos, minimal.freq_shift, minimal.downsample_padding), (true, 0.0, 1));
        assert_eq!((minimal.norm_eps, minimal.dropout, minimal.attention_head_dim), (1e-5, 0.0, Some(8)));
        assert_eq!((minimal.in_channels, minimal.layers_per_block), (defaults.in_channels, defaults.layers_per_block));
        let err = UNetConfig::from_json(
            r#"{"block_out_channels": [32, 64], "norm_num_groups": 8,
            "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sample_size"), "{err}");
        for (key, value) in [
            ("attn_norm_num_groups", "8"),
            ("resnet_time_scale_shift", "\"scale_shift\""),
            ("class_embed_type", "\"identity\""),
            ("num_class_embeds", "0"),
            ("act_fn", "\"gelu\""),
            ("down_block_types", "[\"CrossAttnDownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\"]"),
            ("norm_num_groups", "7"),
            ("block_out_channels", "[128, 256]"),
        ] {
            let text = format!("{{\"{key}\": {value}}}");
            let err = UNetConfig::from_json(&text).err().unwrap_or_else(|| panic!("{key} = {value} was accepted"));
            assert!(matches!(err, UNetError::Config(_)), "{key}: {err}");
        }
    }

    #[test]
    fn a_cross_attention_config_takes_its_class_defaults_and_refuses_what_ember_does_not_build() {
        let base = r#""_class_name": "UNet2DConditionModel", "sample_size": 16, "block_out_channels": [32, 64], "norm_num_groups": 8,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]"#;
        let with = |extra: &str| UNetConfig::from_json(&format!("{{{base}{extra}}}"));
        let config = with("").unwrap();
        assert!(config.has_cross_attention());
        assert_eq!((config.cross_attention_dim, config.attention_head_dim, config.in_channels), (Some(1280), Some(8), 4));
        assert_eq!(config.mid_block_type, CROSS_ATTN_MID_BLOCK);
        assert_eq!(UNetConfig::from_json(&config.to_json()).unwrap(), config);
        // per-level lists of one value read as that value; different values are refused
        let listed = with(r#", "attention_head_dim": [4, 4], "transformer_layers_per_block": [2, 2], "cross_attention_dim": [32, 32]"#).unwrap();
        assert_eq!((listed.attention_head_dim, listed.transformer_layers_per_block, listed.cross_attention_dim), (Some(4), 2, Some(32)));
        let message = |extra: &str| with(extra).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(r#", "attention_head_dim": [4, 8]"#).contains("one value for every level"));
        assert!(message(r#", "only_cross_attention": true"#).contains("only_cross_attention"));
        assert!(message(r#", "addition_embed_type": "text""#).contains("addition_embed_type"));
        assert!(message(r#", "attention_head_dim": 3"#).contains("do not split into 3 heads"));
        assert!(message(r#", "mid_block_type": "UNetMidBlock2D""#).contains("UNetMidBlock2DCrossAttn"));
        assert!(message(r#", "down_block_types": ["AttnDownBlock2D", "DownBlock2D"]"#).contains("unsupported down block type"));
        assert!(UNetConfig::from_json(r#"{"_class_name": "UNet3DConditionModel", "sample_size": 16}"#).is_err());
        // a UNet2DModel has no cross-attention
        let err = UNetConfig::from_json(r#"{"sample_size": 16, "cross_attention_dim": 32}"#).unwrap_err().to_string();
        assert!(err.contains("no cross-attention"), "{err}");
    }
}
