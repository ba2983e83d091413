//! The UNet crate's error type.

use ember_tensor::TensorError;

#[derive(Debug, thiserror::Error)]
pub enum UNetError {
    #[error(transparent)]
    Tensor(#[from] TensorError),

    #[error("invalid UNet config: {0}")]
    Config(String),

    /// Weights that do not fit the model: every problem, by name.
    #[error("weights do not match the model:{}{}{}", list("missing", missing), list("unexpected", unexpected), list("mis-shaped", mis_shaped))]
    WeightMismatch { missing: Vec<String>, unexpected: Vec<String>, mis_shaped: Vec<String> },

    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

fn list(what: &str, names: &[String]) -> String {
    if names.is_empty() { String::new() } else { format!("\n  {what} ({}): {}", names.len(), names.join(", ")) }
}

pub type Result<T> = std::result::Result<T, UNetError>;
