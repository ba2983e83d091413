//! The trainer's error type: everything that can stop a run, each with what to do about it.

use ember_tensor::TensorError;
use ember_unet::UNetError;

use crate::data::DataError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Tensor(#[from] TensorError),

    #[error(transparent)]
    UNet(#[from] UNetError),

    #[error(transparent)]
    Data(#[from] DataError),

    /// NaN or Inf in the loss or the gradients: the step is not applied and no checkpoint is
    /// written, so the last good checkpoint stays the latest.
    #[error("step {step}: {what} is not finite ({value}); stopping (the last good checkpoint is kept; try a lower --lr)")]
    NonFinite { step: u64, what: &'static str, value: f64 },

    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },

    #[error("invalid training config: {0}")]
    Config(String),

    #[error("I/O error on {path}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.display().to_string(), source }
}
