//! Dropout on the CPU: one pass each way, `x ⊙ mask` then `dy ⊙ mask`, the mask drawn as it
//! goes (f32 and f64; other dtypes take the drawn mask).

use super::{DropoutKernels, apply_drawn_mask};
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_elements, wrap};
use crate::ops::dense;
use crate::rng::Rng;
use crate::{DType, Result, Tensor};

impl DropoutKernels for Cpu {
    fn dropout_apply(&self, x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
        if !matches!(x.dtype(), DType::F32 | DType::F64) {
            return apply_drawn_mask(x, p, rng);
        }
        let scale = 1.0 / (1.0 - p);
        let x = dense(x)?;
        let out = with_host_elements!("dropout", [&x => xs], wrap(rng.dropout_apply(xs, p, scale)));
        Ok(host_tensor(out, x.shape()))
    }
}
