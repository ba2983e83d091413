//! Reverse-mode automatic differentiation, define-by-run.
//!
//! Every op that takes inputs requiring gradients attaches a [`GradFn`] to its output: the
//! inputs, and a closure mapping the output's gradient to the inputs' gradients (written next
//! to the op's forward, in `ops/`). [`Tensor::backward`] sorts the graph topologically and
//! runs the closures from the loss back to the leaves, summing gradients where a tensor is
//! used more than once. The graph lives in the `Arc`s between tensors: dropping the outputs
//! frees it and every tensor it saved.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use crate::error::{Result, TensorError};
use crate::tensor::{Tensor, TensorId};

/// The maps a tensor's gradient to its inputs' gradients (`None`: no gradient to that input).
pub(crate) type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// How an op's output sends its gradient back.
pub(crate) struct GradFn {
    pub(crate) op: &'static str,
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) backward: BackwardFn,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record the graph on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns graph recording off on this thread until the guard is dropped (inference, optimizer
/// updates, and the backward pass itself).
#[must_use = "grad mode comes back when the guard is dropped"]
pub struct NoGradGuard {
    previous: bool,
}

pub fn no_grad() -> NoGradGuard {
    NoGradGuard { previous: GRAD_ENABLED.with(|g| g.replace(false)) }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// The gradients of a backward pass, one per variable reached, keyed by the variable.
#[derive(Default, Clone, Debug)]
pub struct Gradients {
    by_id: HashMap<TensorId, Tensor>,
}

impl Gradients {
    /// The gradient of `variable` (same shape), if it was reached.
    pub fn get(&self, variable: &Tensor) -> Option<&Tensor> {
        self.by_id.get(&variable.id())
    }

    pub fn insert(&mut self, variable: &Tensor, grad: Tensor) {
        self.by_id.insert(variable.id(), grad);
    }

    pub fn remove(&mut self, variable: &Tensor) -> Option<Tensor> {
        self.by_id.remove(&variable.id())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Adds `other`'s gradients into these (gradient accumulation over several backward passes).
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        let _guard = no_grad();
        for (id, grad) in other.by_id {
            let summed = match self.by_id.remove(&id) {
                Some(existing) => existing.add(&grad)?,
                None => grad,
            };
            self.by_id.insert(id, summed);
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor` (e.g. to average accumulated gradients).
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        let _guard = no_grad();
        for grad in self.by_id.values_mut() {
            *grad = grad.mul_scalar(factor)?;
        }
        Ok(())
    }

    /// The L2 norm over all gradients together.
    pub fn global_norm(&self) -> Result<f64> {
        let _guard = no_grad();
        let mut sum_sq = 0.0;
        for grad in self.by_id.values() {
            sum_sq += grad.sqr()?.sum_all()?.item()?;
        }
        Ok(sum_sq.sqrt())
    }

    /// Scales all gradients down so that their global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`, with its 1e-6 guard). Returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            self.scale(factor)?;
        }
        Ok(norm)
    }
}

impl Tensor {
    /// Back-propagates from this one-element tensor (usually a loss) and returns the gradient
    /// of every variable it depends on.
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(TensorError::Autograd {
                msg: format!("backward needs a one-element tensor, got shape {:?}; use backward_with", self.shape()),
            });
        }
        self.backward_with(&self.ones_like()?)
    }

    /// Back-propagates `grad` (the gradient of some scalar with respect to `self`).
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        if grad.shape() != self.shape() {
            return Err(TensorError::ShapeMismatch { op: "backward", lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        if !self.requires_grad() {
            return Err(TensorError::Autograd { msg: "this tensor does not depend on any variable".into() });
        }
        let _guard = no_grad();
        let order = topological_order(self);
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(self.id(), grad.clone());
        let mut result = Gradients::default();

        for node in order.iter().rev() {
            let Some(grad) = pending.remove(&node.id()) else { continue };
            let Some(grad_fn) = node.grad_fn() else {
                if node.is_variable() {
                    result.by_id.insert(node.id(), grad);
                }
                continue;
            };
            let input_grads = (grad_fn.backward)(&grad)?;
            debug_assert_eq!(input_grads.len(), grad_fn.inputs.len(), "{}", grad_fn.op);
            for (input, input_grad) in grad_fn.inputs.iter().zip(input_grads) {
                let Some(input_grad) = input_grad else { continue };
                if !input.requires_grad() {
                    continue;
                }
                if input_grad.shape() != input.shape() {
                    return Err(TensorError::Autograd {
                        msg: format!(
                            "{} produced a gradient of shape {:?} for an input of shape {:?}",
                            grad_fn.op,
                            input_grad.shape(),
                            input.shape()
                        ),
                    });
                }
                let summed = match pending.remove(&input.id()) {
                    Some(existing) => existing.add(&input_grad)?,
                    None => input_grad,
                };
                pending.insert(input.id(), summed);
            }
        }
        Ok(result)
    }
}

/// Every tensor `root` depends on through recorded ops, each after all of its inputs
/// (iterative depth-first search, so deep graphs do not overflow the stack).
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, inputs_done)) = stack.pop() {
        if inputs_done {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id()) {
            continue;
        }
        stack.push((node.clone(), true));
        if let Some(grad_fn) = node.grad_fn() {
            for input in &grad_fn.inputs {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor};

    #[test]
    fn a_very_long_graph_backpropagates_and_drops_without_overflowing_the_stack() {
        let x = Tensor::ones(&[4], DType::F64).variable();
        let mut y = x.clone();
        for _ in 0..200_000 {
            y = y.add_scalar(1e-6).unwrap();
        }
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&x).unwrap().to_vec_f64(), vec![1.0; 4]);
        drop(y); // frees 200k records iteratively
    }
}
