//! The differentiable ops, one folder each: `mod.rs` holds the public API with its math and
//! gradient, forward and backward side by side, the op's descriptor types and its kernel
//! trait; `cpu.rs` (or `cpu/`) its CPU kernels; `cuda.rs` the host side of its CUDA kernels
//! (`kernels/<op>.cu`). An op asks [`crate::dispatch::kernels`] for its inputs' device and
//! never branches on the device itself.

pub mod attention;
pub mod binary;
pub mod conv;
pub mod dropout;
pub mod index_select;
pub mod matmul;
pub mod movement;
pub mod mse_loss;
pub mod norm;
pub mod reduce;
pub mod softmax;
pub mod unary;
pub mod upsample;

use crate::Tensor;
use crate::error::{Result, TensorError};

/// `t` with row-major elements starting at its buffer's first element (a copy if not), as
/// the kernels that take plain contiguous buffers want.
pub(crate) fn dense(t: &Tensor) -> Result<Tensor> {
    if t.layout().contiguous_range().is_some_and(|r| r.start == 0) { Ok(t.clone()) } else { t.deep_copy() }
}

/// Checks that all inputs of `op` live on one device and share one dtype.
pub(crate) fn check_same(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    let first = tensors[0];
    for t in &tensors[1..] {
        if t.device() != first.device() {
            return Err(TensorError::DeviceMismatch { op, lhs: first.device(), rhs: t.device() });
        }
        if t.dtype() != first.dtype() {
            return Err(TensorError::DTypeMismatch { op, lhs: first.dtype(), rhs: t.dtype() });
        }
    }
    Ok(())
}

/// Checks a tensor's rank.
pub(crate) fn check_rank(op: &'static str, t: &Tensor, rank: usize, what: &str) -> Result<()> {
    if t.rank() != rank {
        return crate::error::invalid(op, format!("{what} must have rank {rank}, got shape {:?}", t.shape()));
    }
    Ok(())
}
