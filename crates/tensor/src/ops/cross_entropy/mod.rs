//! The cross-entropy loss of class scores against integer targets, a composition of
//! primitive ops (its gradient comes from the parts: `∂/∂logitsᵢⱼ = (softmaxᵢⱼ − [j = yᵢ])/n`).

use crate::Tensor;
use crate::error::{Result, TensorError, invalid};

impl Tensor {
    /// Mean cross-entropy of `logits [n, classes]` (unnormalized scores) against the target
    /// classes `targets[i] < classes`: `−(1/n) Σᵢ log_softmax(logitsᵢ)[targetsᵢ]`, PyTorch's
    /// `F.cross_entropy` with the mean reduction. The targets select through a one-hot mask
    /// built on the host, so no gather op is needed.
    pub fn cross_entropy(&self, targets: &[usize]) -> Result<Tensor> {
        let op = "cross_entropy";
        let &[n, classes] = self.shape() else {
            return invalid(op, format!("logits must be [n, classes], got {:?}", self.shape()));
        };
        if targets.len() != n {
            return Err(TensorError::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: vec![targets.len()] });
        }
        if n == 0 || classes == 0 {
            return invalid(op, format!("empty logits {:?}", self.shape()));
        }
        if let Some((i, &target)) = targets.iter().enumerate().find(|&(_, &t)| t >= classes) {
            return invalid(op, format!("target {i} is class {target}, but there are {classes} classes"));
        }
        let mut one_hot = vec![0.0; n * classes];
        for (i, &target) in targets.iter().enumerate() {
            one_hot[i * classes + target] = 1.0;
        }
        let mask = Tensor::from_f64(&one_hot, &[n, classes], self.dtype())?.to_device(self.device())?;
        self.log_softmax(1)?.mul(&mask)?.sum_all()?.mul_scalar(-1.0 / n as f64)
    }
}
