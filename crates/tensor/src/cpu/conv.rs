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

use rayon::prelude::*;

use crate::FloatElem;
use crate::cpu::gemm::{MatRef, gemm};
use crate::cpu::pool::Scratch;

/// The sizes of one convolution, `x: [n, c_in, h, w]`, `weight: [c_out, c_in, kh, kw]`,
/// `y: [n, c_out, ho, wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeometry {
    /// Rows of the im2col matrix: `c_in·kh·kw`.
    fn col_rows(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn col_cols(&self) -> usize {
        self.ho * self.wo
    }
    fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn output_image_len(&self) -> usize {
        self.c_out * self.ho * self.wo
    }

    /// For kernel offset `k` along an axis, the input coordinate of output coordinate `o`.
    #[inline]
    fn input_coord(o: usize, k: usize, stride: usize, padding: usize, dilation: usize, size: usize) -> Option<usize> {
        let i = (o * stride + k * dilation) as isize - padding as isize;
        (i >= 0 && (i as usize) < size).then_some(i as usize)
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
    let cols = g.col_cols();
    for c in 0..g.c_in {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut col[((c * g.kh + ki) * g.kw + kj) * cols..][..cols];
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
        }
    }
}

/// Adds `col` back into one image (the adjoint of [`im2col`]); `image` must start zeroed.
fn col2im<T: FloatElem>(col: &[T], g: &ConvGeometry, image: &mut [T]) {
    let cols = g.col_cols();
    for c in 0..g.c_in {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &col[((c * g.kh + ki) * g.kw + kj) * cols..][..cols];
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

/// `y = conv2d(x, weight)` without bias; `x`, `weight` contiguous.
pub fn conv2d_forward<T: FloatElem>(x: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let mut y = crate::cpu::pool::for_overwrite::<T>(g.n * g.output_image_len());
    let (k, cols) = (g.col_rows(), g.col_cols());
    y.par_chunks_mut(g.output_image_len()).zip(x.par_chunks(g.image_len())).for_each_init(
        || Scratch::<T>::for_overwrite(k * cols),
        |col, (y_image, x_image)| {
            im2col(x_image, g, col);
            let w = MatRef { data: weight, row_stride: k, col_stride: 1 };
            let c = MatRef { data: col, row_stride: cols, col_stride: 1 };
            gemm(g.c_out, cols, k, w, c, y_image, cols, false);
        },
    );
    y
}

/// `dx` for `y = conv2d(x, weight)`, given `dy`.
pub fn conv2d_backward_input<T: FloatElem>(dy: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let mut dx = crate::cpu::pool::zeroed::<T>(g.n * g.image_len());
    let (k, cols) = (g.col_rows(), g.col_cols());
    dx.par_chunks_mut(g.image_len()).zip(dy.par_chunks(g.output_image_len())).for_each_init(
        || Scratch::<T>::for_overwrite(k * cols),
        |dcol, (dx_image, dy_image)| {
            // Wᵀ: read the [c_out, k] weight with swapped strides
            let w_t = MatRef { data: weight, row_stride: 1, col_stride: k };
            let dy_m = MatRef { data: dy_image, row_stride: cols, col_stride: 1 };
            gemm(k, cols, g.c_out, w_t, dy_m, dcol, cols, false);
            col2im(dcol, g, dx_image);
        },
    );
    dx
}

/// `dW` for `y = conv2d(x, weight)`, given `dy`: images are split among threads, each
/// accumulating its own `dW`, then summed.
pub fn conv2d_backward_weight<T: FloatElem>(x: &[T], dy: &[T], g: &ConvGeometry) -> Vec<T> {
    let (k, cols) = (g.col_rows(), g.col_cols());
    let weight_len = g.c_out * k;
    let images_per_task = g.n.div_ceil(rayon::current_num_threads()).max(1);
    let partials: Vec<Scratch<T>> = (0..g.n)
        .collect::<Vec<_>>()
        .par_chunks(images_per_task)
        .map(|images| {
            let mut dw = Scratch::<T>::zeroed(weight_len);
            let mut col = Scratch::<T>::for_overwrite(k * cols);
            for &n in images {
                im2col(&x[n * g.image_len()..][..g.image_len()], g, &mut col);
                let dy_m = MatRef { data: &dy[n * g.output_image_len()..], row_stride: cols, col_stride: 1 };
                let col_t = MatRef { data: &col, row_stride: 1, col_stride: cols };
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
