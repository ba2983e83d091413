//! Optimizers with PyTorch's semantics, updating parameters in place (fused CPU loops).
//!
//! - [`Sgd`]: `d = g + λp`; with momentum `b = μb + (1 − τ)d` (`b = d` on the first step);
//!   `d = d + μb` (Nesterov) or `d = b`; `p ← p − lr·d`.
//! - [`Adam`]: `g = g + λp` (Adam's L2) or `p ← p(1 − lr·λ)` (AdamW, decoupled);
//!   `m = β₁m + (1 − β₁)g`, `v = β₂v + (1 − β₂)g²`,
//!   `p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)`.
//!
//! A parameter without a gradient in [`Gradients`] is skipped (its step count does not move),
//! as in PyTorch. Parameters must be contiguous variables.

use std::sync::RwLockWriteGuard;

use crate::error::{Result, TensorError, invalid};
use crate::storage::Storage;
use crate::{DType, FloatElem, Gradients, Tensor};

/// One parameter's update: `param` and `state` are updated in place from `grad`.
trait UpdateRule {
    fn apply<T: FloatElem>(&self, param: &mut [T], grad: &[T], state: &mut [&mut [T]]);
}

/// Runs `rule` over the elements of `param`, its gradient and its state tensors.
fn apply_update(param: &Tensor, grad: &Tensor, state: &[&Tensor], rule: &impl UpdateRule) -> Result<()> {
    if grad.shape() != param.shape() {
        return Err(TensorError::ShapeMismatch { op: "optimizer step", lhs: param.shape().to_vec(), rhs: grad.shape().to_vec() });
    }
    if grad.dtype() != param.dtype() {
        return Err(TensorError::DTypeMismatch { op: "optimizer step", lhs: param.dtype(), rhs: grad.dtype() });
    }
    let grad = grad.contiguous()?;
    let grad_guard = grad.storage();
    let grad_range = grad.layout().contiguous_range().unwrap();
    let mut param_guard = param.storage_mut();
    let mut state_guards: Vec<RwLockWriteGuard<'_, Storage>> = state.iter().map(|t| t.storage_mut()).collect();
    fn run<T: FloatElem>(rule: &impl UpdateRule, param: &mut Storage, grad: &[T], state: &mut [RwLockWriteGuard<'_, Storage>]) -> Result<()> {
        let param = T::slice_mut(param.cpu_mut(OP)?).expect("dtype checked");
        let mut state: Vec<&mut [T]> = state.iter_mut().map(|s| Ok(T::slice_mut(s.cpu_mut(OP)?).expect("dtype checked"))).collect::<Result<_>>()?;
        rule.apply(param, grad, &mut state);
        Ok(())
    }
    const OP: &str = "optimizer step";
    match param.dtype() {
        DType::F32 => run(rule, &mut param_guard, &f32::slice(grad_guard.cpu(OP)?).unwrap()[grad_range], &mut state_guards),
        DType::F64 => run(rule, &mut param_guard, &f64::slice(grad_guard.cpu(OP)?).unwrap()[grad_range], &mut state_guards),
        dtype => Err(TensorError::UnsupportedDType { op: OP, dtype }),
    }
}

/// The exponential moving average of a parameter, in place:
/// `ema ← decay·ema + (1 − decay)·param` (a fused kernel on a CUDA device; the same f32
/// arithmetic on the CPU). Not recorded by autograd.
pub fn ema_update(ema: &Tensor, param: &Tensor, decay: f64) -> Result<()> {
    ema_update_all(&[(ema, param)], decay)
}

/// [`ema_update`] for every (ema, parameter) pair: on a CUDA device the pairs whose EMA owns
/// its whole contiguous storage take one launch together.
pub fn ema_update_all(pairs: &[(&Tensor, &Tensor)], decay: f64) -> Result<()> {
    for (ema, param) in pairs {
        if ema.shape() != param.shape() {
            return Err(TensorError::ShapeMismatch { op: "ema", lhs: ema.shape().to_vec(), rhs: param.shape().to_vec() });
        }
        crate::ops::check_same("ema", &[ema, param])?;
    }
    let _guard = crate::no_grad();
    let (fused, plain): (Vec<_>, Vec<_>) = pairs.iter().partition(|(ema, _)| is_on_cuda(ema) && owns_its_storage(ema));
    let params = fused.iter().map(|(_, p)| crate::ops::dense(p)).collect::<Result<Vec<_>>>()?;
    let emas: Vec<&Tensor> = fused.iter().map(|(e, _)| *e).collect();
    with_list_buffers("ema", [&emas, &params.iter().collect()], |list| crate::cuda::kernels::ema_update_list(list, decay))?;
    for (ema, param) in plain {
        ema.assign(&ema.mul_scalar(decay)?.add(&param.mul_scalar(1.0 - decay)?)?)?;
    }
    Ok(())
}

/// Whether `t` views its whole storage from its first element, in row-major order.
fn owns_its_storage(t: &Tensor) -> bool {
    t.layout().contiguous_range() == Some(0..t.numel())
}

/// Runs `launch` on the device buffers of a list of tensors, `ROLES` lists of the same length
/// (a role each: parameters, gradients, ...; tensor i of every role has the same element
/// count), each tensor f32 on a CUDA device with its elements from its buffer's start.
pub(crate) fn with_list_buffers<const ROLES: usize, R: Default>(
    op: &'static str,
    roles: [&Vec<&Tensor>; ROLES],
    launch: impl FnOnce(&[([&crate::cuda::DeviceBuffer; ROLES], usize)]) -> Result<R>,
) -> Result<R> {
    let count = roles[0].len();
    if count == 0 {
        return Ok(R::default());
    }
    let guards: Vec<[_; ROLES]> = (0..count).map(|i| roles.map(|r| r[i].storage())).collect();
    let mut list = Vec::with_capacity(count);
    for (i, guard) in guards.iter().enumerate() {
        let mut buffers = Vec::with_capacity(ROLES);
        for (role, g) in roles.iter().zip(guard) {
            let t = role[i];
            let gpu = g.gpu().ok_or(TensorError::DeviceMismatch { op, lhs: roles[0][i].device(), rhs: t.device() })?;
            crate::tensor::check_f32_on_device(op, gpu)?;
            if t.numel() != roles[0][i].numel() || t.layout().contiguous_range().is_none_or(|r| r.start != 0) {
                return invalid(op, "the tensors of a list must be contiguous from their buffers' start, in matching sizes");
            }
            buffers.push(&gpu.buffer);
        }
        list.push((std::array::from_fn(|r| buffers[r]), roles[0][i].numel()));
    }
    launch(&list)
}

/// The CUDA counterpart of [`apply_update`]: runs `launch(param, grad, state)` on the device
/// buffers (f32, each tensor owning its whole contiguous storage; the gradient made dense).
fn apply_update_on_gpu(
    param: &Tensor,
    grad: &Tensor,
    state: &[&Tensor],
    launch: impl FnOnce(&crate::cuda::DeviceBuffer, &crate::cuda::DeviceBuffer, &[&crate::cuda::DeviceBuffer]) -> Result<()>,
) -> Result<()> {
    const OP: &str = "optimizer step";
    if grad.device() != param.device() {
        return Err(TensorError::DeviceMismatch { op: OP, lhs: param.device(), rhs: grad.device() });
    }
    let grad = crate::ops::dense(grad)?;
    for t in std::iter::once(param).chain(state.iter().copied()) {
        if !owns_its_storage(t) {
            return invalid(OP, "parameters on a CUDA device must own their whole contiguous storage");
        }
    }
    let guards: Vec<_> = std::iter::once(param).chain([&grad]).chain(state.iter().copied()).map(|t| t.storage()).collect();
    let mut buffers = Vec::with_capacity(guards.len());
    for (guard, t) in guards.iter().zip(std::iter::once(param).chain([&grad]).chain(state.iter().copied())) {
        let gpu = guard.gpu().ok_or(TensorError::DeviceMismatch { op: OP, lhs: param.device(), rhs: t.device() })?;
        crate::tensor::check_f32_on_device(OP, gpu)?;
        buffers.push(&gpu.buffer);
    }
    launch(buffers[0], buffers[1], &buffers[2..])
}

/// Checks every present gradient against its parameter before anything is updated, so that a
/// failing step changes nothing.
fn check_grads(params: &[Tensor], grads: &Gradients) -> Result<()> {
    for param in params {
        let Some(grad) = grads.get(param) else { continue };
        if grad.shape() != param.shape() {
            return Err(TensorError::ShapeMismatch { op: "optimizer step", lhs: param.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        if grad.dtype() != param.dtype() {
            return Err(TensorError::DTypeMismatch { op: "optimizer step", lhs: param.dtype(), rhs: grad.dtype() });
        }
    }
    Ok(())
}

fn check_params(op: &'static str, params: &[Tensor]) -> Result<()> {
    for p in params {
        if !p.is_variable() || !p.is_contiguous() || p.layout().offset() != 0 {
            return invalid(op, format!("parameters must be contiguous variables; got {p:?}"));
        }
        if !p.dtype().is_compute() {
            return Err(TensorError::UnsupportedDType { op, dtype: p.dtype() });
        }
    }
    Ok(())
}

// ---- SGD ----------------------------------------------------------------------------------

/// Hyperparameters of [`Sgd`] (PyTorch's defaults apart from `lr`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl SgdConfig {
    pub fn new(lr: f64) -> Self {
        SgdConfig { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

/// Stochastic gradient descent with optional momentum and weight decay.
pub struct Sgd {
    params: Vec<Tensor>,
    pub config: SgdConfig,
    momentum_buffers: Vec<Option<Tensor>>,
}

struct SgdRule {
    config: SgdConfig,
    first_step: bool,
}

impl UpdateRule for SgdRule {
    fn apply<T: FloatElem>(&self, param: &mut [T], grad: &[T], state: &mut [&mut [T]]) {
        let c = |x: f64| T::from_f64(x);
        let (lr, mu, wd, damp) = (c(self.config.lr), c(self.config.momentum), c(self.config.weight_decay), c(self.config.dampening));
        for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
            let mut d = g + wd * *p;
            if let Some(buffer) = state.first_mut() {
                let b = &mut buffer[i];
                *b = if self.first_step { d } else { mu * *b + (T::one() - damp) * d };
                d = if self.config.nesterov { d + mu * *b } else { *b };
            }
            *p -= lr * d;
        }
    }
}

impl Sgd {
    pub fn new(params: Vec<Tensor>, config: SgdConfig) -> Result<Sgd> {
        check_params("Sgd", &params)?;
        let momentum_buffers = vec![None; params.len()];
        Ok(Sgd { params, config, momentum_buffers })
    }

    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Copies of the momentum buffers (`None` before a parameter's first step), for checkpoints.
    pub fn momentum_snapshot(&self) -> Result<Vec<Option<Tensor>>> {
        self.momentum_buffers.iter().map(|b| b.as_ref().map(|t| t.deep_copy()).transpose()).collect()
    }

    /// Restores buffers saved by [`Sgd::momentum_snapshot`].
    pub fn load_momentum(&mut self, buffers: Vec<Option<Tensor>>) -> Result<()> {
        if buffers.len() != self.params.len() {
            return invalid("Sgd::load_momentum", format!("{} buffers for {} parameters", buffers.len(), self.params.len()));
        }
        for (p, b) in self.params.iter().zip(&buffers) {
            if let Some(b) = b {
                if b.shape() != p.shape() {
                    return Err(TensorError::ShapeMismatch { op: "Sgd::load_momentum", lhs: p.shape().to_vec(), rhs: b.shape().to_vec() });
                }
                if b.dtype() != p.dtype() {
                    return Err(TensorError::DTypeMismatch { op: "Sgd::load_momentum", lhs: p.dtype(), rhs: b.dtype() });
                }
            }
        }
        self.momentum_buffers = buffers.iter().map(|b| b.as_ref().map(|t| t.deep_copy()).transpose()).collect::<Result<_>>()?;
        Ok(())
    }

    pub fn step(&mut self, grads: &Gradients) -> Result<()> {
        check_grads(&self.params, grads)?;
        for (param, buffer) in self.params.iter().zip(&mut self.momentum_buffers) {
            let Some(grad) = grads.get(param) else { continue };
            let first_step = buffer.is_none();
            if self.config.momentum != 0.0 && buffer.is_none() {
                *buffer = Some(param.zeros_like()?);
            }
            let state: Vec<&Tensor> = buffer.iter().collect();
            let rule = SgdRule { config: self.config, first_step };
            if is_on_cuda(param) {
                let c = &self.config;
                let constants = crate::cuda::kernels::SgdConstants {
                    lr: c.lr as f32,
                    momentum: c.momentum as f32,
                    dampening: c.dampening as f32,
                    weight_decay: c.weight_decay as f32,
                    nesterov: c.nesterov,
                    first_step,
                };
                apply_update_on_gpu(param, grad, &state, |p, g, buffers| {
                    crate::cuda::kernels::sgd_update(p, g, buffers.first().copied(), param.numel(), &constants)
                })?;
            } else {
                apply_update(param, grad, &state, &rule)?;
            }
        }
        Ok(())
    }
}

// ---- Adam / AdamW -------------------------------------------------------------------------

/// Hyperparameters of [`Adam`]. `decoupled_weight_decay` makes it AdamW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled_weight_decay: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight decay).
    pub fn adam(lr: f64) -> Self {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled_weight_decay: false }
    }
    /// AdamW with decoupled weight decay.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        AdamConfig { weight_decay, decoupled_weight_decay: true, ..AdamConfig::adam(lr) }
    }
}

/// Per-parameter Adam state: the step count and the two moment estimates.
#[derive(Clone, Debug)]
pub struct AdamState {
    pub step: u64,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

/// Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019).
pub struct Adam {
    params: Vec<Tensor>,
    pub config: AdamConfig,
    state: Vec<AdamState>,
}

struct AdamRule {
    config: AdamConfig,
    step: u64,
    /// The gradient's factor (gradient clipping's; 1 without).
    grad_scale: f64,
}

impl AdamRule {
    /// `(step_size, inv_bc2, decay)`: `lr / (1 − β1^t)`, `1 / √(1 − β2^t)`, `1 − lr·wd`.
    fn step_constants(&self) -> (f64, f64, f64) {
        let cfg = &self.config;
        let bias_correction1 = 1.0 - cfg.beta1.powi(self.step as i32);
        let bias_correction2_sqrt = (1.0 - cfg.beta2.powi(self.step as i32)).sqrt();
        (cfg.lr / bias_correction1, 1.0 / bias_correction2_sqrt, 1.0 - cfg.lr * cfg.weight_decay)
    }

    /// The constants of the same update on a CUDA device (kernels/optim.cu).
    fn gpu_constants(&self) -> crate::cuda::kernels::AdamConstants {
        let cfg = &self.config;
        let (step_size, inv_bc2, decay) = self.step_constants();
        crate::cuda::kernels::AdamConstants {
            beta1: cfg.beta1 as f32,
            beta2: cfg.beta2 as f32,
            eps: cfg.eps as f32,
            weight_decay: cfg.weight_decay as f32,
            decay: decay as f32,
            step_size: step_size as f32,
            inv_bc2: inv_bc2 as f32,
            decoupled: cfg.decoupled_weight_decay,
        }
    }
}

impl UpdateRule for AdamRule {
    fn apply<T: FloatElem>(&self, param: &mut [T], grad: &[T], state: &mut [&mut [T]]) {
        let cfg = &self.config;
        let c = |x: f64| T::from_f64(x);
        let (step_size, inv_bc2, decay) = self.step_constants();
        let (step_size, inv_bc2, decay) = (c(step_size), c(inv_bc2), c(decay));
        let (b1, b2, eps, wd) = (c(cfg.beta1), c(cfg.beta2), c(cfg.eps), c(cfg.weight_decay));
        let grad_scale = c(self.grad_scale);
        let [m, v] = state else { unreachable!("Adam keeps two state tensors") };
        for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * grad_scale;
            let g = if cfg.decoupled_weight_decay {
                *p *= decay;
                g
            } else {
                g + wd * *p
            };
            *m = b1 * *m + (T::one() - b1) * g;
            *v = b2 * *v + (T::one() - b2) * g * g;
            *p -= step_size * *m / (v.sqrt() * inv_bc2 + eps);
        }
    }
}

impl Adam {
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Result<Adam> {
        check_params("Adam", &params)?;
        let state = params.iter().map(|p| Ok(AdamState { step: 0, exp_avg: p.zeros_like()?, exp_avg_sq: p.zeros_like()? })).collect::<Result<_>>()?;
        Ok(Adam { params, config, state })
    }

    pub fn step(&mut self, grads: &Gradients) -> Result<()> {
        self.step_with_grad_scale(grads, 1.0)
    }

    /// A step with every gradient multiplied by `grad_scale` first, as if the gradients had
    /// been scaled (gradient clipping's factor, [`crate::clip_factor`]) but without a pass
    /// over them. On a CUDA device the parameters that share a step count take one launch.
    pub fn step_with_grad_scale(&mut self, grads: &Gradients, grad_scale: f64) -> Result<()> {
        check_grads(&self.params, grads)?;
        // the CUDA parameters by step count, checked and gathered before anything is updated
        let mut on_gpu: Vec<(u64, Vec<usize>, Vec<Tensor>)> = Vec::new();
        for (index, (param, state)) in self.params.iter().zip(&self.state).enumerate() {
            let Some(grad) = grads.get(param) else { continue };
            if !is_on_cuda(param) {
                continue;
            }
            if grad.device() != param.device() {
                return Err(TensorError::DeviceMismatch { op: "optimizer step", lhs: param.device(), rhs: grad.device() });
            }
            if ![param, &state.exp_avg, &state.exp_avg_sq].into_iter().all(owns_its_storage) {
                return invalid("optimizer step", "parameters on a CUDA device must own their whole contiguous storage");
            }
            let step = state.step + 1;
            let group = match on_gpu.iter().position(|(s, _, _)| *s == step) {
                Some(g) => g,
                None => {
                    on_gpu.push((step, Vec::new(), Vec::new()));
                    on_gpu.len() - 1
                }
            };
            on_gpu[group].1.push(index);
            on_gpu[group].2.push(crate::ops::dense(grad)?);
        }
        for (param, state) in self.params.iter().zip(&mut self.state) {
            let Some(grad) = grads.get(param) else { continue };
            if !is_on_cuda(param) {
                state.step += 1;
                let rule = AdamRule { config: self.config, step: state.step, grad_scale };
                apply_update(param, grad, &[&state.exp_avg, &state.exp_avg_sq], &rule)?;
            }
        }
        for (step, indices, grads) in &on_gpu {
            let rule = AdamRule { config: self.config, step: *step, grad_scale };
            let params: Vec<&Tensor> = indices.iter().map(|&i| &self.params[i]).collect();
            let m: Vec<&Tensor> = indices.iter().map(|&i| &self.state[i].exp_avg).collect();
            let v: Vec<&Tensor> = indices.iter().map(|&i| &self.state[i].exp_avg_sq).collect();
            let constants = rule.gpu_constants();
            with_list_buffers("optimizer step", [&params, &grads.iter().collect(), &m, &v], |list| {
                crate::cuda::kernels::adam_update_list(list, grad_scale as f32, &constants)
            })?;
            for &i in indices {
                self.state[i].step = *step;
            }
        }
        Ok(())
    }

    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Moves the moment estimates to `device` in place (after the parameters moved there).
    pub fn relocate_state(&self, device: crate::Device) -> Result<()> {
        for s in &self.state {
            s.exp_avg.relocate(device)?;
            s.exp_avg_sq.relocate(device)?;
        }
        Ok(())
    }

    /// The live per-parameter state, in the order of the parameters. The moment tensors are
    /// updated in place by later steps: use [`Adam::state_snapshot`] for a checkpoint.
    pub fn state(&self) -> &[AdamState] {
        &self.state
    }

    /// A copy of the state that later steps do not change (for checkpoints).
    pub fn state_snapshot(&self) -> Result<Vec<AdamState>> {
        self.state.iter().map(|s| Ok(AdamState { step: s.step, exp_avg: s.exp_avg.deep_copy()?, exp_avg_sq: s.exp_avg_sq.deep_copy()? })).collect()
    }

    /// Restores state saved from [`Adam::state`]; shapes must match the parameters.
    pub fn load_state(&mut self, state: Vec<AdamState>) -> Result<()> {
        if state.len() != self.params.len() {
            return invalid("Adam::load_state", format!("{} states for {} parameters", state.len(), self.params.len()));
        }
        for (p, s) in self.params.iter().zip(&state) {
            for t in [&s.exp_avg, &s.exp_avg_sq] {
                if t.shape() != p.shape() {
                    return Err(TensorError::ShapeMismatch { op: "Adam::load_state", lhs: p.shape().to_vec(), rhs: t.shape().to_vec() });
                }
                if t.dtype() != p.dtype() {
                    return Err(TensorError::DTypeMismatch { op: "Adam::load_state", lhs: p.dtype(), rhs: t.dtype() });
                }
            }
        }
        // fresh contiguous copies, so that updating them in place touches nothing else
        self.state = Adam { params: Vec::new(), config: self.config, state }.state_snapshot()?;
        Ok(())
    }
}

/// Whether `t` lives on a CUDA device (the optimizers' fused updates run there in place).
fn is_on_cuda(t: &Tensor) -> bool {
    matches!(t.device(), crate::Device::Cuda(_))
}
