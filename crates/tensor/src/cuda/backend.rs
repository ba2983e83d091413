//! What a CUDA backend offers the kernels' host code: device memory, copies, launches.

use std::sync::Arc;

use crate::Result;

/// A kernel: the `.cu` file it lives in (see [`super::sources`]) and its `extern "C"` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub file: &'static str,
    pub name: &'static str,
}

/// Grid and block dimensions (x, y, z) and the bytes of dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-d launch: `blocks` blocks of `threads` threads, no dynamic shared memory.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        LaunchConfig { grid: [blocks, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
    }
}

/// The most axes a view passed to a kernel may have.
pub const MAX_KERNEL_RANK: usize = 8;

/// A strided view as kernels take it by value (`EmberStrides` in kernels/ember_cuda.h, same
/// layout): element number i (row-major in `sizes`) at sum over k of index_k * strides[k].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Strides {
    pub rank: i32,
    pub unused: i32,
    pub sizes: [i64; MAX_KERNEL_RANK],
    pub strides: [i64; MAX_KERNEL_RANK],
}

impl Strides {
    /// The view of `shape` with `strides` (in elements). Axes of size 1 are dropped and a
    /// scalar becomes one axis of size 1, so every rank up to [`MAX_KERNEL_RANK`] real axes fits.
    pub fn new(shape: &[usize], strides: &[usize]) -> crate::Result<Self> {
        let axes: Vec<(usize, usize)> = shape.iter().zip(strides).filter(|(n, _)| **n != 1).map(|(&n, &s)| (n, s)).collect();
        if axes.len() > MAX_KERNEL_RANK {
            return Err(crate::TensorError::InvalidArgument {
                op: "cuda",
                msg: format!("views of more than {MAX_KERNEL_RANK} axes (not of size 1) are not supported: {shape:?}"),
            });
        }
        let mut view = Strides { rank: axes.len().max(1) as i32, unused: 0, sizes: [1; MAX_KERNEL_RANK], strides: [0; MAX_KERNEL_RANK] };
        for (k, (n, s)) in axes.into_iter().enumerate() {
            view.sizes[k] = n as i64;
            view.strides[k] = s as i64;
        }
        Ok(view)
    }

    /// The view of a [`crate::Layout`] (its offset is applied to the pointer, not here).
    pub fn of(layout: &crate::Layout) -> crate::Result<Self> {
        Self::new(layout.shape(), layout.strides())
    }
}

/// The sizes of a 2-D convolution as kernels take them by value (`EmberConv` in
/// kernels/ember_cuda.h, same layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvShape {
    pub n: i32,
    pub c_in: i32,
    pub h: i32,
    pub w: i32,
    pub c_out: i32,
    pub kh: i32,
    pub kw: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub pad_h: i32,
    pub pad_w: i32,
    pub dilation_h: i32,
    pub dilation_w: i32,
    pub ho: i32,
    pub wo: i32,
}

/// One kernel argument, as the kernel's C++ signature declares it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A device pointer (`float*`, `const float*`, ...).
    Ptr(u64),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// An `EmberStrides` by value.
    Strides(Strides),
    /// An `EmberConv` by value.
    Conv(ConvShape),
}

impl KernelArg {
    /// The argument's value in 8-byte-aligned storage of its own size (a struct argument is
    /// larger than 8 bytes); a launch passes the kernel a pointer to each argument's slot.
    pub fn to_slot(&self) -> Vec<u64> {
        let bytes = self.to_ne_bytes();
        let mut slot = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut slot)[..bytes.len()].copy_from_slice(&bytes);
        slot
    }

    /// The argument's bytes, as the kernel reads them from its parameter buffer.
    pub fn to_ne_bytes(&self) -> Vec<u8> {
        match *self {
            KernelArg::Ptr(p) => p.to_ne_bytes().to_vec(),
            KernelArg::I32(v) => v.to_ne_bytes().to_vec(),
            KernelArg::U32(v) => v.to_ne_bytes().to_vec(),
            KernelArg::I64(v) => v.to_ne_bytes().to_vec(),
            KernelArg::F32(v) => v.to_ne_bytes().to_vec(),
            KernelArg::F64(v) => v.to_ne_bytes().to_vec(),
            KernelArg::Strides(v) => bytemuck::bytes_of(&v).to_vec(),
            KernelArg::Conv(v) => bytemuck::bytes_of(&v).to_vec(),
        }
    }
}

