//! Helpers shared by the op tests: the devices they run on (`TestDevice`, `per_device!`), and
//! naive index helpers (references are written with explicit row-major index arithmetic,
//! never with the engine's own ops).
#![allow(dead_code, unused_macros)]

#[macro_use]
mod devices;
#[allow(unused_imports)] // not every test file runs per device yet
pub use devices::*;

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The multi-index of row-major position `flat` in `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        index[axis] = flat % shape[axis];
        flat /= shape[axis];
    }
    index
}

/// The row-major position of `index` in `shape`.
pub fn ravel(index: &[usize], shape: &[usize]) -> usize {
    index.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// The row-major values of the permuted view (axis `k` of the result is axis `dims[k]`).
pub fn naive_permute(values: &[f64], shape: &[usize], dims: &[usize]) -> Vec<f64> {
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    (0..numel(&out_shape))
        .map(|flat| {
            let out_index = unravel(flat, &out_shape);
            let mut source = vec![0; shape.len()];
            for (k, &d) in dims.iter().enumerate() {
                source[d] = out_index[k];
            }
            values[ravel(&source, shape)]
        })
        .collect()
}

/// The row-major values of `values[.., start..start+len, ..]` (along `axis`).
pub fn naive_narrow(values: &[f64], shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<f64> {
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    (0..numel(&out_shape))
        .map(|flat| {
            let mut index = unravel(flat, &out_shape);
            index[axis] += start;
            values[ravel(&index, shape)]
        })
        .collect()
}
