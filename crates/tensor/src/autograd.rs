//! Reverse-mode automatic differentiation, define-by-run.
//!
//! Every op that takes inputs requiring gradients attaches a [`GradFn`] node to its output:
//! edges to its inputs' nodes, and a closure mapping the output's gradient to the inputs'
//! gradients (written next to the op's forward, in `ops/`). [`Tensor::backward`] sorts the
//! nodes topologically and runs the closures from the loss back to the leaves, summing
//! gradients where a tensor is used more than once.
//!
//! Memory, as in PyTorch: the graph holds nodes, not tensors, so the only activations alive
//! after a forward are those some closure saved; a backward pass frees each node's saved
//! tensors as soon as its closure has run (unless asked to retain the graph); dropping the
//! outputs frees the whole graph.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::error::{Result, TensorError};
use crate::tensor::{Tensor, TensorId};

/// The maps a tensor's gradient to its inputs' gradients (`None`: no gradient to that input).
pub(crate) type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// How an op's output sends its gradient back: a node of the graph. Its output tensor points
/// to it; it points to its inputs' nodes ([`Edge`]s), not to their data, so an intermediate
/// result that no backward needs is freed as soon as the forward drops it (only what a closure
/// captured stays alive).
pub(crate) struct GradFn {
    pub(crate) op: &'static str,
    /// The id of the output tensor (gradients are collected per tensor).
    id: TensorId,
    /// The edges to the inputs and the backward closure (which holds what the op saved). A
    /// backward pass takes them out as soon as it has run the closure, so that the saved
    /// tensors are freed while the pass goes on (PyTorch's default); `None` afterwards.
    record: Mutex<Option<OpRecord>>,
}

struct OpRecord {
    inputs: Vec<Edge>,
    backward: BackwardFn,
}

/// Where the gradient of one input goes: the node of the op that made it, or, for a
/// variable, the result.
struct Edge {
    id: TensorId,
    shape: Vec<usize>,
    node: Option<Arc<GradFn>>,
    is_variable: bool,
}

impl Edge {
    fn to(tensor: &Tensor) -> Edge {
        Edge { id: tensor.id(), shape: tensor.shape().to_vec(), node: tensor.grad_fn().cloned(), is_variable: tensor.is_variable() }
    }
    fn wants_grad(&self) -> bool {
        self.is_variable || self.node.is_some()
    }
}

impl GradFn {
    /// The node for the output `id` of `op`.
    pub(crate) fn new(op: &'static str, id: TensorId, inputs: &[&Tensor], backward: BackwardFn) -> GradFn {
        let inputs = inputs.iter().map(|t| Edge::to(t)).collect();
        GradFn { op, id, record: Mutex::new(Some(OpRecord { inputs, backward })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpRecord>> {
        self.record.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_record(&mut self) -> Option<OpRecord> {
        self.record.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    fn freed_error(&self) -> TensorError {
        TensorError::Autograd {
            msg: format!(
                "the graph through `{}` was freed by an earlier backward pass (its saved tensors are released as the pass \
                 goes); use backward_retaining_graph to back-propagate through a graph more than once",
                self.op
            ),
        }
    }
}

/// Frees a graph iteratively: dropping the last handle to a long chain of recorded ops would
/// otherwise recurse once per op and could overflow the stack.
impl Drop for GradFn {
    fn drop(&mut self) {
        let Some(record) = self.take_record() else { return };
        drop(record.backward);
        let mut pending: Vec<Arc<GradFn>> = record.inputs.into_iter().filter_map(|edge| edge.node).collect();
        while let Some(node) = pending.pop() {
            if let Ok(mut node) = Arc::try_unwrap(node)
                && let Some(record) = node.take_record()
            {
                pending.extend(record.inputs.into_iter().filter_map(|edge| edge.node));
            }
        }
    }
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

    /// The L2 norm over all gradients together. When every gradient is f32 on one CUDA device,
    /// one launch sums the squares of them all and one read brings the norm back (no read per
    /// tensor); otherwise each tensor's sum of squares is read and added in f64.
    pub fn global_norm(&self) -> Result<f64> {
        let _guard = no_grad();
        // summed in a fixed order (by tensor id, not the map's), so that the norm, and the
        // clipping it decides, repeat bit for bit from one process to the next
        let mut ids: Vec<&TensorId> = self.by_id.keys().collect();
        ids.sort_unstable();
        let grads: Vec<&Tensor> = ids.iter().map(|id| &self.by_id[*id]).collect();
        if let Some(first) = grads.first()
            && matches!(first.device(), crate::Device::Cuda(_))
            && grads.iter().all(|g| g.device() == first.device() && g.dtype() == crate::DType::F32)
        {
            let dense = grads.iter().map(|g| crate::ops::dense(g)).collect::<Result<Vec<_>>>()?;
            return crate::optim::with_list_buffers("global norm", [&dense.iter().collect()], crate::cuda::kernels::l2_norm_list);
        }
        let mut sum_sq = 0.0;
        for grad in grads {
            sum_sq += grad.sqr()?.sum_all()?.item()?;
        }
        Ok(sum_sq.sqrt())
    }

    /// Scales all gradients down so that their global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`: the factor [`clip_factor`]). Returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let factor = clip_factor(norm, max_norm);
        if factor < 1.0 {
            self.scale(factor)?;
        }
        Ok(norm)
    }
}

/// The factor that gradient clipping multiplies gradients of global norm `norm` by so that
/// it is at most `max_norm`: `max_norm / (norm + 1e-6)` where that is below 1 (PyTorch's
/// `clip_grad_norm_` and its guard), else 1.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 { factor } else { 1.0 }
}

impl Tensor {
    /// Back-propagates from this one-element tensor (usually a loss) and returns the gradient
    /// of every variable it depends on.
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(TensorError::Autograd { msg: format!("backward needs a one-element tensor, got shape {:?}; use backward_with", self.shape()) });
        }
        self.backward_with(&self.ones_like()?)
    }

    /// Back-propagates `grad` (the gradient of some scalar with respect to `self`).
    ///
    /// Each op's saved tensors are freed as soon as its backward has run, so the pass needs
    /// less memory than the forward left alive; the graph cannot be back-propagated through
    /// again (an error says so). [`Tensor::backward_retaining_graph`] keeps it.
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        self.backward_pass(grad, false)
    }

