//! Moving elements between layouts: gather a strided view into a contiguous buffer, and
//! scatter a contiguous buffer into a strided view.

use crate::FloatElem;
use crate::error::{Result, TensorError};
use crate::layout::Layout;
use crate::storage::CpuStorage;

/// The elements of `layout` over `data`, in row-major order.
pub fn gather<T: Copy + Send + Sync>(data: &[T], layout: &Layout) -> Vec<T> {
    if let Some(range) = layout.contiguous_range() {
        return data[range].to_vec();
    }
    let mut out = Vec::with_capacity(layout.numel());
    layout.for_each_offset(|o| out.push(data[o]));
    out
}

/// [`gather`] into a buffer from the buffer cache (f32/f64).
fn gather_pooled<T: FloatElem>(data: &[T], layout: &Layout) -> Vec<T> {
    let mut out = crate::cpu::pool::for_overwrite::<T>(layout.numel());
    if let Some(range) = layout.contiguous_range() {
        out.copy_from_slice(&data[range]);
    } else {
        let mut slots = out.iter_mut();
        layout.for_each_offset(|o| *slots.next().expect("numel slots") = data[o]);
    }
    out
}

/// Writes `source` (row-major, `layout.numel()` elements) into the positions of `layout` in
/// `dest`. Used by `assign`, `cat` and `pad`.
pub fn scatter_into(dest: &mut CpuStorage, layout: &Layout, source: &CpuStorage) -> Result<()> {
    fn scatter<T: Copy>(dest: &mut [T], layout: &Layout, source: &[T]) {
        let mut values = source.iter();
        layout.for_each_offset(|o| dest[o] = *values.next().expect("sizes checked"));
    }
    if source.len() != layout.numel() {
        return Err(TensorError::InvalidArgument {
            op: "scatter_into",
            msg: format!("{} values for {} positions", source.len(), layout.numel()),
        });
    }
    match (dest, source) {
        (CpuStorage::F32(d), CpuStorage::F32(s)) => scatter(d, layout, s),
        (CpuStorage::F64(d), CpuStorage::F64(s)) => scatter(d, layout, s),
        (CpuStorage::F16(d), CpuStorage::F16(s)) => scatter(d, layout, s),
        (CpuStorage::BF16(d), CpuStorage::BF16(s)) => scatter(d, layout, s),
        (d, s) => return Err(TensorError::DTypeMismatch { op: "scatter_into", lhs: d.dtype(), rhs: s.dtype() }),
    }
    Ok(())
}

/// Gathers any storage (all dtypes) through a layout.
pub fn gather_storage(storage: &CpuStorage, layout: &Layout) -> CpuStorage {
    match storage {
        CpuStorage::F32(v) => CpuStorage::F32(gather_pooled(v, layout)),
        CpuStorage::F64(v) => CpuStorage::F64(gather_pooled(v, layout)),
        CpuStorage::F16(v) => CpuStorage::F16(gather(v, layout)),
        CpuStorage::BF16(v) => CpuStorage::BF16(gather(v, layout)),
    }
}
