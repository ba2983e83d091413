//! 2-D convolution kernels (NCHW) as GEMMs over an im2col matrix, one image at a time.
//!
//! For an image, `col[(c, ki, kj), (oh, ow)] = x[c, oh·s − p + ki·d, ow·s − p + kj·d]` (0 outside
//! the image). Then:
//! - forward:          `y[n] = W · col(x[n])`            (`[Cout, Cin·K] · [Cin·K, Ho·Wo]`)
//! - backward data:    `dx[n] = col2im(Wᵀ · dy[n])`       (col2im sums overlapping windows)
//! - backward weight:  `dW = Σₙ dy[n] · col(x[n])ᵀ`
//!
//! conv_transpose2d is the backward-data kernel run forward, so these three serve both ops.
//! Images are processed in parallel (rayon); the GEMM threads itself when it is large.
//!
//! A 1×1 convolution with stride 1 and no padding (the UNet's shortcuts) has the image itself for
//! its im2col matrix: the GEMMs read it in place and the input gradient needs no col2im.
//! Other stride-1 convolutions (every 3×3 of the UNet) take a faster road with no im2col
//! matrix at all: see [`padded`] and [`winograd`].

use rayon::prelude::*;

use super::algorithm::{ConvAlgorithm, ConvPass, select};
use super::{ConvGeometry, ConvKernels};
use crate::cpu::gemm::{MatRef, gemm};
use crate::cpu::pool::Scratch;
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_elements, host_tensor, with_host_elements, wrap};
use crate::{Device, FloatElem, Result, Tensor};

mod padded;
mod winograd;
mod winograd4;

use winograd::F2x2;
use winograd4::F4x4;

impl ConvKernels for Cpu {
    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: &ConvGeometry) -> Result<Tensor> {
        let op = "conv2d";
        let (x, w, b) = (x.contiguous()?, w.contiguous()?, bias.map(Tensor::contiguous).transpose()?);
        let bias_storage = b.as_ref().map(|b| b.storage());
        let y = with_host_elements!(op, [&x => xs, &w => ws], {
            let bias = match (&b, &bias_storage) {
                (Some(b), Some(storage)) => Some(host_elements(op, storage, b)?),
                _ => None,
            };
            wrap(conv2d_forward(xs, ws, bias, g))
        });
        Ok(host_tensor(y, &g.output_shape()))
    }

    fn conv2d_backward_input(&self, dy: &Tensor, w: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
        let (dy, w) = (dy.contiguous()?, w.contiguous()?);
        let dx = with_host_elements!("conv2d_backward_input", [&dy => dys, &w => ws], wrap(conv2d_backward_input(dys, ws, g)));
        Ok(host_tensor(dx, &g.input_shape()))
    }

    fn conv2d_backward_weight(&self, x: &Tensor, dy: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let dw = with_host_elements!("conv2d_backward_weight", [&x => xs, &dy => dys], wrap(conv2d_backward_weight(xs, dys, g)));
        Ok(host_tensor(dw, &g.weight_shape()))
    }
}

/// The output columns `ow` whose input column `ow·s − p + kj·d` lies inside the image, as a
/// range, and the input column of the first of them.
#[inline]
fn valid_columns(g: &ConvGeometry, kj: usize) -> (std::ops::Range<usize>, usize) {
    let (s, offset) = (g.stride[1], kj * g.dilation[1]);
    // ow·s + offset − p ≥ 0  ⇔  ow ≥ ⌈(p − offset)/s⌉
    let first = g.padding[1].saturating_sub(offset).div_ceil(s);
    // ow·s + offset − p ≤ w − 1  ⇔  ow ≤ (w − 1 + p − offset)/s
    let end = match (g.w - 1 + g.padding[1]).checked_sub(offset) {
        Some(limit) => (limit / s + 1).min(g.wo),
        None => 0,
    };
    let first = first.min(end);
    (first..end, (first * s + offset).saturating_sub(g.padding[1]))
}

/// Fills `col` (`[c_in·kh·kw, ho·wo]`, row-major) from one image. Each output row splits into
/// a zero-padded head and tail and a middle read with the stride (a plain copy at stride 1).
fn im2col<T: FloatElem>(image: &[T], g: &ConvGeometry, col: &mut [T]) {
    for (r, row) in col.chunks_exact_mut(g.col_cols()).take(g.col_rows()).enumerate() {
        im2col_row(image, g, r, row);
    }
}

