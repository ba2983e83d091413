//! Training the autoencoder of latent diffusion: the objective (a reconstruction term plus β
//! times the KL of the posterior to N(0, I), the negative ELBO up to the reconstruction's
//! weighting) and the reconstruction quality it reports, PSNR.

use ember_tensor::Tensor;
use ember_tensor::rng::Rng;
use ember_unet::AutoencoderKL;

use crate::error::Result;

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
