//! index_select (rows picked along an axis, repeats allowed) and embedding lookup.

pub mod cpu;
pub mod cuda;

use crate::Tensor;
use crate::dispatch::kernels;
use crate::error::{Result, invalid};
use crate::layout::normalize_axis;

/// index_select's kernel, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait IndexSelectKernels {
    /// With `x` viewed as `rows = [outer, axis_len, inner]`: `out[o, i, r] = x[o, indices[i], r]`,
    /// or with `adjoint` (x then the gradient `[outer, indices.len(), inner]`),
    /// `dx[o, a, r] = Σ_{indices[i] = a} g[o, i, r]`; a tensor of `out_shape`.
    fn index_rows(&self, x: &Tensor, indices: &[usize], rows: [usize; 3], adjoint: bool, out_shape: &[usize]) -> Result<Tensor>;
}

impl Tensor {
    /// The slices `indices` along `axis`, in that order (repeats allowed). Backward: each
    /// slice's gradient is added back at its index.
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Tensor> {
        let op = "index_select";
        let axis = normalize_axis(op, axis, self.rank())?;
        let axis_len = self.shape()[axis];
        if let Some(&bad) = indices.iter().find(|&&i| i >= axis_len) {
            return invalid(op, format!("index {bad} is out of range for axis {axis} of size {axis_len}"));
        }
        let outer: usize = self.shape()[..axis].iter().product();
        let inner: usize = self.shape()[axis + 1..].iter().product();
        let mut shape = self.shape().to_vec();
        shape[axis] = indices.len();
        let (kernels, input_shape, rows) = (kernels(self), self.shape().to_vec(), [outer, axis_len, inner]);
        let out = kernels.index_rows(self, indices, rows, false, &shape)?;
        let indices = indices.to_vec();
        Ok(out.with_backward(op, &[self], move |g| Ok(vec![Some(kernels.index_rows(g, &indices, rows, true, &input_shape)?)])))
    }

    /// Embedding lookup: rows `ids` of the table `self [vocabulary, dim]` → `[ids.len(), dim]`.
    pub fn embedding(&self, ids: &[usize]) -> Result<Tensor> {
        crate::ops::check_rank("embedding", self, 2, "the table")?;
        self.index_select(0, ids)
    }
}