/// Row `r = (c, ki, kj)` of one image's im2col matrix, `ho·wo` values.
fn im2col_row<T: FloatElem>(image: &[T], g: &ConvGeometry, r: usize, row: &mut [T]) {
    let (c, ki, kj) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
    let (valid, first_iw) = valid_columns(g, kj);
    for oh in 0..g.ho {
        let out_row = &mut row[oh * g.wo..(oh + 1) * g.wo];
        let Some(ih) = ConvGeometry::input_coord(oh, ki, g.stride[0], g.padding[0], g.dilation[0], g.h) else {
            out_row.fill(T::zero());
            continue;
        };
        let in_row = &image[(c * g.h + ih) * g.w..][..g.w];
        out_row[..valid.start].fill(T::zero());
        out_row[valid.end..].fill(T::zero());
        let middle = &mut out_row[valid.clone()];
        if g.stride[1] == 1 {
            middle.copy_from_slice(&in_row[first_iw..first_iw + middle.len()]);
        } else {
            for (i, value) in middle.iter_mut().enumerate() {
                *value = in_row[first_iw + i * g.stride[1]];
            }
        }
    }
}

/// [`im2col`] into `col`, returned.
fn im2col_into<'a, T: FloatElem>(image: &[T], g: &ConvGeometry, col: &'a mut [T]) -> &'a [T] {
    im2col(image, g, col);
    col
}

/// Adds `col` back into one image (the adjoint of [`im2col`]); `image` must start zeroed.
/// Row `r` of `col` is read at `col[r·row_stride..]`.
fn col2im<T: FloatElem>(col: &[T], row_stride: usize, g: &ConvGeometry, image: &mut [T]) {
    let cols = g.col_cols();
    for c in 0..g.c_in {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &col[((c * g.kh + ki) * g.kw + kj) * row_stride..][..cols];
                let (valid, first_iw) = valid_columns(g, kj);
                for oh in 0..g.ho {
                    let Some(ih) = ConvGeometry::input_coord(oh, ki, g.stride[0], g.padding[0], g.dilation[0], g.h) else {
                        continue;
                    };
                    let in_row = &mut image[(c * g.h + ih) * g.w..][..g.w];
                    let middle = &row[oh * g.wo..][valid.clone()];
                    for (i, &value) in middle.iter().enumerate() {
                        in_row[first_iw + i * g.stride[1]] += value;
                    }
                }
            }
        }
    }
}

/// `y = conv2d(x, weight) + bias` (`bias[o]` added to output channel `o`, in the kernel's last
/// pass over its output); `x`, `weight` contiguous.
pub fn conv2d_forward<T: FloatElem>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &ConvGeometry) -> Vec<T> {
    if let Some(bias) = bias {
        assert_eq!(bias.len(), g.c_out, "one bias per output channel");
    }
    match select(g, ConvPass::Forward, Device::Cpu) {
        ConvAlgorithm::WinogradF4 => winograd::conv::<F4x4, T>(x, weight, bias, &padded::Conv::forward(g)),
        ConvAlgorithm::WinogradF2 => winograd::conv::<F2x2, T>(x, weight, bias, &padded::Conv::forward(g)),
        ConvAlgorithm::BatchedIm2col => batched_im2col_forward(x, weight, bias, g),
        ConvAlgorithm::TapRuns => padded::conv(x, weight, bias, &padded::Conv::forward(g)),
        ConvAlgorithm::Polyphase => padded::strided_conv(x, weight, bias, g),
        ConvAlgorithm::Pointwise | ConvAlgorithm::Im2col | ConvAlgorithm::ImplicitGemm => {
            let mut y = im2col_forward(x, weight, g);
            if let Some(bias) = bias {
                y.par_chunks_mut(g.ho * g.wo).enumerate().for_each(|(row, plane)| {
                    let b = bias[row % g.c_out];
                    plane.iter_mut().for_each(|v| *v += b);
                });
            }
            y
        }
    }
}

