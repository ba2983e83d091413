//! GEGLU (Shazeer 2020, "GLU Variants Improve Transformer"), the gated feed-forward of
//! diffusers' `BasicTransformerBlock`, a composition of primitive ops (its gradient comes from
//! the parts).

use crate::Tensor;
use crate::error::{Result, invalid};

impl Tensor {
    /// The gated GELU of the last axis split in two halves `[h, g]`: `h ⊙ gelu(g)` (exact, erf
    /// GELU, as `torch.nn.functional.gelu`), so `[..., 2n] → [..., n]`. This is diffusers'
    /// `GEGLU.forward` after its projection (`hidden_states, gate = proj(x).chunk(2, dim=-1)`).
    /// Gradients: `∂/∂h = gelu(g)`, `∂/∂g = h ⊙ gelu′(g)`.
    pub fn geglu(&self) -> Result<Tensor> {
        let Some(&width) = self.shape().last() else {
            return invalid("geglu", "needs at least one axis");
        };
        if width == 0 || width % 2 != 0 {
            return invalid("geglu", format!("the last axis splits into two equal halves, got {width} in {:?}", self.shape()));
        }
        let axis = self.rank() as isize - 1;
        let (hidden, gate) = (self.narrow(axis, 0, width / 2)?, self.narrow(axis, width / 2, width / 2)?);
        hidden.mul(&gate.gelu()?)
    }
}
