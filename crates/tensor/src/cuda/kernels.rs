//! The host side of the kernels that belong to no op: the optimizers' updates
//! (kernels/optim.cu), the Philox draws (kernels/rng.cu) and the tensor-core GEMM of the
//! benchmarks (kernels/gemm_f16.cu). Each op's kernels are in `ops/<op>/cuda.rs`.

use super::launch::{check_len, grid_stride, invalid, kernel, output, to_i32};
use super::{DeviceBuffer, GpuBackend, KernelArg, LaunchConfig};
use crate::Result;
use std::sync::Arc;

/// The f32 constants of one Adam step (computed once on the host, as the CPU rule does).
#[derive(Clone, Copy, Debug)]
pub struct AdamConstants {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// `1 − lr·weight_decay` (AdamW).
    pub decay: f32,
    /// `lr / (1 − β1^t)`.
    pub step_size: f32,
    /// `1 / √(1 − β2^t)`.
    pub inv_bc2: f32,
    pub decoupled: bool,
}

/// A list of tensors cut into chunks for one launch of a `_list` kernel of kernels/optim.cu:
/// the table the kernels read (chunk c as (tensor, first element, elements), then each
/// tensor's `ROLES` buffer addresses), uploaded in one copy. Each tensor of `n` elements
/// must have `n` f32 in every one of its buffers.
pub struct TensorList {
    table: DeviceBuffer,
    chunks: usize,
}

impl TensorList {
    /// Elements per chunk (one block of 256 threads each).
    pub const CHUNK: usize = 8192;

    /// The table of `tensors` (each: its buffers, one per role, and its element count);
    /// `None` when the list holds no element.
    pub fn new<const ROLES: usize>(op: &'static str, tensors: &[([&DeviceBuffer; ROLES], usize)]) -> Result<Option<TensorList>> {
        let Some(((first, _), _)) = tensors.split_first() else { return Ok(None) };
        let backend = first[0].backend();
        let mut chunks: Vec<u64> = Vec::new();
        for (index, (buffers, n)) in tensors.iter().enumerate() {
            for buffer in buffers {
                check_len(op, "a tensor of the list", buffer, *n)?;
            }
            for start in (0..*n).step_by(Self::CHUNK) {
                chunks.extend([index as u64, start as u64, (Self::CHUNK.min(n - start)) as u64]);
            }
        }
        let count = chunks.len() / 3;
        if count == 0 {
            return Ok(None);
        }
        to_i32(op, "the number of chunks", count)?;
        chunks.extend(tensors.iter().flat_map(|(buffers, _)| buffers.iter().map(|b| b.ptr())));
        Ok(Some(TensorList { table: DeviceBuffer::from_slice(backend, &chunks)?, chunks: count }))
    }

    fn backend(&self) -> &Arc<dyn GpuBackend> {
        self.table.backend()
    }

    /// The launch shape and the table's two arguments (chunks, addresses).
    fn launch(&self, name: &'static str, constants: &[KernelArg]) -> Result<()> {
        let chunks = KernelArg::Ptr(self.table.ptr());
        let addresses = KernelArg::Ptr(self.table.ptr() + (3 * self.chunks * std::mem::size_of::<u64>()) as u64);
        let args: Vec<KernelArg> = [chunks, addresses].into_iter().chain(constants.iter().cloned()).collect();
        self.backend().launch(kernel("optim.cu", name), &LaunchConfig::linear(self.chunks as u32, 256), &args)
    }
}

/// The L2 norm of all elements of a list of tensors together, in f64: one launch for the
/// chunks' sums of squares, one for their sum, and one read (kernels/optim.cu).
pub fn l2_norm_list(tensors: &[([&DeviceBuffer; 1], usize)]) -> Result<f64> {
    let Some(list) = TensorList::new("global norm", tensors)? else { return Ok(0.0) };
    let partials = output(list.backend(), list.chunks)?;
    list.launch("sum_squares_list_f32", &[partials.arg()])?;
    let norm = DeviceBuffer::new(list.backend(), std::mem::size_of::<f64>())?;
    let args = [partials.arg(), KernelArg::I32(list.chunks as i32), norm.arg()];
    list.backend().launch(kernel("optim.cu", "norm_of_partials_f64"), &LaunchConfig::linear(1, 256), &args)?;
    Ok(norm.to_vec::<f64>()?[0])
}

/// One Adam(W) step in place on a list of (parameter, gradient, m, v), every gradient first
/// multiplied by `grad_scale`, in one launch (kernels/optim.cu). All take the same step
/// constants (the same step count).
pub fn adam_update_list(tensors: &[([&DeviceBuffer; 4], usize)], grad_scale: f32, c: &AdamConstants) -> Result<()> {
    let Some(list) = TensorList::new("adam", tensors)? else { return Ok(()) };
    let constants = [
        KernelArg::F32(grad_scale),
        KernelArg::F32(c.beta1),
        KernelArg::F32(c.beta2),
        KernelArg::F32(c.eps),
        KernelArg::F32(c.weight_decay),
        KernelArg::F32(c.decay),
        KernelArg::F32(c.step_size),
        KernelArg::F32(c.inv_bc2),
        KernelArg::I32(c.decoupled as i32),
    ];
    list.launch("adam_list_f32", &constants)
}

