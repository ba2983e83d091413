//! The host side of index_select's CUDA kernels (kernels/index_select.cu).

use super::IndexSelectKernels;
use crate::cuda::launch::{check_len, grid_stride, invalid, kernel, output};
use crate::cuda::{DeviceBuffer, KernelArg};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::ops::dense;
use crate::{Result, Tensor};

impl IndexSelectKernels for Cuda {
    fn index_rows(&self, x: &Tensor, indices: &[usize], rows: [usize; 3], adjoint: bool, out_shape: &[usize]) -> Result<Tensor> {
        let [outer, axis_len, inner] = rows;
        let x = dense(x)?;
        let out = with_device_buffers("index_select", [&x], |[xs]| index_rows(xs, indices, outer, axis_len, inner, adjoint))?;
        Ok(device_tensor(out, x.device(), out_shape))
    }
}

/// `out[o, i, r] = x[o, indices[i], r]` for x `[outer, axis_len, inner]` contiguous, or with
/// `adjoint`, `dx[o, a, r] = Σ_{indices[i] = a} g[o, i, r]` .
pub fn index_rows(x: &DeviceBuffer, indices: &[usize], outer: usize, axis_len: usize, inner: usize, adjoint: bool) -> Result<DeviceBuffer> {
    let op = if adjoint { "index_select_backward" } else { "index_select" };
    let count = indices.len();
    let (input_len, output_len) = if adjoint { (outer * count * inner, outer * axis_len * inner) } else { (outer * axis_len * inner, outer * count * inner) };
    check_len(op, "input", x, input_len)?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= axis_len) {
        return Err(invalid(op, format!("index {bad} is out of range for an axis of size {axis_len}")));
    }
    let out = output(x.backend(), output_len)?;
    if output_len == 0 {
        return Ok(out);
    }
    let index_values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let index_buffer = DeviceBuffer::from_slice(x.backend(), if index_values.is_empty() { &[0i64][..] } else { &index_values })?;
    let name = if adjoint { "index_add_f32" } else { "index_select_f32" };
    let long = |v: usize| KernelArg::I64(v as i64);
    let args = [x.arg(), index_buffer.arg(), out.arg(), long(outer), long(axis_len), long(inner), long(count)];
    x.backend().launch(kernel("index_select.cu", name), &grid_stride(output_len), &args)?;
    Ok(out)
}
