//! ember's tensor engine.
//!
//! - [`Tensor`]: a strided view of a shared storage, with an autograd record ([`autograd`]).
//! - [`ops`]: the differentiable ops, one folder each: the API, math and backward beside the
//!   op's CPU kernels and the host side of its CUDA kernels (`kernels/<op>.cu`).
//! - `dispatch`: the one place where an op's kernels are chosen by device.
//! - [`cpu`], [`cuda`]: the shared primitives of each device (GEMM, SIMD, the buffer cache;
//!   buffers, launches, the driver and the emulator). They never import each other.
//! - [`rng`]: the counter-based (Philox) random numbers; [`optim`]: SGD and Adam(W);
//!   [`io`]: safetensors files; [`testing`]: finite-difference gradient checks;
//!   [`precision`]: f32, TF32 or bf16 for the GPU's matrix products.
//!
//! Start reading at `tensor.rs`, then `autograd.rs`, then any folder in `ops/` (`softmax` is a
//! small one).

pub mod autograd;
pub mod cpu;
pub mod cuda;
pub mod device;
pub(crate) mod dispatch;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod ops;
pub mod precision;
pub mod profile;
pub mod storage;
pub mod tensor;

pub use autograd::{Gradients, NoGradGuard, clip_factor, is_grad_enabled, no_grad};
pub use device::Device;
pub use dtype::{DType, FloatElem};
pub use error::{Result, TensorError};
pub use layout::Layout;
pub use precision::{Precision, precision, set_precision, with_precision};
pub use tensor::{Element, Tensor, TensorId};
pub mod io;
pub mod optim;
pub mod rng;
pub mod testing;