/// `C = A·B` on tensor cores: A `[m, k]` and B `[k, n]` row-major f16 (or, with `bf16`,
/// bf16) bits, C `[m, n]` f32, accumulated in f32 (kernels/gemm_f16.cu).
pub fn gemm_f16(a: &DeviceBuffer, b: &DeviceBuffer, m: usize, n: usize, k: usize, bf16: bool) -> Result<DeviceBuffer> {
    let op = "gemm_f16";
    let half = std::mem::size_of::<u16>();
    if a.bytes() < m * k * half || b.bytes() < k * n * half {
        return Err(invalid(
            op,
            format!("A holds {} and B {} bytes; a {m}×{k} by {k}×{n} product needs {} and {}", a.bytes(), b.bytes(), m * k * half, k * n * half),
        ));
    }
    let c = output(a.backend(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(c);
    }
    let grid = [n.div_ceil(64), m.div_ceil(64), 1];
    if grid[1] > 65535 {
        return Err(invalid(op, format!("{m} rows exceed CUDA's grid")));
    }
    let config = LaunchConfig { grid: grid.map(|g| g as u32), block: [128, 1, 1], shared_bytes: 0 };
    let args = [
        a.arg(),
        b.arg(),
        c.arg(),
        KernelArg::I32(to_i32(op, "m", m)?),
        KernelArg::I32(to_i32(op, "n", n)?),
        KernelArg::I32(to_i32(op, "k", k)?),
        KernelArg::I32(bf16 as i32),
    ];
    a.backend().launch(kernel("gemm_f16.cu", "gemm_f16_f32"), &config, &args)?;
    Ok(c)
}

/// What a Philox draw produces from each uniform `u` (kernels/rng.cu).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Draw {
    Uniform {
        low: f64,
        high: f64,
    },
    Normal {
        mean: f64,
        std: f64,
    },
    /// `scale` where `u ≥ p`, else 0.
    DropoutMask {
        p: f64,
        scale: f64,
    },
}

/// `n` values of the Philox stream `seed` from block `first` on, as the CPU's
/// [`crate::rng::Rng`] draws them (kernels/rng.cu).
pub fn philox_fill(backend: &Arc<dyn GpuBackend>, n: usize, seed: u64, first: u64, draw: Draw) -> Result<DeviceBuffer> {
    let out = output(backend, n)?;
    if n > 0 {
        let (name, a, b) = match draw {
            Draw::Uniform { low, high } => ("philox_uniform_f32", low, high),
            Draw::Normal { mean, std } => ("philox_normal_f32", mean, std),
            Draw::DropoutMask { p, scale } => ("philox_dropout_mask_f32", p, scale),
        };
        let args = [out.arg(), KernelArg::I64(n as i64), KernelArg::I64(seed as i64), KernelArg::I64(first as i64), KernelArg::F64(a), KernelArg::F64(b)];
        backend.launch(kernel("rng.cu", name), &grid_stride(n.div_ceil(4)), &args)?;
    }
    Ok(out)
}

/// `ema ← decay·ema + (1 − decay)·param` in place on a list of (ema, parameter), in one
/// launch (kernels/optim.cu).
pub fn ema_update_list(tensors: &[([&DeviceBuffer; 2], usize)], decay: f64) -> Result<()> {
    let Some(list) = TensorList::new("ema", tensors)? else { return Ok(()) };
    list.launch("ema_list_f32", &[KernelArg::F32(decay as f32), KernelArg::F32((1.0 - decay) as f32)])
}

/// The f32 constants of an SGD step (kernels/optim.cu).
#[derive(Clone, Copy, Debug)]
pub struct SgdConstants {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub first_step: bool,
}

/// One SGD step in place on `n` elements; `buffer` is the momentum buffer (None without
/// momentum) (kernels/optim.cu).
pub fn sgd_update(param: &DeviceBuffer, grad: &DeviceBuffer, buffer: Option<&DeviceBuffer>, n: usize, c: &SgdConstants) -> Result<()> {
    check_len("sgd", "param", param, n)?;
    check_len("sgd", "grad", grad, n)?;
    if let Some(buffer) = buffer {
        check_len("sgd", "momentum buffer", buffer, n)?;
    }
    if n == 0 {
        return Ok(());
    }
    let args = [
        param.arg(),
        grad.arg(),
        KernelArg::Ptr(buffer.map_or(0, |b| b.ptr())),
        KernelArg::I64(n as i64),
        KernelArg::F32(c.lr),
        KernelArg::F32(c.momentum),
        KernelArg::F32(c.dampening),
        KernelArg::F32(c.weight_decay),
        KernelArg::I32(c.nesterov as i32),
        KernelArg::I32(c.first_step as i32),
    ];
    param.backend().launch(kernel("optim.cu", "sgd_f32"), &grid_stride(n), &args)
}
