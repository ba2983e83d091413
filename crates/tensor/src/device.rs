//! Where a tensor's memory lives. Ops dispatch on the device of their inputs; mixing devices
//! is a [`TensorError::DeviceMismatch`](crate::TensorError::DeviceMismatch).

/// A compute device. Only the CPU has kernels in this crate today; `Cuda` is part of the
/// type so that the CUDA backend plugs in without changing any op's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// A CUDA GPU, by ordinal.
    Cuda(usize),
}
