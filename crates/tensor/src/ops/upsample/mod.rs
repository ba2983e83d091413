//! Nearest-neighbour upsampling of images by an integer factor.

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, invalid};

/// Nearest upsampling's kernels, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait UpsampleKernels {
    /// The upsampling of `x [n, c, h, w]` (`shape`) by `scale`, or with `adjoint`, its
    /// backward from the gradient `[n, c, h·scale, w·scale]`: each input element gets the sum
    /// of its `scale × scale` block.
    fn upsample_nearest2d(&self, x: &Tensor, shape: [usize; 4], scale: usize, adjoint: bool) -> Result<Tensor>;
}

impl Tensor {
    /// Nearest-neighbour upsampling of `[N, C, H, W]` by an integer `scale`: each pixel becomes
    /// a `scale`×`scale` block. Backward: each input pixel gets the sum of its block's
    /// gradient. One kernel each way on each device.
    pub fn upsample_nearest2d(&self, scale: usize) -> Result<Tensor> {
        crate::ops::check_rank("upsample_nearest2d", self, 4, "input")?;
        if scale == 0 {
            return invalid("upsample_nearest2d", "scale must be positive");
        }
        let [n, c, h, w] = self.shape().try_into().unwrap();
        let kernels = kernels(self);
        let y = kernels.upsample_nearest2d(self, [n, c, h, w], scale, false)?;
        Ok(y.with_backward("upsample_nearest2d", &[self], move |g| Ok(vec![Some(kernels.upsample_nearest2d(g, [n, c, h, w], scale, true)?)])))
    }
}
