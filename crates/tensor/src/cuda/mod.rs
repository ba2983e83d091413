//! The CUDA backend. Every kernel is ours, written in CUDA C++ under `crates/tensor/kernels/`
//! (one `.cu` file per op family), and runs on one of two [`GpuBackend`]s:
//!
//! - [`driver`] (feature `cuda`): a real GPU. The sources are compiled at run time with NVRTC
//!   ([`nvrtc`]) to a cubin for the device's architecture and launched through `cudarc`.
//! - [`emu`] (feature `cuda-emu`): the CPU. The same sources are built as C++ against
//!   `kernels/emu/cuda_emu.h`, our emulation of the CUDA execution model (blocks, threads as
//!   fibers with real barriers, shared memory, warps), so that every kernel runs in
//!   `cargo test` on machines with no GPU.
//!
//! [`kernels`] holds the host side of each kernel (argument checks, grid and block sizes,
//! the launch), written once against [`GpuBackend`], so both backends run the same code.

pub mod backend;
pub mod kernels;
pub mod sources;

#[cfg(feature = "cuda")]
pub mod driver;
#[cfg(feature = "cuda")]
pub mod nvrtc;

#[cfg(feature = "cuda-emu")]
pub mod emu;

pub use backend::{DeviceBuffer, GpuBackend, Kernel, KernelArg, LaunchConfig, Strides};
