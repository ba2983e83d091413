//! Shared primitive (the movement ops and `Tensor::assign`): moving elements between
//! layouts: gather a strided view into a contiguous buffer, and scatter a contiguous buffer
//! into a strided view, both through [`copy_view`].

use rayon::prelude::*;

use crate::FloatElem;
use crate::cpu::gemm::SharedMut;
use crate::error::{Result, TensorError};
use crate::layout::Layout;
use crate::storage::CpuStorage;

/// One axis of a copy: its size and its strides in the source and the destination.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CopyAxis {
    size: usize,
    from: usize,
    to: usize,
}

/// The axes of a copy from `from` to `to` (same shape) with size-1 axes dropped and neighbours
/// merged where both views step over them as over one axis (so contiguous rows become one).
fn merged_axes(from: &Layout, to: &Layout) -> Vec<CopyAxis> {
    let mut axes: Vec<CopyAxis> = Vec::new();
    for ((&size, &f), &t) in from.shape().iter().zip(from.strides()).zip(to.strides()) {
        if size == 1 {
            continue;
        }
        match axes.last_mut() {
            // the previous (outer) axis steps over this one whole, in both views
            Some(outer) if outer.from == f * size && outer.to == t * size => *outer = CopyAxis { size: outer.size * size, from: f, to: t },
            _ => axes.push(CopyAxis { size, from: f, to: t }),
        }
    }
    axes
}

/// Whether no two positions of the axes land on one element (strides `stride`).
fn writes_each_element_once(axes: &[CopyAxis]) -> bool {
    let mut by_stride: Vec<(usize, usize)> = axes.iter().map(|a| (a.to, a.size)).collect();
    by_stride.sort_unstable();
    let mut extent = 0; // the largest offset reached by the axes so far
    for (stride, size) in by_stride {
        if stride <= extent {
            return false;
        }
        extent += (size - 1) * stride;
    }
    true
}

/// Copies the view `from` over `src` into the view `to` over `dst` (same shape): each element
/// to the position of the same index. Axes contiguous in both views merge, so whole rows move
/// as block copies; large copies are split over threads by rows.
pub fn copy_view<T: Copy + Send + Sync>(src: &[T], from: &Layout, dst: &mut [T], to: &Layout) {
    assert_eq!(from.shape(), to.shape(), "copy_view between views of different shapes");
    let numel = from.numel();
    if numel == 0 {
        return;
    }
    let axes = merged_axes(from, to);
    let last_written = to.offset() + axes.iter().map(|a| (a.size - 1) * a.to).sum::<usize>();
    assert!(last_written < dst.len(), "copy_view past the end of the destination");
    let Some((&row, outer)) = axes.split_last() else {
        dst[to.offset()] = src[from.offset()];
        return;
    };
    let rows = numel / row.size;
    let dst_ptr = SharedMut(dst.as_mut_ptr());
    // copies rows `first..first + count`; the offsets of the first by division, then an odometer
    let copy_rows = |first: usize, count: usize| {
        let mut index = vec![0; outer.len()];
        let (mut s, mut d) = (from.offset(), to.offset());
        let mut rest = first;
        for (axis, i) in outer.iter().zip(&mut index).rev() {
            *i = rest % axis.size;
            rest /= axis.size;
            s += *i * axis.from;
            d += *i * axis.to;
        }
        for _ in 0..count {
            // SAFETY: every offset written is at most last_written < dst.len() (asserted above), and
            // threads copy disjoint rows of a view that writes each element at most once
            unsafe {
                if row.from == 1 && row.to == 1 {
                    std::ptr::copy_nonoverlapping(src[s..s + row.size].as_ptr(), dst_ptr.ptr().add(d), row.size);
                } else {
                    for k in 0..row.size {
                        *dst_ptr.ptr().add(d + k * row.to) = src[s + k * row.from];
                    }
                }
            }
            for (axis, i) in outer.iter().zip(&mut index).rev() {
                *i += 1;
                s += axis.from;
                d += axis.to;
                if *i < axis.size {
                    break;
                }
                s -= axis.size * axis.from;
                d -= axis.size * axis.to;
                *i = 0;
            }
        }
    };
    const PARALLEL_ELEMENTS: usize = 1 << 16;
    if numel < PARALLEL_ELEMENTS || rows == 1 || !writes_each_element_once(&axes) {
        copy_rows(0, rows);
        return;
    }
    let rows_per_task = (PARALLEL_ELEMENTS / 4).div_ceil(row.size).max(1);
    (0..rows.div_ceil(rows_per_task)).into_par_iter().for_each(|task| {
        let first = task * rows_per_task;
        copy_rows(first, rows_per_task.min(rows - first));
    });
}

/// The elements of `layout` over `data`, in row-major order.
pub fn gather<T: Copy + Send + Sync>(data: &[T], layout: &Layout) -> Vec<T> {
    let Some(&first) = data.get(layout.offset()) else { return Vec::new() };
    let mut out = vec![first; layout.numel()];
    copy_view(data, layout, &mut out, &Layout::contiguous(layout.shape()));
    out
}

/// [`gather`] into a buffer from the buffer cache (f32/f64).
fn gather_pooled<T: FloatElem>(data: &[T], layout: &Layout) -> Vec<T> {
    let mut out = crate::cpu::pool::for_overwrite::<T>(layout.numel());
    copy_view(data, layout, &mut out, &Layout::contiguous(layout.shape()));
    out
}