    /// [`Tensor::backward_with`] that leaves the graph intact, for a second backward pass
    /// through it (PyTorch's `retain_graph=True`).
    pub fn backward_retaining_graph(&self, grad: &Tensor) -> Result<Gradients> {
        self.backward_pass(grad, true)
    }

    fn backward_pass(&self, grad: &Tensor, retain_graph: bool) -> Result<Gradients> {
        if grad.shape() != self.shape() {
            return Err(TensorError::ShapeMismatch { op: "backward", lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        let mut result = Gradients::default();
        let Some(root) = self.grad_fn() else {
            if !self.is_variable() {
                return Err(TensorError::Autograd { msg: "this tensor does not depend on any variable".into() });
            }
            result.by_id.insert(self.id(), grad.clone());
            return Ok(result);
        };
        let _guard = no_grad();
        let _profile_scope = crate::profile::BackwardScope::enter();
        let mut order = topological_order(root);
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(root.id, grad.clone());

        // from the root back; each node's gradient is dropped once handled
        while let Some(node) = order.pop() {
            let Some(grad) = pending.remove(&node.id) else { continue };
            let mut slot = node.lock();
            let record = slot.as_ref().ok_or_else(|| node.freed_error())?;
            let input_grads = (record.backward)(&grad)?;
            drop(grad);
            crate::profile::mark("backward", node.op);
            if input_grads.len() != record.inputs.len() {
                return Err(TensorError::Autograd {
                    msg: format!("{}'s backward returned {} gradients for {} inputs", node.op, input_grads.len(), record.inputs.len()),
                });
            }
            for (input, input_grad) in record.inputs.iter().zip(input_grads) {
                let Some(input_grad) = input_grad else { continue };
                if !input.wants_grad() {
                    continue;
                }
                if input_grad.shape() != input.shape {
                    return Err(TensorError::Autograd {
                        msg: format!("{} produced a gradient of shape {:?} for an input of shape {:?}", node.op, input_grad.shape(), input.shape),
                    });
                }
                // a variable's gradient is final; an op's waits in `pending` for its node
                let sums = if input.node.is_some() { &mut pending } else { &mut result.by_id };
                let summed = match sums.remove(&input.id) {
                    Some(existing) => existing.add_into_own(&input_grad)?,
                    None => input_grad,
                };
                sums.insert(input.id, summed);
            }
            crate::profile::mark("backward", "(sum)");
            if !retain_graph {
                // frees what the op saved, and its hold on its inputs' nodes
                let freed = slot.take();
                drop(slot);
                drop(freed);
                crate::profile::mark("backward", "(free)");
            }
        }
        Ok(result)
    }
}

/// Every node `root` depends on, each after all of its inputs' nodes (iterative depth-first
/// search, so deep graphs do not overflow the stack).
fn topological_order(root: &Arc<GradFn>) -> Vec<Arc<GradFn>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, inputs_done)) = stack.pop() {
        if inputs_done {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id) {
            continue;
        }
        stack.push((node.clone(), true));
        // (a freed record has no inputs to visit: reaching it is an error in the pass)
        let inputs: Vec<Arc<GradFn>> = node.lock().iter().flat_map(|r| &r.inputs).filter_map(|e| e.node.clone()).collect();
        for input in inputs {
            if !visited.contains(&input.id) {
                stack.push((input, false));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor, TensorError};

    #[test]
    fn a_backward_returning_the_wrong_number_of_gradients_is_an_error() {
        let x = Tensor::from_f64(&[1.0, 2.0], &[2], DType::F64).unwrap().variable();
        // one input, two gradients: a bug in an op that must not pass silently in release builds
        let y = x.detach().with_backward("broken", &[&x], |g| Ok(vec![Some(g.clone()), Some(g.clone())]));
        match y.sum_all().unwrap().backward() {
            Err(TensorError::Autograd { msg }) => assert!(msg.contains("broken") && msg.contains("2 gradients for 1 inputs"), "{msg}"),
            other => panic!("expected an Autograd error, got {other:?}"),
        }
    }

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

    #[test]
    fn a_backward_pass_frees_what_each_op_saved_unless_the_graph_is_retained() {
        let x = Tensor::from_f64(&[0.5, -1.0, 2.0], &[3], DType::F64).unwrap().variable();
        let e = x.exp().unwrap(); // saves a view of its output for the backward
        let loss = e.mul_scalar(3.0).unwrap().sum_all().unwrap();
        assert_eq!(e.storage_holders(), 2, "e, and exp's saved view");
        let one = loss.ones_like().unwrap();
        loss.backward_retaining_graph(&one).unwrap();
        assert_eq!(e.storage_holders(), 2, "retained");
        let grads = loss.backward().unwrap();
        assert_eq!(e.storage_holders(), 1, "the saved view is gone");
        assert_eq!(grads.get(&x).unwrap().to_vec_f64(), e.mul_scalar(3.0).unwrap().to_vec_f64());
    }

    #[test]
    fn gradients_are_summed_in_place_only_into_a_buffer_nothing_else_holds() {
        let a = Tensor::from_f64(&[1.0, 2.0, 3.0], &[3], DType::F64).unwrap();
        let b = Tensor::from_f64(&[10.0, 20.0, 30.0], &[3], DType::F64).unwrap();
        let seen = a.clone(); // a second handle: the sum must not write into a's buffer
        let sum = a.add_into_own(&b).unwrap();
        assert!(!sum.shares_storage_with(&seen));
        assert_eq!(seen.to_vec_f64(), vec![1.0, 2.0, 3.0]);
        let own = sum.deep_copy().unwrap(); // held by nothing else: summed in place
        let again = own.add_into_own(&b).unwrap();
        assert_eq!(again.to_vec_f64(), vec![21.0, 42.0, 63.0]);
        // a variable used three times: its gradient sums three contributions
        let x = Tensor::from_f64(&[0.5, -1.0], &[2], DType::F64).unwrap().variable();
        let y = x.mul_scalar(2.0).unwrap().add(&x.mul_scalar(3.0).unwrap()).unwrap().add(&x).unwrap();
        assert_eq!(y.sum_all().unwrap().backward().unwrap().get(&x).unwrap().to_vec_f64(), vec![6.0, 6.0]);
    }

    #[test]
    fn the_graph_does_not_keep_an_intermediate_result_that_no_backward_saved() {
        let x = Tensor::from_f64(&[0.5, -1.0, 2.0], &[3], DType::F64).unwrap().variable();
        let doubled = x.mul_scalar(2.0).unwrap(); // an affine map saves nothing
        let data = doubled.storage_weak();
        let loss = doubled.add_scalar(1.0).unwrap().sum_all().unwrap();
        drop(doubled);
        assert!(data.upgrade().is_none(), "freed though the graph through it lives");
        assert_eq!(loss.backward().unwrap().get(&x).unwrap().to_vec_f64(), vec![2.0; 3]);
    }
}
