//! Inverted dropout, which saves no mask: its backward draws the same mask again.

pub mod cpu;
mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, invalid};
use crate::rng::Rng;

/// Dropout's kernel, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait DropoutKernels {
    /// `x ⊙ mask`, the mask zero with probability `p` and `1/(1 − p)` elsewhere, drawn from
    /// `rng` (which advances past it).
    fn dropout_apply(&self, x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor>;
}

/// `x ⊙ mask` with the mask drawn as a tensor first (every device and dtype).
fn apply_drawn_mask(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let mask = Tensor::dropout_mask_on(x.shape(), p, x.dtype(), x.device(), rng)?;
    let _guard = crate::no_grad();
    x.mul(&mask)
}

impl Tensor {
    /// Inverted dropout: each element is zeroed with probability `p` and the survivors scaled
    /// by `1/(1 − p)`, so the expectation is unchanged; the identity when not `training`. The
    /// mask comes from `rng` (reproducible). Backward: `dx = dy ⊙ mask`.
    ///
    /// Nothing is saved for the backward but the position of `rng`'s stream: Philox is
    /// counter-based, so the backward draws the same mask again (16 bytes kept instead of a
    /// mask the size of `x`).
    pub fn dropout(&self, p: f64, training: bool, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return invalid("dropout", format!("probability {p} is outside [0, 1)"));
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        let (kernels, stream) = (kernels(self), rng.clone());
        let out = kernels.dropout_apply(self, p, rng)?;
        Ok(out.with_backward("dropout", &[self], move |g| Ok(vec![Some(kernels.dropout_apply(g, p, &mut stream.clone())?)])))
    }
}