/// `dx` for `y = conv2d(x, weight)`, given `dy`.
pub fn conv2d_backward_input<T: FloatElem>(dy: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let stride_1 = || padded::Conv::backward_input(g).expect("the table picks a stride-1 road only for a stride-1 input gradient");
    match select(g, ConvPass::InputGradient, Device::Cpu) {
        ConvAlgorithm::WinogradF4 => winograd::conv::<F4x4, T>(dy, &padded::flip_and_swap_channels(weight, g), None, &stride_1()),
        ConvAlgorithm::WinogradF2 => winograd::conv::<F2x2, T>(dy, &padded::flip_and_swap_channels(weight, g), None, &stride_1()),
        ConvAlgorithm::BatchedIm2col => batched_im2col_backward_input(dy, weight, g),
        ConvAlgorithm::TapRuns => padded::conv(dy, &padded::flip_and_swap_channels(weight, g), None, &stride_1()),
        _ => im2col_backward_input(dy, weight, g),
    }
}

/// `dW` for `y = conv2d(x, weight)`, given `dy`.
pub fn conv2d_backward_weight<T: FloatElem>(x: &[T], dy: &[T], g: &ConvGeometry) -> Vec<T> {
    match select(g, ConvPass::WeightGradient, Device::Cpu) {
        ConvAlgorithm::BatchedIm2col => batched_im2col_backward_weight(x, dy, g),
        ConvAlgorithm::WinogradF2 => winograd::backward_weight(x, dy, g),
        ConvAlgorithm::TapRuns => padded::backward_weight(x, dy, g),
        _ => im2col_backward_weight(x, dy, g),
    }
}

/// [`conv2d_forward`] for any stride: im2col, then a GEMM per image.
fn im2col_forward<T: FloatElem>(x: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let mut y = crate::cpu::pool::for_overwrite::<T>(g.n * g.output_image_len());
    let (k, cols) = (g.col_rows(), g.col_cols());
    y.par_chunks_mut(g.output_image_len()).zip(x.par_chunks(g.image_len())).for_each_init(
        || Scratch::<T>::for_overwrite(g.col_len()),
        |col, (y_image, x_image)| {
            let col: &[T] = if g.is_pointwise() { x_image } else { im2col_into(x_image, g, col) };
            let w = MatRef { data: weight, row_stride: k, col_stride: 1 };
            let c = MatRef { data: col, row_stride: cols, col_stride: 1 };
            gemm(g.c_out, cols, k, w, c, y_image, cols, false);
        },
    );
    y
}

/// [`conv2d_backward_input`] for any stride: a GEMM per image, then col2im.
fn im2col_backward_input<T: FloatElem>(dy: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let pointwise = g.is_pointwise();
    let mut dx = if pointwise { crate::cpu::pool::for_overwrite::<T>(g.n * g.image_len()) } else { crate::cpu::pool::zeroed::<T>(g.n * g.image_len()) };
    let (k, cols) = (g.col_rows(), g.col_cols());
    dx.par_chunks_mut(g.image_len()).zip(dy.par_chunks(g.output_image_len())).for_each_init(
        || Scratch::<T>::for_overwrite(g.col_len()),
        |dcol, (dx_image, dy_image)| {
            // Wᵀ: read the [c_out, k] weight with swapped strides
            let w_t = MatRef { data: weight, row_stride: 1, col_stride: k };
            let dy_m = MatRef { data: dy_image, row_stride: cols, col_stride: 1 };
            if pointwise {
                gemm(k, cols, g.c_out, w_t, dy_m, dx_image, cols, false);
            } else {
                gemm(k, cols, g.c_out, w_t, dy_m, dcol, cols, false);
                col2im(dcol, cols, g, dx_image);
            }
        },
    );
    dx
}

/// The batch's im2col matrices side by side: `[c_in·kh·kw, n·ho·wo]`.
fn batched_im2col<T: FloatElem>(x: &[T], g: &ConvGeometry) -> Scratch<T> {
    let (k, cols) = (g.col_rows(), g.col_cols());
    let mut col = Scratch::<T>::for_overwrite(k * g.n * cols);
    col.par_chunks_mut(g.n * cols).enumerate().for_each(|(r, row)| {
        for (image, part) in row.chunks_exact_mut(cols).enumerate() {
            im2col_row(&x[image * g.image_len()..][..g.image_len()], g, r, part);
        }
    });
    col
}

