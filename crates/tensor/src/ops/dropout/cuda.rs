//! Dropout on a CUDA device: the mask drawn on the device (kernels/rng.cu, the CPU's Philox
//! stream), then multiplied in.

use super::{DropoutKernels, apply_drawn_mask};
use crate::dispatch::Cuda;
use crate::rng::Rng;
use crate::{Result, Tensor};

impl DropoutKernels for Cuda {
    fn dropout_apply(&self, x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
        apply_drawn_mask(x, p, rng)
    }
}
