//! Movement ops. Views (reshape of a contiguous tensor, permute, transpose, narrow,
//! broadcast_to) share storage and only change the [`Layout`]; `contiguous`, `cat` and `pad`
//! copy. The backward of each is another movement (or a sum, for broadcast).

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, TensorError, invalid};
use crate::layout::{Layout, normalize_axis};

/// The movement ops' copying kernels, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait MovementKernels {
    /// The view `x` copied into a fresh row-major tensor.
    fn gather(&self, x: &Tensor) -> Result<Tensor>;
    /// A new tensor of `shape` filled with `fill`, with each part copied into its region (a
    /// layout over the new tensor's contiguous storage). Used by cat, pad and narrow's
    /// backward.
    fn assemble(&self, shape: &[usize], like: &Tensor, fill: f64, parts: &[(&Tensor, Layout)]) -> Result<Tensor>;
    /// Writes `values` into the view `destination` in place (same shape and dtype, checked by
    /// `Tensor::assign`).
    fn assign(&self, destination: &Tensor, values: &Tensor) -> Result<()>;
}

impl Tensor {
    /// The same elements in a new shape of equal size: a view when this tensor is contiguous,
    /// else a copy. Backward: reshape the gradient back.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(TensorError::ShapeMismatch { op: "reshape", lhs: self.shape().to_vec(), rhs: shape.to_vec() });
        }
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let source = self.contiguous()?;
        let out = source.view_with_layout(source.layout().reshape(shape).expect("contiguous"));
        let input_shape = self.shape().to_vec();
        Ok(out.with_backward("reshape", &[&source], move |g| Ok(vec![Some(g.reshape(&input_shape)?)])))
    }

    /// Collapses everything into one axis.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])
    }

    /// Inserts an axis of size 1 at `axis` (which may be `rank`, or negative); a view.
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let axis = normalize_axis("unsqueeze", axis, self.rank() + 1)?;
        let out = self.view_with_layout(self.layout().unsqueeze(axis));
        Ok(out.with_backward("unsqueeze", &[self], move |g| Ok(vec![Some(g.squeeze(axis as isize)?)])))
    }

    /// Removes an axis of size 1; a view.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let axis = normalize_axis("squeeze", axis, self.rank())?;
        if self.shape()[axis] != 1 {
            return invalid("squeeze", format!("axis {axis} of shape {:?} is not 1", self.shape()));
        }
        let out = self.view_with_layout(self.layout().squeeze(axis));
        Ok(out.with_backward("squeeze", &[self], move |g| Ok(vec![Some(g.unsqueeze(axis as isize)?)])))
    }

    /// Reorders axes (a view): axis `i` of the result is axis `dims[i]` of the input.
    /// Backward: the inverse permutation.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let out = self.view_with_layout(self.layout().permute(dims)?);
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(out.with_backward("permute", &[self], move |g| Ok(vec![Some(g.permute(&inverse)?)])))
    }

    /// Swaps two axes (a view).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (normalize_axis("transpose", a, self.rank())?, normalize_axis("transpose", b, self.rank())?);
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Elements `start..start+len` along `axis` (a view). Backward: the gradient placed back
    /// into zeros of the input's shape.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let axis = normalize_axis("narrow", axis, self.rank())?;
        let out = self.view_with_layout(self.layout().narrow(axis, start, len)?);
        let input = self.detach();
        Ok(out.with_backward("narrow", &[self], move |g| {
            let region = Layout::contiguous(input.shape()).narrow(axis, start, len)?;
            Ok(vec![Some(kernels(g).assemble(input.shape(), &input, 0.0, &[(g, region)])?)])
        }))
    }

    /// Repeats size-1 axes (and adds leading axes) to reach `shape`, NumPy-style, as a view
    /// with stride 0. Backward: sum over the repeated axes.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let out = self.view_with_layout(self.layout().broadcast_to(shape)?);
        let input_shape = self.shape().to_vec();
        Ok(out.with_backward("broadcast_to", &[self], move |g| Ok(vec![Some(g.sum_to_shape(&input_shape)?)])))
    }

    /// PyTorch's name for [`Tensor::broadcast_to`].
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        self.broadcast_to(shape)
    }

    /// The same values in a fresh row-major storage (itself when already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let out = kernels(self).gather(self)?;
        Ok(out.with_backward("contiguous", &[self], |g| Ok(vec![Some(g.clone())])))
    }

    /// Concatenates along `axis`; all other axes must match. Backward: each input gets its
    /// slice of the gradient.
    pub fn cat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = *tensors.first().ok_or_else(|| TensorError::InvalidArgument { op: "cat", msg: "no tensors".into() })?;
        let axis = normalize_axis("cat", axis, first.rank())?;
        crate::ops::check_same("cat", tensors)?;
        let mut shape = first.shape().to_vec();
        shape[axis] = 0;
        for t in tensors {
            let same_elsewhere = t.rank() == first.rank() && (0..t.rank()).all(|i| i == axis || t.shape()[i] == first.shape()[i]);
            if !same_elsewhere {
                return Err(TensorError::ShapeMismatch { op: "cat", lhs: first.shape().to_vec(), rhs: t.shape().to_vec() });
            }
            shape[axis] += t.shape()[axis];
        }
        let full = Layout::contiguous(&shape);
        let mut parts = Vec::with_capacity(tensors.len());
        let mut starts = Vec::with_capacity(tensors.len());
        let mut start = 0;
        for &t in tensors {
            parts.push((t, full.narrow(axis, start, t.shape()[axis])?));
            starts.push((start, t.shape()[axis]));
            start += t.shape()[axis];
        }
        let out = kernels(first).assemble(&shape, first, 0.0, &parts)?;
        Ok(out.with_backward("cat", tensors, move |g| starts.iter().map(|&(s, len)| Ok(Some(g.narrow(axis as isize, s, len)?))).collect()))
    }

    /// Pads with `value`: `paddings[i] = (before, after)` for axis `i` (one pair per axis).
    /// Backward: the gradient narrowed back to the input's region.
    pub fn pad(&self, paddings: &[(usize, usize)], value: f64) -> Result<Tensor> {
        if paddings.len() != self.rank() {
            return invalid("pad", format!("{} padding pairs for a tensor of rank {}", paddings.len(), self.rank()));
        }
        let shape: Vec<usize> = self.shape().iter().zip(paddings).map(|(&n, &(b, a))| n + b + a).collect();
        let mut region = Layout::contiguous(&shape);
        for (axis, (&n, &(before, _))) in self.shape().iter().zip(paddings).enumerate() {
            region = region.narrow(axis, before, n)?;
        }
        let out = kernels(self).assemble(&shape, self, value, &[(self, region)])?;
        let paddings = paddings.to_vec();
        let input_shape = self.shape().to_vec();
        Ok(out.with_backward("pad", &[self], move |g| {
            let mut grad = g.clone();
            for (axis, (&n, &(before, _))) in input_shape.iter().zip(&paddings).enumerate() {
                grad = grad.narrow(axis as isize, before, n)?;
            }
            Ok(vec![Some(grad)])
        }))
    }
}
