//! Shapes and strided views. A [`Layout`] says where element `[i0, i1, ...]` of a tensor lives
//! in its storage: `offset + i0*strides[0] + i1*strides[1] + ...`. Views (permute, narrow,
//! broadcast) only change the layout; the storage is shared, never copied.

use crate::error::{Result, TensorError, invalid};

/// Shape, strides (in elements) and starting offset of a view into a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut stride = 1;
    for (s, &n) in strides.iter_mut().zip(shape).rev() {
        *s = stride;
        stride *= n;
    }
    strides
}

/// The NumPy broadcast of two shapes: align on the right; each pair of sizes must be equal or
/// one of them 1.
pub fn broadcast_shapes(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let l = if i < rank - lhs.len() { 1 } else { lhs[i - (rank - lhs.len())] };
        let r = if i < rank - rhs.len() { 1 } else { rhs[i - (rank - rhs.len())] };
        out[i] = match (l, r) {
            (a, b) if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => {
                return Err(TensorError::BroadcastMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec() });
            }
        };
    }
    Ok(out)
}

/// Turns a possibly negative axis (`-1` is the last) into an index below `rank`.
pub fn normalize_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    if a < 0 || a >= rank as isize {
        return Err(TensorError::AxisOutOfRange { op, axis, rank });
    }
    Ok(a as usize)
}

impl Layout {
    /// A contiguous row-major layout starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Layout {
        debug_assert_eq!(shape.len(), strides.len());
        Layout { shape, strides, offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major contiguous (offset may be non-zero): the elements are
    /// `storage[offset..offset + numel]` in order.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// The contiguous range of storage this layout covers, if it is contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.numel())
    }

    /// The same layout starting `offset` elements later.
    pub fn offset_by(mut self, offset: usize) -> Layout {
        self.offset += offset;
        self
    }

    /// Reorders the axes: axis `i` of the result is axis `dims[i]` of `self`.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if dims.len() != rank || dims.iter().any(|&d| d >= rank || std::mem::replace(&mut seen[d], true)) {
            return invalid("permute", format!("{dims:?} is not a permutation of 0..{rank}"));
        }
        Ok(Layout { shape: dims.iter().map(|&d| self.shape[d]).collect(), strides: dims.iter().map(|&d| self.strides[d]).collect(), offset: self.offset })
    }

    /// The sub-range `start..start+len` of axis `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Layout> {
        if axis >= self.rank() {
            return Err(TensorError::AxisOutOfRange { op: "narrow", axis: axis as isize, rank: self.rank() });
        }
        if start.checked_add(len).is_none_or(|end| end > self.shape[axis]) {
            return invalid("narrow", format!("range {start} (+{len}) is outside axis {axis} of size {}", self.shape[axis]));
        }
        let mut out = self.clone();
        out.shape[axis] = len;
        out.offset += start * self.strides[axis];
        Ok(out)
    }

    /// Broadcasts to `shape` (NumPy rules) by giving repeated axes stride 0.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        let err = || TensorError::BroadcastMismatch { op: "broadcast_to", lhs: self.shape.clone(), rhs: shape.to_vec() };
        if shape.len() < self.rank() {
            return Err(err());
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            let (n, target) = (self.shape[i], shape[lead + i]);
            strides[lead + i] = if n == target {
                self.strides[i]
            } else if n == 1 {
                0
            } else {
                return Err(err());
            };
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    /// A new axis of size 1 at `axis` (≤ rank).
    pub fn unsqueeze(&self, axis: usize) -> Layout {
        let mut out = self.clone();
        let stride = if axis < self.rank() { self.strides[axis] * self.shape[axis] } else { 1 };
        out.shape.insert(axis, 1);
        out.strides.insert(axis, stride);
        out
    }

    /// Without axis `axis`, which must have size 1.
    pub fn squeeze(&self, axis: usize) -> Layout {
        debug_assert_eq!(self.shape[axis], 1);
        let mut out = self.clone();
        out.shape.remove(axis);
        out.strides.remove(axis);
        out
    }

    /// A view with a new shape, when one exists without copying (a contiguous layout).
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        self.is_contiguous().then(|| Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset })
    }

    /// Calls `f(storage_offset)` for every element in row-major order. The innermost axis is a
    /// plain loop, the outer ones an odometer, so the cost per element is one add.
    pub fn for_each_offset(&self, mut f: impl FnMut(usize)) {
        let rank = self.rank();
        if self.numel() == 0 {
            return;
        }
        if rank == 0 {
            f(self.offset);
            return;
        }
        let (inner_len, inner_stride) = (self.shape[rank - 1], self.strides[rank - 1]);
        let mut index = vec![0usize; rank - 1];
        let mut base = self.offset;
        loop {
            for i in 0..inner_len {
                f(base + i * inner_stride);
            }
            // advance the odometer over the outer axes
            let mut axis = rank - 1;
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                index[axis] += 1;
                base += self.strides[axis];
                if index[axis] < self.shape[axis] {
                    break;
                }
                base -= self.strides[axis] * self.shape[axis];
                index[axis] = 0;
            }
        }
    }

    /// The storage offsets of every element, in row-major order.
    pub fn offsets(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.numel());
        self.for_each_offset(|o| out.push(o));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_a_transposed_view_walk_columns() {
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]).unwrap();
        assert_eq!(l.offsets(), vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
    }

    #[test]
    fn broadcast_gives_stride_zero_to_repeated_axes() {
        let l = Layout::contiguous(&[3, 1]).broadcast_to(&[2, 3, 4]).unwrap();
        assert_eq!(l.strides(), &[0, 1, 0]);
        assert_eq!(broadcast_shapes("t", &[3, 1], &[2, 1, 4]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
    }

    #[test]
    fn narrow_moves_the_offset() {
        let l = Layout::contiguous(&[4, 5]).narrow(1, 2, 3).unwrap();
        assert_eq!(l.offsets(), vec![2, 3, 4, 7, 8, 9, 12, 13, 14, 17, 18, 19]);
        assert!(Layout::contiguous(&[4, 5]).narrow(1, 3, 3).is_err());
    }
}