/// A device: memory, copies and kernel launches, in stream order (a launch or copy starts
/// after the previous one has finished; `copy_to_host` waits for all of them).
///
/// Errors (out of memory, a failed launch, a kernel fault) are [`crate::TensorError::Cuda`]
/// naming the kernel or the call.
pub trait GpuBackend: Send + Sync + std::fmt::Debug {
    /// A one-line description ("NVIDIA H100 (sm_90)", "CUDA emulator on the CPU").
    fn describe(&self) -> String;
    /// `bytes` of device memory, contents unspecified. Returns the device address.
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Gives back memory from [`GpuBackend::alloc`] (to the backend's cache or the driver).
    fn free(&self, ptr: u64, bytes: usize);
    /// Copies `src` to device memory at `dst`.
    fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<()>;
    /// Copies device memory at `src` into `dst`, after all queued work has finished.
    fn copy_to_host(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    /// Fills `bytes` bytes at `dst` with `value` (used to poison outputs in tests).
    fn fill_bytes(&self, dst: u64, bytes: usize, value: u8) -> Result<()>;
    /// Queues `kernel` on the device's stream.
    fn launch(&self, kernel: Kernel, config: &LaunchConfig, args: &[KernelArg]) -> Result<()>;
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()>;
}

/// Device memory owned by a Rust value: given back to its backend when dropped.
#[derive(Debug)]
pub struct DeviceBuffer {
    ptr: u64,
    bytes: usize,
    backend: Arc<dyn GpuBackend>,
}

impl DeviceBuffer {
    pub fn new(backend: &Arc<dyn GpuBackend>, bytes: usize) -> Result<Self> {
        let ptr = backend.alloc(bytes)?;
        Ok(DeviceBuffer { ptr, bytes, backend: backend.clone() })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice<T: bytemuck::Pod>(backend: &Arc<dyn GpuBackend>, data: &[T]) -> Result<Self> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = Self::new(backend, bytes.len())?;
        backend.copy_to_device(buffer.ptr, bytes)?;
        Ok(buffer)
    }

    /// The buffer's contents as `len` elements of `T`.
    pub fn to_vec<T: bytemuck::Pod + Default>(&self) -> Result<Vec<T>> {
        let mut out = vec![T::default(); self.bytes / std::mem::size_of::<T>()];
        self.backend.copy_to_host(self.ptr, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn backend(&self) -> &Arc<dyn GpuBackend> {
        &self.backend
    }
    /// The buffer as a kernel argument.
    pub fn arg(&self) -> KernelArg {
        KernelArg::Ptr(self.ptr)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.backend.free(self.ptr, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_arguments_get_slots_of_their_own_size() {
        let strides = Strides::new(&[2, 3, 4], &[12, 4, 1]).unwrap();
        let slot = KernelArg::Strides(strides).to_slot();
        assert_eq!(slot.len() * 8, std::mem::size_of::<Strides>());
        assert_eq!(bytemuck::cast_slice::<u64, u8>(&slot), bytemuck::bytes_of(&strides));
        let conv = ConvShape {
            n: 1,
            c_in: 2,
            h: 3,
            w: 4,
            c_out: 5,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            pad_h: 1,
            pad_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            ho: 3,
            wo: 4,
        };
        let slot = KernelArg::Conv(conv).to_slot();
        assert_eq!(&bytemuck::cast_slice::<u64, u8>(&slot)[..std::mem::size_of::<ConvShape>()], bytemuck::bytes_of(&conv));
        assert_eq!(KernelArg::F32(1.5).to_slot(), vec![1.5f32.to_bits() as u64]);
    }
}
