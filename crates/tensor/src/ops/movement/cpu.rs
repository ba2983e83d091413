//! The movement ops' CPU kernels, on the view copies of [`crate::cpu::copy`].

use super::MovementKernels;
use crate::cpu::copy::{copy_view_storage, gather_storage};
use crate::dispatch::Cpu;
use crate::layout::Layout;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Result, Tensor};

impl MovementKernels for Cpu {
    fn gather(&self, x: &Tensor) -> Result<Tensor> {
        let storage = gather_storage(x.storage().cpu("contiguous")?, x.layout());
        Ok(Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(x.shape())))
    }

    fn assemble(&self, shape: &[usize], like: &Tensor, fill: f64, parts: &[(&Tensor, Layout)]) -> Result<Tensor> {
        let numel = shape.iter().product();
        // the parts' regions do not overlap: when they cover the output, nothing needs the fill
        let covered = parts.iter().map(|(_, region)| region.numel()).sum::<usize>() == numel;
        let mut storage = match like.dtype() {
            DType::F32 if covered => CpuStorage::F32(crate::cpu::pool::for_overwrite(numel)),
            DType::F64 if covered => CpuStorage::F64(crate::cpu::pool::for_overwrite(numel)),
            dtype => CpuStorage::from_f64(std::iter::repeat_n(fill, numel), dtype),
        };
        for (part, region) in parts {
            copy_view_storage(part.storage().cpu("cat")?, part.layout(), &mut storage, region)?;
        }
        Ok(Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(shape)))
    }

    fn assign(&self, destination: &Tensor, values: &Tensor) -> Result<()> {
        let values = values.contiguous()?;
        let source = {
            let guard = values.storage();
            let range = values.layout().contiguous_range().expect("contiguous");
            crate::tensor::slice_storage(guard.cpu("assign")?, range)
        };
        let mut storage = destination.storage_mut();
        crate::cpu::copy::scatter_into(storage.cpu_mut("assign")?, destination.layout(), &source)
    }
}
