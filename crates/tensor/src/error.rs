//! The engine's one error type. Every fallible public function returns [`Result`].

use crate::{DType, Device};

/// What went wrong, with enough context (the op's name, the shapes) to act on it.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },

    #[error("{op}: shapes {lhs:?} and {rhs:?} do not broadcast")]
    BroadcastMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },

    #[error("{op}: dtype mismatch: {lhs:?} vs {rhs:?}")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    #[error("{op}: dtype {dtype:?} is storage-only here; convert to f32 or f64 first (to_dtype)")]
    UnsupportedDType { op: &'static str, dtype: DType },

    #[error("{op}: device mismatch: {lhs:?} vs {rhs:?}")]
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },

    #[error("{op}: device {device:?} is not available: {reason}")]
    DeviceUnavailable { op: &'static str, device: Device, reason: String },

    #[error("{op}: axis {axis} out of range for a tensor of rank {rank}")]
    AxisOutOfRange { op: &'static str, axis: isize, rank: usize },

    #[error("{op}: not implemented on {device:?} yet (move the tensor with to_device(Device::Cpu))")]
    NotOnDevice { op: &'static str, device: Device },

    /// A CUDA call or kernel failed (on a GPU or in the emulator): out of memory, a failed
    /// compile or launch, a fault or deadlock inside a kernel.
    #[error("CUDA {what}: {msg}")]
    Cuda { what: String, msg: String },

    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    #[error("backward: {msg}")]
    Autograd { msg: String },

    #[error("{path}: {msg}")]
    File { path: String, msg: String },

    #[error("I/O error on {path}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, TensorError>;

/// Shorthand for an [`TensorError::InvalidArgument`].
pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(TensorError::InvalidArgument { op, msg: msg.into() })
}
