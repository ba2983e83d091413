//! ember's tensor engine.
//!
//! - [`Tensor`]: a strided view of a shared storage, with an autograd record ([`autograd`]).
//! - [`ops`]: the differentiable ops, one file per family, forward and backward side by side.
//! - [`cpu`]: the kernels the ops call (SIMD via `wide`, threads via `rayon`).
//! - [`rng`]: the counter-based (Philox) random numbers; [`optim`]: SGD and Adam(W);
//!   [`io`]: safetensors files; [`testing`]: finite-difference gradient checks.
//!
//! Start reading at `tensor.rs`, then `autograd.rs`, then any file in `ops/`.

pub mod autograd;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod ops;
pub mod profile;
pub mod storage;
pub mod tensor;

pub use autograd::{Gradients, NoGradGuard, is_grad_enabled, no_grad};
pub use device::Device;
pub use dtype::{DType, FloatElem};
pub use error::{Result, TensorError};
pub use layout::Layout;
pub use tensor::{Element, Tensor, TensorId};
pub mod rng;
pub mod testing;
pub mod optim;
pub mod io;
