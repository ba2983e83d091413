//! The mean squared error loss, a composition of primitive ops (its gradient comes from the
//! parts: `∂/∂pred = 2(pred − target)/n`).

use crate::Tensor;
use crate::error::{Result, TensorError};

impl Tensor {
    /// Mean squared error, `mean((pred − target)²)`; the shapes must be equal.
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(TensorError::ShapeMismatch { op: "mse_loss", lhs: self.shape().to_vec(), rhs: target.shape().to_vec() });
        }
        self.sub(target)?.sqr()?.mean_all()
    }
}