/// The batch's output-shaped `dy` (`[n, c_out, ho·wo]`) with its images side by side:
/// `[c_out, n·ho·wo]`.
fn batch_side_by_side<T: FloatElem>(dy: &[T], g: &ConvGeometry) -> Scratch<T> {
    let cols = g.col_cols();
    let mut wide = Scratch::<T>::for_overwrite(g.c_out * g.n * cols);
    wide.par_chunks_mut(g.n * cols).enumerate().for_each(|(o, row)| {
        for (image, part) in row.chunks_exact_mut(cols).enumerate() {
            part.copy_from_slice(&dy[(image * g.c_out + o) * cols..][..cols]);
        }
    });
    wide
}

/// [`conv2d_forward`] as one GEMM over the whole batch (`ConvAlgorithm::BatchedIm2col`):
/// `Y' = W · col'`, `Y'` `[c_out, n·ho·wo]`, then each image's planes (plus the bias) into `y`.
fn batched_im2col_forward<T: FloatElem>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &ConvGeometry) -> Vec<T> {
    let (k, cols, total) = (g.col_rows(), g.col_cols(), g.n * g.col_cols());
    let col = batched_im2col(x, g);
    let mut y_wide = Scratch::<T>::for_overwrite(g.c_out * total);
    let w = MatRef { data: weight, row_stride: k, col_stride: 1 };
    gemm(g.c_out, total, k, w, MatRef { data: &col, row_stride: total, col_stride: 1 }, &mut y_wide, total, false);
    let mut y = crate::cpu::pool::for_overwrite::<T>(g.n * g.output_image_len());
    y.par_chunks_mut(cols).enumerate().for_each(|(row, plane)| {
        let (image, o) = (row / g.c_out, row % g.c_out);
        let b = bias.map_or(T::zero(), |bias| bias[o]);
        for (out, &v) in plane.iter_mut().zip(&y_wide[o * total + image * cols..][..cols]) {
            *out = v + b;
        }
    });
    y
}

/// [`conv2d_backward_input`] as one GEMM over the whole batch (see [`batched`]):
/// `dcol' = Wᵀ · dY'`, then col2im of each image's columns.
fn batched_im2col_backward_input<T: FloatElem>(dy: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let (k, cols, total) = (g.col_rows(), g.col_cols(), g.n * g.col_cols());
    let dy_wide = batch_side_by_side(dy, g);
    let mut dcol = Scratch::<T>::for_overwrite(k * total);
    let w_t = MatRef { data: weight, row_stride: 1, col_stride: k };
    gemm(k, total, g.c_out, w_t, MatRef { data: &dy_wide, row_stride: total, col_stride: 1 }, &mut dcol, total, false);
    let mut dx = crate::cpu::pool::zeroed::<T>(g.n * g.image_len());
    dx.par_chunks_mut(g.image_len()).enumerate().for_each(|(image, dx_image)| col2im(&dcol[image * cols..], total, g, dx_image));
    dx
}

/// [`conv2d_backward_weight`] as one GEMM over the whole batch (see [`batched`]):
/// `dW = dY' · col'ᵀ`.
fn batched_im2col_backward_weight<T: FloatElem>(x: &[T], dy: &[T], g: &ConvGeometry) -> Vec<T> {
    let (k, total) = (g.col_rows(), g.n * g.col_cols());
    let col = batched_im2col(x, g);
    let dy_wide = batch_side_by_side(dy, g);
    let mut dw = crate::cpu::pool::for_overwrite::<T>(g.c_out * k);
    let a = MatRef { data: &dy_wide, row_stride: total, col_stride: 1 };
    let col_t = MatRef { data: &col, row_stride: 1, col_stride: total };
    gemm(g.c_out, k, total, a, col_t, &mut dw, k, false);
    dw
}

