//! ember: a from-scratch deep-learning engine whose flagship workload is a DDPM.
//!
//! This root crate re-exports the workspace's crates so that the workspace-level proofs in
//! `tests/` and the benchmarks in `benches/` have one place to import from.

pub use ember_diffusion as diffusion;
pub use ember_tensor as tensor;
pub use ember_train as train;
pub use ember_unet as unet;
