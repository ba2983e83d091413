//! The one place where an op meets a device.
//!
//! An op (`ops/<op>/mod.rs`) checks its arguments, builds its descriptor, and asks
//! [`kernels`] for the kernels of its inputs' device; it never branches on the device itself.
//! Each op family declares a kernel trait in its `mod.rs` (`UnaryKernels`, `ConvKernels`, …)
//! and implements it twice, for [`Cpu`] in its `cpu.rs` and for [`Cuda`] in its `cuda.rs`.
//! [`Kernels`] gathers every family, so one `&dyn Kernels` serves any op; backward closures
//! call the same dispatch.
//!
//! The helpers that hand a kernel its input buffers live beside the two devices:
//! [`host`] (`with_host_slices!`, `with_host_elements!`, `host_tensor`) and [`device`]
//! (`with_device_buffers`, `device_tensor`).

pub(crate) mod device;
pub(crate) mod host;

use crate::ops::attention::AttentionKernels;
use crate::ops::binary::BinaryKernels;
use crate::ops::conv::ConvKernels;
use crate::ops::dropout::DropoutKernels;
use crate::ops::index_select::IndexSelectKernels;
use crate::ops::matmul::MatmulKernels;
use crate::ops::movement::MovementKernels;
use crate::ops::norm::NormKernels;
use crate::ops::reduce::ReduceKernels;
use crate::ops::softmax::SoftmaxKernels;
use crate::ops::unary::UnaryKernels;
use crate::ops::upsample::UpsampleKernels;
use crate::{Device, Tensor};

/// The CPU: kernels over host slices, generic over `f32`/`f64` (`crate::cpu` holds the shared
/// primitives: GEMM, SIMD, copies, reductions, the buffer cache).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cpu;

/// A CUDA device, a GPU or the emulator: the host side of the kernels in `kernels/*.cu`
/// (`crate::cuda` holds the shared primitives: buffers, launches, the driver, NVRTC).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cuda;

/// Declares [`Kernels`], every op family's kernel trait at once, and implements it for each
/// device that implements them all.
macro_rules! kernel_families {
    ($($family:ident),+ $(,)?) => {
        /// Every op family's kernels on one device.
        pub(crate) trait Kernels: $($family +)+ Sync {}
        impl<K: $($family +)+ Sync> Kernels for K {}
    };
}

kernel_families!(
    UnaryKernels,
    BinaryKernels,
    ReduceKernels,
    MovementKernels,
    MatmulKernels,
    ConvKernels,
    SoftmaxKernels,
    AttentionKernels,
    NormKernels,
    DropoutKernels,
    IndexSelectKernels,
    UpsampleKernels,
);

/// The kernels of the device `device`.
pub(crate) fn kernels_for(device: Device) -> &'static dyn Kernels {
    match device {
        Device::Cpu => &Cpu,
        Device::Cuda(_) => &Cuda,
    }
}

/// The kernels of the device `t` lives on (an op checks first that its inputs share one).
pub(crate) fn kernels(t: &Tensor) -> &'static dyn Kernels {
    kernels_for(t.device())
}
