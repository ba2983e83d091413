//! Neural-network helpers: dropout, MSE loss, index_select / embedding, nearest upsampling.

use crate::error::{Result, TensorError, invalid};
use crate::layout::normalize_axis;
use crate::cuda;
use crate::ops::{dense, gpu_tensor, new_tensor, on_gpu, with_gpu, wrap};
use crate::rng::Rng;
use crate::storage::with_float_slice;
use rayon::prelude::*;
use crate::{FloatElem, Tensor};

/// `out[o, i, r] = x[o, indices[i], r]` for `x` viewed as `[outer, axis_len, inner]`.
fn gather_rows<T: FloatElem>(x: &[T], outer: usize, axis_len: usize, inner: usize, indices: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            out.extend_from_slice(&x[(o * axis_len + i) * inner..][..inner]);
        }
    }
    out
}

/// The adjoint of [`gather_rows`]: `dx[o, indices[i], r] += g[o, i, r]`.
fn scatter_add_rows<T: FloatElem>(g: &[T], outer: usize, axis_len: usize, inner: usize, indices: &[usize]) -> Vec<T> {
    let mut dx = crate::cpu::pool::zeroed::<T>(outer * axis_len * inner);
    for o in 0..outer {
        for (k, &i) in indices.iter().enumerate() {
            let src = &g[(o * indices.len() + k) * inner..][..inner];
            for (d, &s) in dx[(o * axis_len + i) * inner..][..inner].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    dx
}

/// Nearest upsampling of `h × w` planes by `scale`: `y[i, j] = x[i / scale, j / scale]`.
fn upsample_nearest<T: FloatElem>(x: &[T], h: usize, w: usize, scale: usize) -> Vec<T> {
    let (ws, plane_out) = (w * scale, h * scale * w * scale);
    let mut y = crate::cpu::pool::for_overwrite::<T>(x.len() * scale * scale);
    y.par_chunks_mut(plane_out).zip(x.par_chunks(h * w)).for_each(|(y, x)| {
        for (rows, x_row) in y.chunks_exact_mut(scale * ws).zip(x.chunks_exact(w)) {
            let (first, copies) = rows.split_at_mut(ws);
            for (out, &v) in first.chunks_exact_mut(scale).zip(x_row) {
                out.fill(v);
            }
            for copy in copies.chunks_exact_mut(ws) {
                copy.copy_from_slice(first);
            }
        }
    });
    y
}

/// The adjoint of [`upsample_nearest`]: `dx[i, j] = Σ` of `g` over the `scale × scale` block of
/// output positions that copied `x[i, j]`.
fn upsample_nearest_backward<T: FloatElem>(g: &[T], h: usize, w: usize, scale: usize) -> Vec<T> {
    let (ws, plane_out) = (w * scale, h * scale * w * scale);
    let mut dx = crate::cpu::pool::for_overwrite::<T>(g.len() / (scale * scale));
    dx.par_chunks_mut(h * w).zip(g.par_chunks(plane_out)).for_each(|(dx, g)| {
        for (dx_row, rows) in dx.chunks_exact_mut(w).zip(g.chunks_exact(scale * ws)) {
            dx_row.fill(T::zero());
            for row in rows.chunks_exact(ws) {
                for (d, block) in dx_row.iter_mut().zip(row.chunks_exact(scale)) {
                    *d += block.iter().fold(T::zero(), |s, &v| s + v);
                }
            }
        }
    });
    dx
}

impl Tensor {
    /// Inverted dropout: each element is zeroed with probability `p` and the survivors scaled
    /// by `1/(1 − p)`, so the expectation is unchanged; the identity when not `training`. The
    /// mask comes from `rng` (reproducible). Backward: `dx = dy ⊙ mask`.
    ///
    /// Nothing is saved for the backward but the position of `rng`'s stream: Philox is
    /// counter-based, so the backward draws the same mask again (16 bytes kept instead of a
    /// mask the size of `x`).
    pub fn dropout(&self, p: f64, training: bool, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return invalid("dropout", format!("probability {p} is outside [0, 1)"));
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        let (shape, dtype, device, stream) = (self.shape().to_vec(), self.dtype(), self.device(), rng.clone());
        if device == crate::Device::Cpu && matches!(dtype, crate::DType::F32 | crate::DType::F64) {
            // one pass each way: x ⊙ mask, then dy ⊙ mask, the mask drawn as it goes
            let scale = 1.0 / (1.0 - p);
            let apply = move |t: &Tensor, rng: &mut Rng| -> Result<Tensor> {
                let t = dense(t)?;
                let storage = t.storage();
                let out = with_float_slice!("dropout", storage.cpu("dropout")?, v => wrap(rng.dropout_apply(&v[..t.numel()], p, scale)));
                Ok(new_tensor(out, t.shape()))
            };
            let out = apply(self, rng)?;
            return Ok(out.with_backward("dropout", &[self], move |g| Ok(vec![Some(apply(g, &mut stream.clone())?)])));
        }
        let mask = Tensor::dropout_mask_on(&shape, p, dtype, device, rng)?;
        let out = {
            let _guard = crate::no_grad();
            self.mul(&mask)?
        };
        drop(mask);
        Ok(out.with_backward("dropout", &[self], move |g| {
            let mask = Tensor::dropout_mask_on(&shape, p, dtype, device, &mut stream.clone())?;
            Ok(vec![Some(g.mul(&mask)?)])
        }))
    }

    /// Mean squared error, `mean((pred − target)²)`; the shapes must be equal.
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(TensorError::ShapeMismatch { op: "mse_loss", lhs: self.shape().to_vec(), rhs: target.shape().to_vec() });
        }
        self.sub(target)?.sqr()?.mean_all()
    }

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
        let (device, input_shape) = (self.device(), self.shape().to_vec());
        if on_gpu(self) {
            let x = dense(self)?;
            let out = with_gpu(op, &x, |v| cuda::kernels::index_rows(v, indices, outer, axis_len, inner, false))?;
            let indices = indices.to_vec();
            return Ok(gpu_tensor(out, device, &shape).with_backward(op, &[self], move |g| {
                let g = dense(g)?;
                let dx = with_gpu(op, &g, |v| cuda::kernels::index_rows(v, &indices, outer, axis_len, inner, true))?;
                Ok(vec![Some(gpu_tensor(dx, device, &input_shape))])
            }));
        }
        let x = self.contiguous()?;
        let range = x.layout().contiguous_range().unwrap();
        let out = {
            let storage = x.storage();
            with_float_slice!(op, storage.cpu(op)?, v => wrap(gather_rows(&v[range], outer, axis_len, inner, indices)))
        };
        let indices = indices.to_vec();
        Ok(new_tensor(out, &shape).with_backward(op, &[self], move |g| {
            let g = g.contiguous()?;
            let range = g.layout().contiguous_range().unwrap();
            let storage = g.storage();
            let dx = with_float_slice!(op, storage.cpu(op)?, v => wrap(scatter_add_rows(&v[range], outer, axis_len, inner, &indices)));
            Ok(vec![Some(new_tensor(dx, &input_shape))])
        }))
    }

    /// Embedding lookup: rows `ids` of the table `self [vocabulary, dim]` → `[ids.len(), dim]`.
    pub fn embedding(&self, ids: &[usize]) -> Result<Tensor> {
        crate::ops::check_rank("embedding", self, 2, "the table")?;
        self.index_select(0, ids)
    }

    /// Nearest-neighbour upsampling of `[N, C, H, W]` by an integer `scale`: each pixel becomes
    /// a `scale`×`scale` block. On the CPU a composition (broadcast a size-1 axis, then
    /// reshape), so the backward sums each block's gradient; on a CUDA device one kernel each
    /// way (kernels/upsample.cu).
    pub fn upsample_nearest2d(&self, scale: usize) -> Result<Tensor> {
        crate::ops::check_rank("upsample_nearest2d", self, 4, "input")?;
        if scale == 0 {
            return invalid("upsample_nearest2d", "scale must be positive");
        }
        let [n, c, h, w] = self.shape().try_into().unwrap();
        if on_gpu(self) {
            let op = "upsample_nearest2d";
            let (device, x) = (self.device(), dense(self)?);
            let y = with_gpu(op, &x, |v| cuda::kernels::upsample_nearest2d(v, n * c, h, w, scale, false))?;
            return Ok(gpu_tensor(y, device, &[n, c, h * scale, w * scale]).with_backward(op, &[self], move |g| {
                let g = dense(g)?;
                let dx = with_gpu(op, &g, |v| cuda::kernels::upsample_nearest2d(v, n * c, h, w, scale, true))?;
                Ok(vec![Some(gpu_tensor(dx, device, &[n, c, h, w]))])
            }));
        }
        let op = "upsample_nearest2d";
        let x = dense(self)?;
        let storage = x.storage();
        let y = with_float_slice!(op, storage.cpu(op)?, xs => wrap(upsample_nearest(&xs[..n * c * h * w], h, w, scale)));
        Ok(new_tensor(y, &[n, c, h * scale, w * scale]).with_backward(op, &[self], move |g| {
            let g = dense(g)?;
            let storage = g.storage();
            let dx = with_float_slice!(op, storage.cpu(op)?, gs => wrap(upsample_nearest_backward(&gs[..n * c * h * w * scale * scale], h, w, scale)));
            Ok(vec![Some(new_tensor(dx, &[n, c, h, w]))])
        }))
    }
}
