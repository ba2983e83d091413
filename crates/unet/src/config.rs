//! The UNet's architecture, in the fields and spelling of diffusers' `UNet2DModel` config
//! (so a diffusers `config.json` loads as is), plus ember's presets.

use serde::{Deserialize, Serialize};

use crate::error::{Result, UNetError};

/// A down-path block: residual blocks, optionally each followed by self-attention.
pub const DOWN_BLOCK: &str = "DownBlock2D";
pub const ATTN_DOWN_BLOCK: &str = "AttnDownBlock2D";
pub const UP_BLOCK: &str = "UpBlock2D";
pub const ATTN_UP_BLOCK: &str = "AttnUpBlock2D";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
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
    /// Channels per attention head; `None` means one head over all channels.
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
    pub mid_block_type: String,
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
            mid_block_type: "UNetMidBlock2D".into(),
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
        let config: UNetConfig = serde_json::from_str(text).map_err(|e| UNetError::Config(e.to_string()))?;
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
        for t in &self.down_block_types {
            if t != DOWN_BLOCK && t != ATTN_DOWN_BLOCK {
                return fail(format!("unsupported down block type {t:?}"));
            }
        }
        for t in &self.up_block_types {
            if t != UP_BLOCK && t != ATTN_UP_BLOCK {
                return fail(format!("unsupported up block type {t:?}"));
            }
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
                return fail(format!("{c} channels do not split into heads of {h}"));
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
            (self.mid_block_type != "UNetMidBlock2D", "mid_block_type other than \"UNetMidBlock2D\""),
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
}
