//! The kernel sources, embedded in the binary: NVRTC compiles them at run time (feature
//! `cuda`), and the emulator's build script compiles the same files as C++ (`cuda-emu`).
//!
//! Every `.cu` file starts with `#include "ember_cuda.h"`, the one header the kernels use:
//! on a GPU it defines our few portable macros (shared memory, half-precision conversions
//! through PTX); in the emulator it pulls in `emu/cuda_emu.h`. NVRTC gets it as an embedded
//! header ([`HEADER`]), so compiling needs no CUDA include directory.

/// The kernels' common header: (include name, contents).
pub const HEADER: (&str, &str) = ("ember_cuda.h", include_str!("../../kernels/ember_cuda.h"));

/// Every kernel file: (file name, contents). One file per op family.
pub const FILES: &[(&str, &str)] = &[
    ("elementwise.cu", include_str!("../../kernels/elementwise.cu")),
    ("reduce.cu", include_str!("../../kernels/reduce.cu")),
    ("softmax.cu", include_str!("../../kernels/softmax.cu")),
    ("gemm.cu", include_str!("../../kernels/gemm.cu")),
    ("conv.cu", include_str!("../../kernels/conv.cu")),
    ("norm.cu", include_str!("../../kernels/norm.cu")),
    ("attention.cu", include_str!("../../kernels/attention.cu")),
    ("optim.cu", include_str!("../../kernels/optim.cu")),
    ("gemm_f16.cu", include_str!("../../kernels/gemm_f16.cu")),
    ("rng.cu", include_str!("../../kernels/rng.cu")),
    ("upsample.cu", include_str!("../../kernels/upsample.cu")),
    ("peak.cu", include_str!("../../kernels/peak.cu")),
];

/// The source of one kernel file, by name.
pub fn source(file: &str) -> Option<&'static str> {
    FILES.iter().find(|(name, _)| *name == file).map(|(_, source)| *source)
}
