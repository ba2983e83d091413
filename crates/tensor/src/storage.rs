//! The memory behind tensors: one enum per device, one variant per dtype. Views share a
//! storage through an `Arc`; kernels read it and write fresh storages.

use half::{bf16, f16};

use crate::cuda::DeviceBuffer;
use crate::{DType, Device};

/// Elements in host memory.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

/// Compute buffers go back to the buffer cache ([`crate::cpu::pool`]) for reuse.
impl Drop for CpuStorage {
    fn drop(&mut self) {
        use crate::FloatElem;
        match self {
            CpuStorage::F32(v) => f32::pool().give_back(std::mem::take(v)),
            CpuStorage::F64(v) => f64::pool().give_back(std::mem::take(v)),
            CpuStorage::F16(_) | CpuStorage::BF16(_) => {}
        }
    }
}

/// Elements in the memory of a CUDA device (a GPU, or the emulator's host memory).
#[derive(Debug)]
pub struct GpuStorage {
    pub buffer: DeviceBuffer,
    pub dtype: DType,
    /// The device's ordinal (`Device::Cuda(ordinal)`).
    pub ordinal: usize,
}

impl GpuStorage {
    pub fn len(&self) -> usize {
        self.buffer.bytes() / self.dtype.size_in_bytes()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tensor's memory on some device.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(GpuStorage),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(g) => Device::Cuda(g.ordinal),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(g) => g.dtype,
        }
    }
    /// The host elements, for `op`'s CPU kernel; a device storage is
    /// [`TensorError::NotOnDevice`](crate::TensorError::NotOnDevice) (the op has no CUDA path).
    pub fn cpu(&self, op: &'static str) -> crate::Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(_) => Err(crate::TensorError::NotOnDevice { op, device: self.device() }),
        }
    }
    pub fn cpu_mut(&mut self, op: &'static str) -> crate::Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(g) => Err(crate::TensorError::NotOnDevice { op, device: Device::Cuda(g.ordinal) }),
        }
    }
    /// The device elements, if this storage is on a CUDA device.
    pub fn gpu(&self) -> Option<&GpuStorage> {
        match self {
            Storage::Cpu(_) => None,
            Storage::Cuda(g) => Some(g),
        }
    }
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements at `offsets`, converted to f64 (for reading values out and for tests).
    pub fn gather_f64(&self, offsets: impl Iterator<Item = usize>) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => offsets.map(|o| v[o] as f64).collect(),
            CpuStorage::F64(v) => offsets.map(|o| v[o]).collect(),
            CpuStorage::F16(v) => offsets.map(|o| v[o].to_f64()).collect(),
            CpuStorage::BF16(v) => offsets.map(|o| v[o].to_f64()).collect(),
        }
    }

    /// A storage of `dtype` holding `values` (rounded to the dtype).
    pub fn from_f64(values: impl ExactSizeIterator<Item = f64>, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(values.map(|x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(values.collect()),
            DType::F16 => CpuStorage::F16(values.map(f16::from_f64).collect()),
            DType::BF16 => CpuStorage::BF16(values.map(bf16::from_f64).collect()),
        }
    }

    /// Zeros of `dtype`.
    pub fn zeros(len: usize, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; len]),
            DType::F64 => CpuStorage::F64(vec![0.0; len]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; len]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; len]),
        }
    }

    /// A storage of `dtype` from its raw little-endian bytes.
    pub fn from_bytes(bytes: &[u8], dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F64 => CpuStorage::F64(bytemuck::pod_collect_to_vec(bytes)),
            DType::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec(bytes)),
            DType::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec(bytes)),
        }
    }

    /// The raw little-endian bytes (x86 and ARM are little-endian, as safetensors is).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F64(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
        }
    }
}
