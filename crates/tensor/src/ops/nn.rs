//! Neural-network helpers: dropout, MSE loss, index_select / embedding, nearest upsampling.

use crate::error::{Result, TensorError, invalid};
use crate::layout::normalize_axis;
use crate::cuda;
use crate::ops::{dense, gpu_tensor, new_tensor, on_gpu, with_gpu, wrap};
use crate::rng::Rng;
use crate::storage::with_float_slice;
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
        self.reshape(&[n, c, h, 1, w, 1])?.broadcast_to(&[n, c, h, scale, w, scale])?.reshape(&[n, c, h * scale, w * scale])
    }
}
