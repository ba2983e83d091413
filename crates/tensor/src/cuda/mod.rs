//! The CUDA backend's shared primitives. Every kernel is ours, written in CUDA C++ under
//! `kernels/` at the repository root (one `.cu` file per op folder), and runs on one of two
//! [`GpuBackend`]s:
//!
//! - [`driver`] (feature `cuda`): a real GPU. The sources are compiled at run time with NVRTC
//!   ([`nvrtc`]) to a cubin for the device's architecture and launched through `cudarc`.
//! - [`emu`] (feature `cuda-emu`): the CPU. The same sources are built as C++ against
//!   `kernels/emu/cuda_emu.h`, our emulation of the CUDA execution model (blocks, threads as
//!   fibers with real barriers, shared memory, warps), so that every kernel runs in
//!   `cargo test` on machines with no GPU.
//!
//! The host side of each op's kernels (argument checks, grid and block sizes, the launch) is
//! in the op's folder, `ops/<op>/cuda.rs`, written once against [`GpuBackend`] with the
//! helpers of [`launch`], so both backends run the same code; [`kernels`] holds the host side
//! of the kernels that belong to no op (optimizers, random numbers). This module never
//! imports `crate::cpu`.

pub mod backend;
pub mod kernels;
pub mod launch;
pub mod sources;

#[cfg(feature = "cuda")]
pub mod driver;
#[cfg(feature = "cuda")]
pub mod nvrtc;

#[cfg(feature = "cuda-emu")]
pub mod emu;

pub use backend::{ConvShape, DeviceBuffer, GpuBackend, Kernel, KernelArg, LaunchConfig, Strides};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::storage::{CpuStorage, GpuStorage};
use crate::{Device, Result, TensorError};

/// The backends opened so far, by ordinal.
static OPENED: OnceLock<Mutex<HashMap<usize, Arc<dyn GpuBackend>>>> = OnceLock::new();

/// Waits for the queued work of every device opened so far (none opened: returns at once).
/// The op profile ([`crate::profile`]) calls it before reading the clock, so that a kernel's
/// time is charged to the op that queued it.
pub fn synchronize_opened() -> Result<()> {
    let Some(opened) = OPENED.get() else { return Ok(()) };
    let backends: Vec<_> = opened.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
    backends.iter().try_for_each(|backend| backend.synchronize())
}

/// The backend behind `Device::Cuda(ordinal)`, opened once per process.
///
/// Which one: `EMBER_CUDA=gpu` asks for a real GPU (feature `cuda`), `EMBER_CUDA=emu` for the
/// emulator (feature `cuda-emu`); unset, a real GPU when there is one, else the emulator.
/// Neither available is [`TensorError::DeviceUnavailable`] with the reason.
pub fn device(ordinal: usize) -> Result<Arc<dyn GpuBackend>> {
    let mut opened = OPENED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(backend) = opened.get(&ordinal) {
        return Ok(backend.clone());
    }
    let backend = open(ordinal)?;
    opened.insert(ordinal, backend.clone());
    Ok(backend)
}

fn open(ordinal: usize) -> Result<Arc<dyn GpuBackend>> {
    let choice = std::env::var("EMBER_CUDA").unwrap_or_default();
    let unavailable = |reason: String| TensorError::DeviceUnavailable { op: "cuda", device: Device::Cuda(ordinal), reason };
    #[allow(unused_mut)]
    let mut reasons: Vec<String> = Vec::new();
    if choice != "emu" {
        #[cfg(feature = "cuda")]
        match driver::CudaDevice::shared(ordinal) {
            Ok(gpu) => return Ok(gpu),
            Err(e) => reasons.push(e.to_string()),
        }
        #[cfg(not(feature = "cuda"))]
        reasons.push("built without the `cuda` feature".into());
    }
    if choice != "gpu" {
        #[cfg(feature = "cuda-emu")]
        {
            if ordinal == 0 {
                return Ok(emu::Emulator::new());
            }
            reasons.push("the emulator is device 0 only".into());
        }
        #[cfg(not(feature = "cuda-emu"))]
        reasons.push("built without the `cuda-emu` feature".into());
    }
    Err(unavailable(reasons.join("; ")))
}

/// Copies host elements to a new buffer on `Device::Cuda(ordinal)`.
pub fn upload(storage: &CpuStorage, ordinal: usize) -> Result<GpuStorage> {
    let backend = device(ordinal)?;
    let buffer = DeviceBuffer::new(&backend, storage.as_bytes().len())?;
    backend.copy_to_device(buffer.ptr(), storage.as_bytes())?;
    Ok(GpuStorage { buffer, dtype: storage.dtype(), ordinal })
}

/// Copies a device buffer's elements to the host.
pub fn download(storage: &GpuStorage) -> Result<CpuStorage> {
    let bytes = storage.buffer.to_vec::<u8>()?;
    Ok(CpuStorage::from_bytes(&bytes, storage.dtype))
}