/// [`conv2d_backward_weight`] for any stride: images are split among threads, each
/// accumulating its own `dW` over im2col GEMMs, then summed.
fn im2col_backward_weight<T: FloatElem>(x: &[T], dy: &[T], g: &ConvGeometry) -> Vec<T> {
    let (k, cols) = (g.col_rows(), g.col_cols());
    let weight_len = g.c_out * k;
    let images_per_task = g.n.div_ceil(rayon::current_num_threads()).max(1);
    let partials: Vec<Scratch<T>> = (0..g.n)
        .collect::<Vec<_>>()
        .par_chunks(images_per_task)
        .map(|images| {
            let mut dw = Scratch::<T>::zeroed(weight_len);
            let mut col = Scratch::<T>::for_overwrite(g.col_len());
            for &n in images {
                let x_image = &x[n * g.image_len()..][..g.image_len()];
                let col: &[T] = if g.is_pointwise() { x_image } else { im2col_into(x_image, g, &mut col) };
                let dy_m = MatRef { data: &dy[n * g.output_image_len()..], row_stride: cols, col_stride: 1 };
                let col_t = MatRef { data: col, row_stride: 1, col_stride: cols };
                gemm(g.c_out, k, cols, dy_m, col_t, &mut dw, k, true);
            }
            dw
        })
        .collect();
    let mut total = crate::cpu::pool::zeroed::<T>(weight_len);
    for partial in partials {
        for (t, &p) in total.iter_mut().zip(partial.iter()) {
            *t += p;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::super::algorithm;
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    fn geometry(
        n: usize,
        c_in: usize,
        c_out: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> ConvGeometry {
        let ho = h + 2 * padding[0] - dilation[0] * (kh - 1);
        let wo = w + 2 * padding[1] - dilation[1] * (kw - 1);
        ConvGeometry { n, c_in, h, w, c_out, kh, kw, stride: [1, 1], padding, dilation, ho, wo }
    }

    /// The strided forward on the polyphase split (and through the dispatch, which may take the
    /// batched road) against the im2col one, on shapes with odd
    /// and even sizes, strides 2 and 3 and unequal ones, padding 0 to above the stride, a
    /// kernel that ends inside the padding (1×1, padding 1), a depth past one `KC` slice, and
    /// fewer and more output channels than the panels that copy their B rows.
    #[test]
    fn strided_forward_equals_the_im2col_forward() {
        let strided = |n, c_in, c_out, (h, w): (usize, usize), (kh, kw): (usize, usize), stride: [usize; 2], padding: [usize; 2]| {
            let out = |size: usize, k: usize, axis: usize| (size + 2 * padding[axis] - k) / stride[axis] + 1;
            let (ho, wo) = (out(h, kh, 0), out(w, kw, 1));
            ConvGeometry { n, c_in, h, w, c_out, kh, kw, stride, padding, dilation: [1, 1], ho, wo }
        };
        let cases = [
            strided(3, 17, 18, (16, 16), (3, 3), [2, 2], [1, 1]),
            strided(2, 5, 9, (9, 11), (3, 3), [2, 2], [1, 1]),
            strided(2, 4, 6, (12, 10), (2, 3), [2, 3], [1, 0]),
            strided(2, 3, 4, (8, 7), (1, 1), [2, 2], [1, 1]),
            strided(1, 8, 20, (7, 7), (5, 5), [2, 2], [2, 2]),
            strided(2, 40, 3, (10, 10), (3, 3), [3, 3], [4, 0]),
        ];
        for (i, g) in cases.iter().enumerate() {
            assert!(algorithm::polyphase_applies(g));
            let x = values(g.n * g.image_len(), 1 + i as u64);
            let weight = values(g.c_out * g.col_rows(), 100 + i as u64);
            let bias = values(g.c_out, 300 + i as u64);
            let mut reference = im2col_forward(&x, &weight, g);
            for (row, plane) in reference.chunks_mut(g.ho * g.wo).enumerate() {
                plane.iter_mut().for_each(|v| *v += bias[row % g.c_out]);
            }
            for (what, fast) in [("polyphase", padded::strided_conv(&x, &weight, Some(&bias), g)), ("dispatch", conv2d_forward(&x, &weight, Some(&bias), g))] {
                assert_eq!(fast.len(), reference.len());
                for (k, (a, b)) in fast.iter().zip(&reference).enumerate() {
                    assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "case {i} {what} [{k}]: {a} vs {b} ({g:?})");
                }
            }
        }
    }

    /// The stride-1 kernels against the im2col ones (themselves checked against direct loops
    /// and by finite differences in tests/ops_conv.rs), on shapes that hit every edge: output
    /// channels and taps not multiples of the register tiles, partial column tiles, a depth
    /// past one `KC` slice, padding above `d(k − 1)` (the input gradient's fallback), one image.
    #[test]
    fn stride_1_kernels_equal_the_im2col_kernels() {
        let cases = [
            geometry(3, 5, 7, (9, 11), (3, 3), [1, 1], [1, 1]),
            geometry(1, 3, 4, (32, 32), (3, 3), [1, 1], [1, 1]),
            geometry(2, 40, 9, (8, 8), (3, 3), [1, 1], [1, 1]),
            geometry(2, 6, 5, (7, 10), (2, 3), [0, 2], [1, 1]),
            geometry(2, 4, 6, (12, 9), (3, 3), [2, 2], [2, 1]),
            geometry(2, 8, 3, (5, 6), (1, 1), [0, 0], [1, 1]),
            geometry(2, 3, 5, (6, 6), (3, 3), [3, 2], [1, 1]),
            geometry(4, 33, 13, (4, 4), (3, 3), [1, 1], [1, 1]),
            // Winograd, weight gradient (small images): channels not multiples of the tiles, one
            // tile-row per image, more tiles than one chunk
            geometry(3, 17, 18, (6, 6), (3, 3), [1, 1], [1, 1]),
            geometry(2, 16, 21, (2, 8), (3, 3), [1, 1], [1, 1]),
            geometry(70, 16, 19, (8, 8), (3, 3), [1, 1], [1, 1]),
            // ... enough chunks for the groups that run side by side
            geometry(64, 16, 17, (16, 16), (3, 3), [1, 1], [1, 1]),
            // Winograd, forward and input gradient (larger images): padding 0 and 2, partial
            // register tiles and panels, more tiles than one chunk
            geometry(5, 16, 16, (34, 34), (3, 3), [2, 0], [1, 1]),
            geometry(3, 17, 18, (16, 16), (3, 3), [1, 1], [1, 1]),
            // F(4×4, 3×3): non-square, partial panels, more than one chunk
            geometry(1, 128, 130, (32, 32), (3, 3), [1, 1], [1, 1]),
            geometry(2, 129, 128, (36, 32), (3, 3), [1, 1], [1, 1]),
        ];
        let (mut winograd_cases, mut winograd4_cases) = (0, 0);
        for (i, g) in cases.iter().enumerate() {
            let x = values(g.n * g.image_len(), 1 + i as u64);
            let weight = values(g.c_out * g.col_rows(), 100 + i as u64);
            let dy = values(g.n * g.output_image_len(), 200 + i as u64);
            let check = |what: &str, fast: Vec<f64>, reference: Vec<f64>| {
                assert_eq!(fast.len(), reference.len());
                for (k, (a, b)) in fast.iter().zip(&reference).enumerate() {
                    assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "case {i} {what}[{k}]: {a} vs {b} ({g:?})");
                }
            };
            check("forward", conv2d_forward(&x, &weight, None, g), im2col_forward(&x, &weight, g));
            // the Winograd kernels wherever they apply, whichever road the dispatch takes
            if algorithm::winograd_applies(g) {
                winograd_cases += 1;
                let flipped = padded::flip_and_swap_channels(&weight, g);
                let backward = padded::Conv::backward_input(g).expect("padding at most 2");
                check("winograd forward", winograd::conv::<F2x2, _>(&x, &weight, None, &padded::Conv::forward(g)), im2col_forward(&x, &weight, g));
                check("winograd backward_input", winograd::conv::<F2x2, _>(&dy, &flipped, None, &backward), im2col_backward_input(&dy, &weight, g));
                check("winograd backward_weight", winograd::backward_weight(&x, &dy, g), im2col_backward_weight(&x, &dy, g));
            }
            if algorithm::winograd4_pays(g) {
                winograd4_cases += 1;
                let flipped = padded::flip_and_swap_channels(&weight, g);
                let backward = padded::Conv::backward_input(g).expect("padding at most 2");
                check("winograd4 forward", winograd::conv::<F4x4, _>(&x, &weight, None, &padded::Conv::forward(g)), im2col_forward(&x, &weight, g));
                check("winograd4 backward_input", winograd::conv::<F4x4, _>(&dy, &flipped, None, &backward), im2col_backward_input(&dy, &weight, g));
            }
            check("backward_input", conv2d_backward_input(&dy, &weight, g), im2col_backward_input(&dy, &weight, g));
            check("backward_weight", conv2d_backward_weight(&x, &dy, g), im2col_backward_weight(&x, &dy, g));
            // the other weight-gradient roads, whichever the dispatch takes
            check("batched forward", batched_im2col_forward(&x, &weight, None, g), im2col_forward(&x, &weight, g));
            check("batched backward_input", batched_im2col_backward_input(&dy, &weight, g), im2col_backward_input(&dy, &weight, g));
            check("batched backward_weight", batched_im2col_backward_weight(&x, &dy, g), im2col_backward_weight(&x, &dy, g));
            if algorithm::is_full_stride_1(g) && !g.is_pointwise() {
                let flipped = padded::flip_and_swap_channels(&weight, g);
                check("padded forward", padded::conv(&x, &weight, None, &padded::Conv::forward(g)), im2col_forward(&x, &weight, g));
                if let Some(backward) = padded::Conv::backward_input(g) {
                    check("padded backward_input", padded::conv(&dy, &flipped, None, &backward), im2col_backward_input(&dy, &weight, g));
                }
            }
            if algorithm::is_full_stride_1(g) {
                check("padded backward_weight", padded::backward_weight(&x, &dy, g), im2col_backward_weight(&x, &dy, g));
            }
            // f32 takes the same road with 8- or 16-lane vectors
            let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            let (x32, w32, dy32) = (to32(&x), to32(&weight), to32(&dy));
            // F(4×4, 3×3) rounds more (transform entries up to 8): measured here about 5e-5 of
            // the outputs' RMS at worst, against 2.5e-6 for F(2×2, 3×3); the others are held
            // to 1e-4 per element
            let check32 = |what: &str, fast: Vec<f32>, reference: Vec<f32>, f4: bool| {
                if f4 {
                    let rms = (reference.iter().map(|&b| (b as f64).powi(2)).sum::<f64>() / reference.len() as f64).sqrt();
                    let worst = fast.iter().zip(&reference).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
                    assert!(worst <= 2e-4 * rms, "case {i} {what}: largest error {worst:.2e}, outputs' RMS {rms:.2e}");
                    return;
                }
                for (k, (a, b)) in fast.iter().zip(&reference).enumerate() {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "case {i} {what}[{k}]: {a} vs {b}");
                }
            };
            let f4 = algorithm::winograd4_pays(g);
            check32("forward f32", conv2d_forward(&x32, &w32, None, g), im2col_forward(&x32, &w32, g), f4);
            check32("backward_input f32", conv2d_backward_input(&dy32, &w32, g), im2col_backward_input(&dy32, &w32, g), f4);
            check32("backward_weight f32", conv2d_backward_weight(&x32, &dy32, g), im2col_backward_weight(&x32, &dy32, g), false);
            if algorithm::winograd_applies(g) {
                let backward = padded::Conv::backward_input(g).expect("padding at most 2");
                let flipped = padded::flip_and_swap_channels(&w32, g);
                check32("winograd forward f32", winograd::conv::<F2x2, _>(&x32, &w32, None, &padded::Conv::forward(g)), im2col_forward(&x32, &w32, g), false);
                check32(
                    "winograd backward_input f32",
                    winograd::conv::<F2x2, _>(&dy32, &flipped, None, &backward),
                    im2col_backward_input(&dy32, &w32, g),
                    false,
                );
                check32("winograd backward_weight f32", winograd::backward_weight(&x32, &dy32, g), im2col_backward_weight(&x32, &dy32, g), false);
                if f4 {
                    check32(
                        "winograd4 forward f32",
                        winograd::conv::<F4x4, _>(&x32, &w32, None, &padded::Conv::forward(g)),
                        im2col_forward(&x32, &w32, g),
                        true,
                    );
                    check32(
                        "winograd4 backward_input f32",
                        winograd::conv::<F4x4, _>(&dy32, &flipped, None, &backward),
                        im2col_backward_input(&dy32, &w32, g),
                        true,
                    );
                }
            }
        }
        assert_eq!(winograd_cases, 8, "the Winograd geometries above");
        assert_eq!(winograd4_cases, 2, "the F(4×4, 3×3) geometries above");
    }
}
