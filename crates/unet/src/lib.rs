//! The DDPM UNet and its layers.
//!
//! - [`layers`]: Linear, Conv2d, ConvTranspose2d, GroupNorm (PyTorch layouts and inits).
//! - [`blocks`]: the residual block, multi-head attention and spatial self-attention, down/up
//!   samplers, and the down / mid / up blocks, each named like its diffusers counterpart.
//! - [`transformer`]: Stable Diffusion's cross-attention transformer (`Transformer2DModel`,
//!   `BasicTransformerBlock`, GEGLU feed-forward) for `UNet2DConditionModel`s.
//! - [`unet`]: the model; [`config`]: its architecture (diffusers' `UNet2DModel` and
//!   `UNet2DConditionModel` config fields) and the presets `tiny`, `tiny-cond`, `labml`,
//!   `ddpm-cifar10`.
//! - [`clip`]: the text encoder of latent diffusion (transformers `CLIPTextModel`).
//! - [`vae`]: the variational autoencoder of latent diffusion (diffusers `AutoencoderKL`),
//!   built from the same blocks.
//! - [`module`]: parameters by name, safetensors load/save with every mismatch reported.

pub mod blocks;
pub mod clip;
pub mod config;
pub mod error;
pub mod layers;
pub mod module;
pub mod testing;
pub mod transformer;
pub mod unet;
pub mod vae;

pub use blocks::EncoderStates;
pub use config::UNetConfig;
pub use error::{Result, UNetError};
pub use module::{ForwardContext, Module};
pub use unet::{ClassEmbedding, Condition, UNet};
pub use vae::{AutoencoderKL, DiagonalGaussian, VaeConfig};

#[cfg(test)]
mod tests {
    use super::*;
    use ember_tensor::DType;
    use ember_tensor::rng::Rng;

    #[test]
    fn ddpm_cifar10_has_the_papers_35_7m_parameters() {
        let model = UNet::new(&UNetConfig::ddpm_cifar10(), DType::F32, &mut Rng::new(0)).unwrap();
        let count = module::parameter_count(&model);
        // diffusers' google/ddpm-cifar10-32 has 35,746,307 parameters ("35.7M" in the paper)
        assert_eq!(count, 35_746_307);
    }
}