/// Writes `source` (row-major, `layout.numel()` elements) into the positions of `layout` in
/// `dest`. Used by `assign`, `cat` and `pad`.
pub fn scatter_into(dest: &mut CpuStorage, layout: &Layout, source: &CpuStorage) -> Result<()> {
    fn scatter<T: Copy + Send + Sync>(dest: &mut [T], layout: &Layout, source: &[T]) {
        copy_view(source, &Layout::contiguous(layout.shape()), dest, layout);
    }
    if source.len() != layout.numel() {
        return Err(TensorError::InvalidArgument { op: "scatter_into", msg: format!("{} values for {} positions", source.len(), layout.numel()) });
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

/// [`copy_view`] between two storages of one dtype (any).
pub fn copy_view_storage(src: &CpuStorage, from: &Layout, dst: &mut CpuStorage, to: &Layout) -> Result<()> {
    match (src, dst) {
        (CpuStorage::F32(s), CpuStorage::F32(d)) => copy_view(s, from, d, to),
        (CpuStorage::F64(s), CpuStorage::F64(d)) => copy_view(s, from, d, to),
        (CpuStorage::F16(s), CpuStorage::F16(d)) => copy_view(s, from, d, to),
        (CpuStorage::BF16(s), CpuStorage::BF16(d)) => copy_view(s, from, d, to),
        (s, d) => return Err(TensorError::DTypeMismatch { op: "copy", lhs: s.dtype(), rhs: d.dtype() }),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reference: every index, one at a time.
    fn copy_by_offsets(src: &[f32], from: &Layout, dst: &mut [f32], to: &Layout) {
        let (sources, targets) = (from.offsets(), to.offsets());
        for (s, t) in sources.into_iter().zip(targets) {
            dst[t] = src[s];
        }
    }

    #[test]
    fn copy_view_equals_the_copy_by_offsets_on_strided_views() {
        let base = Layout::contiguous(&[3, 40, 33, 26]); // 102 960 elements: the threaded path too
        let src: Vec<f32> = (0..base.numel() + 7).map(|i| (i as f32 * 0.37).sin()).collect();
        let cases: Vec<(Layout, Layout)> = vec![
            // contiguous into a channel slice of a wider tensor (cat)
            (Layout::contiguous(&[3, 40, 33, 26]), Layout::contiguous(&[3, 64, 33, 26]).narrow(1, 17, 40).unwrap()),
            // a transposed view into contiguous (contiguous())
            (base.permute(&[0, 3, 2, 1]).unwrap(), Layout::contiguous(&[3, 26, 33, 40])),
            // a narrowed, offset view into the interior of a padded tensor (pad)
            (
                base.narrow(2, 1, 30).unwrap().narrow(3, 2, 20).unwrap().offset_by(7),
                Layout::contiguous(&[3, 40, 32, 24]).narrow(2, 1, 30).unwrap().narrow(3, 2, 20).unwrap(),
            ),
            // a broadcast source, and size-1 axes
            (Layout::contiguous(&[1, 40, 1, 26]).broadcast_to(&[3, 40, 5, 26]).unwrap(), Layout::contiguous(&[3, 40, 5, 26])),
            (Layout::contiguous(&[1, 1, 26]), Layout::contiguous(&[26, 1, 1]).permute(&[2, 1, 0]).unwrap()),
            // one element, and an empty view
            (Layout::contiguous(&[]).offset_by(5), Layout::contiguous(&[]).offset_by(3)),
            (Layout::contiguous(&[3, 0, 4]), Layout::contiguous(&[3, 0, 4])),
        ];
        for (from, to) in cases {
            let dst_len = to.offset() + to.shape().iter().zip(to.strides()).map(|(&n, &s)| n.saturating_sub(1) * s).sum::<usize>() + 1;
            let (mut expected, mut got) = (vec![-9.0f32; dst_len], vec![-9.0f32; dst_len]);
            copy_by_offsets(&src, &from, &mut expected, &to);
            copy_view(&src, &from, &mut got, &to);
            assert_eq!(got, expected, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn a_destination_that_writes_an_element_twice_is_copied_in_order() {
        let axes = |to: &Layout| merged_axes(to, to);
        assert!(writes_each_element_once(&axes(&Layout::contiguous(&[4, 5, 6]).narrow(1, 1, 3).unwrap())));
        assert!(!writes_each_element_once(&axes(&Layout::contiguous(&[4, 1, 6]).broadcast_to(&[4, 5, 6]).unwrap())));
        assert!(!writes_each_element_once(&axes(&Layout::new(vec![4, 6], vec![3, 1], 0))), "rows overlap");
        // the sequential path keeps the last value written, as the copy by offsets does
        let to = Layout::new(vec![300, 300], vec![1, 1], 0);
        let from = Layout::contiguous(&[300, 300]);
        let src: Vec<f32> = (0..90_000).map(|i| i as f32).collect();
        let (mut expected, mut got) = (vec![0.0f32; 599], vec![0.0f32; 599]);
        copy_by_offsets(&src, &from, &mut expected, &to);
        copy_view(&src, &from, &mut got, &to);
        assert_eq!(got, expected);
    }
}
