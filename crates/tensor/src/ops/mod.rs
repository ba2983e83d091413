//! The differentiable ops, one file per family. Each op's doc comment gives its math; its
//! forward calls a kernel in [`crate::cpu`] and, right beside it, records the backward with
//! [`Tensor::with_backward`](crate::Tensor).


pub mod attention;
pub mod binary;
pub mod conv;

pub mod matmul;
pub mod movement;
pub mod nn;
pub mod norm;


pub mod reduce;
pub mod softmax;

pub mod unary;

use crate::error::{Result, TensorError};
use crate::layout::Layout;
use crate::storage::{CpuStorage, Storage};
use crate::{FloatElem, Tensor};

/// Wraps a kernel's output vector as a storage (for use inside the dispatch macros).
pub(crate) fn wrap<T: FloatElem>(data: Vec<T>) -> CpuStorage {
    T::into_storage(data)
}

/// A fresh contiguous CPU tensor of `shape` over `storage`.
pub(crate) fn new_tensor(storage: CpuStorage, shape: &[usize]) -> Tensor {
    debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
    Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(shape))
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
