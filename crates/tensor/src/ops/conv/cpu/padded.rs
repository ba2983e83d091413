//! Stride-1 convolutions over the zero-padded image, read in place: no im2col matrix.
//!
//! Pad each image once: `xp[c, i, j]`, `hp × wp` per channel (`hp = h + 2p_h`,
//! `wp = w + 2p_w`), flattened so that `(c, i, j)` is at `c·hp·wp + i·wp + j`. Number the
//! outputs on the *padded* width, `q = oh·wp + ow`. Then the input that weight `(c, ki, kj)`
//! meets at output `q` is `xp[offset(c, ki, kj) + q]` with
//! `offset = c·hp·wp + ki·d_h·wp + kj·d_w`, the same shift for every `q`: row `(c, ki, kj)` of
//! the im2col matrix is the contiguous run of `xp` that starts at its offset. So
//! - forward: `Y[o, q] = Σ_p W[o, p] · xp[offset(p) + q]`, a GEMM whose B rows are read
//!   straight from `xp` by [`tile_product`] (only W is packed, once per call);
//! - backward-weight: `dW[o, p] = Σₙ Σ_q dY[n, o, q] · xp[n, offset(p) + q]`, dot products of
//!   two contiguous runs (dY laid out on the padded width, zero in the extra columns);
//! - backward-input: at stride 1, the forward convolution of `dy` with the kernel flipped and
//!   its two channel axes swapped, padded by `d(k − 1) − p` (when that is not negative).
//!
//! The columns `ow ≥ wo` of the padded width are computed and thrown away (or multiplied by
//! zeros): `(wp − wo)/wp` of the work, 6% at 32×32 with a 3×3 kernel, 20% at 8×8.
//!
//! A strided convolution (the UNet's downsamples, stride 2) takes the same road over its input's
//! polyphase split: with `ki − p = s·d + a` (`0 ≤ a < s`), input row `s·oh + ki − p` is row
//! `oh + d` of phase `a`, the rows `s·r + a` of the image. So each channel becomes `s_h·s_w`
//! phase planes (zero-padded in front by `⌈p/s⌉`), and tap `(c, ki, kj)` again reads a
//! contiguous run, at `offset = (c·s_h·s_w + a_i·s_w + a_j)·plane + (d_i + ⌈p_h/s_h⌉)·wp +
//! d_j + ⌈p_w/s_w⌉`: a stride-1 GEMM over exactly the `c·kh·kw` taps (see [`TapRuns`]).

use rayon::prelude::*;

use super::super::algorithm;
use super::ConvGeometry;
use crate::FloatElem;
use crate::cpu::gemm::{SharedMut, tile_product};
use crate::cpu::pool::{self, Scratch};
use crate::cpu::simd::SimdVector;

/// Rows of W (output channels) per register tile: 4 divides every UNet width.
pub(super) const ROWS: usize = 4;
/// SIMD vectors of outputs per register tile row (3 × 8 = 24 columns with AVX2).
pub(super) const VECTORS: usize = 3;
/// Depth of one pass over a tile: its B rows (`KC` × 24 values) stay in L1.
const KC: usize = 256;
/// Fewer panels of output channels than this read a tile's B rows where they lie in the
/// padded image instead of copying them together first (the UNet's last convolution has one).
const MIN_PANELS_TO_COPY: usize = 4;
/// Output channels × kernel taps per backward-weight register tile.
const DW_ROWS: usize = 4;
const DW_COLS: usize = 3;

/// A stride-1 convolution: input `[n, c, h, w]`, kernel `[o, c, kh, kw]`, zero padding `pad`,
/// dilation `dil`.
pub(super) struct Conv {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) pad: [usize; 2],
    pub(super) dil: [usize; 2],
}

impl Conv {
    /// The convolution `g` itself (which must have stride 1).
    pub(super) fn forward(g: &ConvGeometry) -> Conv {
        debug_assert!(algorithm::is_full_stride_1(g));
        Conv { n: g.n, c: g.c_in, h: g.h, w: g.w, o: g.c_out, kh: g.kh, kw: g.kw, pad: g.padding, dil: g.dilation }
    }

    /// The convolution of `dy` that gives `g`'s input gradient (with the kernel from
    /// [`flip_and_swap_channels`]), if `g` has stride 1 and padding at most `d(k − 1)`.
    pub(super) fn backward_input(g: &ConvGeometry) -> Option<Conv> {
        if !algorithm::is_full_stride_1(g) {
            return None;
        }
        let pad_h = (g.dilation[0] * (g.kh - 1)).checked_sub(g.padding[0])?;
        let pad_w = (g.dilation[1] * (g.kw - 1)).checked_sub(g.padding[1])?;
        Some(Conv { n: g.n, c: g.c_out, h: g.ho, w: g.wo, o: g.c_in, kh: g.kh, kw: g.kw, pad: [pad_h, pad_w], dil: g.dilation })
    }

    fn hp(&self) -> usize {
        self.h + 2 * self.pad[0]
    }
    pub(super) fn wp(&self) -> usize {
        self.w + 2 * self.pad[1]
    }
    pub(super) fn ho(&self) -> usize {
        self.hp() - self.dil[0] * (self.kh - 1)
    }
    pub(super) fn wo(&self) -> usize {
        self.wp() - self.dil[1] * (self.kw - 1)
    }
    /// The GEMM depth, `c · kh · kw`.
    fn depth(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Values per padded image: its `c` planes, then zeros that reads of the last tile may
    /// run into (up to `(kw − 1)·d_w + overrun` past the last plane).
    fn padded_image_len(&self, overrun: usize) -> usize {
        self.c * self.hp() * self.wp() + self.dil[1] * (self.kw - 1) + overrun
    }
    /// `offset(p)` for each row `p = (c, ki, kj)` of the im2col matrix.
    fn offsets(&self) -> Vec<usize> {
        let (plane, wp) = (self.hp() * self.wp(), self.wp());
        let mut offsets = Vec::with_capacity(self.depth());
        for c in 0..self.c {
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    offsets.push(c * plane + ki * self.dil[0] * wp + kj * self.dil[1]);
                }
            }
        }
        offsets
    }

    /// The input `x` as runs of taps: every image zero-padded, `padded_image_len(overrun)`
    /// values apart.
    fn tap_runs<T: FloatElem>(&self, x: &[T], overrun: usize) -> TapRuns<T> {
        let (hp, wp, image_len) = (self.hp(), self.wp(), self.padded_image_len(overrun));
        let mut padded = Scratch::<T>::for_overwrite(self.n * image_len);
        padded.par_chunks_mut(image_len).zip(x.par_chunks(self.c * self.h * self.w)).for_each(|(out, image)| {
            let (planes, tail) = out.split_at_mut(self.c * hp * wp);
            tail.fill(T::zero());
            for (out_plane, in_plane) in planes.chunks_exact_mut(hp * wp).zip(image.chunks_exact(self.h * self.w)) {
                let (top, rest) = out_plane.split_at_mut(self.pad[0] * wp);
                top.fill(T::zero());
                let (middle, bottom) = rest.split_at_mut(self.h * wp);
                bottom.fill(T::zero());
                for (out_row, in_row) in middle.chunks_exact_mut(wp).zip(in_plane.chunks_exact(self.w)) {
                    out_row[..self.pad[1]].fill(T::zero());
                    out_row[self.pad[1]..self.pad[1] + self.w].copy_from_slice(in_row);
                    out_row[self.pad[1] + self.w..].fill(T::zero());
                }
            }
        });
        TapRuns { images: padded, image_len, offsets: self.offsets(), wp, ho: self.ho(), wo: self.wo() }
    }
}

/// A convolution's input laid out so that row `p` of image `n`'s im2col matrix, at output
/// `q = oh·wp + ow`, is `images[n·image_len + offsets[p] + q]`: the outputs are numbered on rows
/// `wp` wide, of which the first `wo` are real (the others computed and thrown away).
pub(super) struct TapRuns<T: FloatElem> {
    images: Scratch<T>,
    image_len: usize,
    offsets: Vec<usize>,
    wp: usize,
    ho: usize,
    wo: usize,
}

impl<T: FloatElem> TapRuns<T> {
    /// Outputs on the `wp`-wide rows.
    fn q_len(&self) -> usize {
        self.ho * self.wp
    }
    fn image(&self, n: usize) -> &[T] {
        &self.images[n * self.image_len..][..self.image_len]
    }
}

/// The polyphase split of `x` for the strided convolution `g` (see the module comment), with
/// `overrun` zeros after each image's last plane for the reads of the last tile.
fn polyphase_tap_runs<T: FloatElem>(x: &[T], g: &ConvGeometry, overrun: usize) -> TapRuns<T> {
    // per axis: the stride, the zero rows in front of each phase, the rows of a phase plane
    let axis = |s: usize, p: usize, k: usize, o: usize| {
        let lead = p.div_ceil(s);
        // the largest d is ⌊(k − 1 − p)/s⌋ (negative when the kernel ends inside the padding)
        let last_d = (k - 1) as isize - p as isize;
        let span = (o as isize + last_d.div_euclid(s as isize) + lead as isize).max(o as isize) as usize;
        (s, lead, span.max(1))
    };
    let (sh, lead_h, hp) = axis(g.stride[0], g.padding[0], g.kh, g.ho);
    let (sw, lead_w, wp) = axis(g.stride[1], g.padding[1], g.kw, g.wo);
    let plane = hp * wp;
    let phases = sh * sw;
    // rows and columns of the taps: (phase, position in the phase plane)
    let tap = |k: usize, p: usize, s: usize, lead: usize| {
        let shifted = k as isize - p as isize;
        (shifted.rem_euclid(s as isize) as usize, (shifted.div_euclid(s as isize) + lead as isize) as usize)
    };
    let mut offsets = Vec::with_capacity(g.col_rows());
    for c in 0..g.c_in {
        for ki in 0..g.kh {
            let (a_i, r) = tap(ki, g.padding[0], sh, lead_h);
            for kj in 0..g.kw {
                let (a_j, col) = tap(kj, g.padding[1], sw, lead_w);
                offsets.push((c * phases + a_i * sw + a_j) * plane + r * wp + col);
            }
        }
    }
    let image_len = g.c_in * phases * plane + wp + overrun;
    let mut images = Scratch::<T>::for_overwrite(g.n * image_len);
    images.par_chunks_mut(image_len).zip(x.par_chunks(g.image_len())).for_each(|(out, image)| {
        let (planes, tail) = out.split_at_mut(g.c_in * phases * plane);
        tail.fill(T::zero());
        for (c, in_plane) in image.chunks_exact(g.h * g.w).enumerate() {
            for a_i in 0..sh {
                for a_j in 0..sw {
                    let out_plane = &mut planes[(c * phases + a_i * sw + a_j) * plane..][..plane];
                    for (r, out_row) in out_plane.chunks_exact_mut(wp).enumerate() {
                        // phase row r holds image row s·(r − lead) + a
                        let row = (r * sh + a_i).checked_sub(lead_h * sh).filter(|&i| i < g.h);
                        let Some(i) = row else {
                            out_row.fill(T::zero());
                            continue;
                        };
                        // phase column col holds image column s·(col − lead) + a: those in
                        // the image are the columns lead .. lead + ⌈(w − a)/s⌉
                        let in_row = &in_plane[i * g.w..][..g.w];
                        let end = (lead_w + g.w.saturating_sub(a_j).div_ceil(sw)).min(wp);
                        let (head, rest) = out_row.split_at_mut(lead_w.min(end));
                        head.fill(T::zero());
                        let (middle, tail) = rest.split_at_mut(end - head.len());
                        tail.fill(T::zero());
                        for (value, &x) in middle.iter_mut().zip(in_row[a_j.min(g.w)..].iter().step_by(sw)) {
                            *value = x;
                        }
                    }
                }
            }
        }
    });
    TapRuns { images, image_len, offsets, wp, ho: g.ho, wo: g.wo }
}

/// `y = conv(x, weight) + bias` for a strided convolution that `algorithm::polyphase_applies`, on the
/// stride-1 GEMM over its polyphase split.
pub(super) fn strided_conv<T: FloatElem>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &ConvGeometry) -> Vec<T> {
    let nr = VECTORS * T::Vector::LANES;
    gemm_over_taps(&polyphase_tap_runs(x, g, nr), weight, bias, g.n, g.c_out)
}

/// The kernel of [`Conv::backward_input`]: `w'[c, o, ki, kj] = w[o, c, kh−1−ki, kw−1−kj]`.
pub(super) fn flip_and_swap_channels<T: FloatElem>(weight: &[T], g: &ConvGeometry) -> Scratch<T> {
    let taps = g.kh * g.kw;
    let mut flipped = Scratch::<T>::for_overwrite(weight.len());
    flipped.par_chunks_mut(g.c_out * taps).enumerate().for_each(|(c, out)| {
        for (o, dst) in out.chunks_exact_mut(taps).enumerate() {
            let src = &weight[(o * g.c_in + c) * taps..][..taps];
            for (d, &s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = s;
            }
        }
    });
    flipped
}

/// `y = conv(x, weight)` for a stride-1 convolution; `x` `[n, c, h, w]`, `weight`
/// `[o, c, kh, kw]`, both contiguous; `y` `[n, o, ho, wo]`.
///
/// The GEMM writes `Y` on the padded width (rows of `q_len` rounded up to whole tiles, so that
/// every tile is stored with full vectors); a last pass copies the real columns into `y`.
pub(super) fn conv<T: FloatElem>(x: &[T], weight: &[T], bias: Option<&[T]>, conv: &Conv) -> Vec<T> {
    let nr = VECTORS * T::Vector::LANES;
    gemm_over_taps(&conv.tap_runs(x, nr), weight, bias, conv.n, conv.o)
}

/// `Y[n, o, q] = Σ_p W[o, p] · taps(n)[offsets[p] + q] + bias[o]` for the `n` images of `taps`
/// (whose images must hold a tile's overrun, `VECTORS` vectors), `weight` `[o, depth]`, `depth`
/// the number of taps; `y` `[n, o, ho, wo]`.
fn gemm_over_taps<T: FloatElem>(taps: &TapRuns<T>, weight: &[T], bias: Option<&[T]>, n: usize, o: usize) -> Vec<T> {
    let lanes = T::Vector::LANES;
    let nr = VECTORS * lanes;
    let (wp, ho, wo, q_len, depth) = (taps.wp, taps.ho, taps.wo, taps.q_len(), taps.offsets.len());
    let offsets = &taps.offsets;

    // W in panels of ROWS output channels: panel r holds, for each p, W[r·ROWS + i, p]
    let panels = o.div_ceil(ROWS);
    let mut packed = Scratch::<T>::for_overwrite(panels * depth * ROWS);
    packed.par_chunks_mut(depth * ROWS).enumerate().for_each(|(panel, out)| {
        for (i, column) in out.chunks_exact_mut(ROWS).enumerate() {
            for (row, value) in column.iter_mut().enumerate() {
                let channel = panel * ROWS + row;
                *value = if channel < o { weight[channel * depth + i] } else { T::zero() };
            }
        }
    });

    let tiles = q_len.div_ceil(nr);
    let wide_len = tiles * nr; // a row of Y on the padded width
    let mut wide = Scratch::<T>::for_overwrite(n * panels * ROWS * wide_len);
    let wide_ptr = SharedMut(wide.as_mut_ptr());
    let slices = depth.div_ceil(KC);
    let kc = depth.div_ceil(slices);
    // tasks: (image, range of column tiles), at least two per thread
    let chunks = (2 * rayon::current_num_threads()).div_ceil(n).clamp(1, tiles);
    let tiles_per_chunk = tiles.div_ceil(chunks);
    (0..n * chunks).into_par_iter().for_each_init(
        || vec![T::zero(); kc * nr],
        |block, task| {
            let (image, chunk) = (task / chunks, task % chunks);
            let x_image = taps.image(image);
            for tile in chunk * tiles_per_chunk..((chunk + 1) * tiles_per_chunk).min(tiles) {
                let q0 = tile * nr;
                for pc in (0..depth).step_by(kc) {
                    let kc = kc.min(depth - pc);
                    // the tile's B rows: each lies inside the padded image, whose length covers
                    // the last tile's overrun (see [`TapRuns`]); copied together once
                    // for all the panels (aligned, contiguous loads in the inner loop) unless
                    // there are too few panels to repay the copy
                    let copied = panels >= MIN_PANELS_TO_COPY;
                    if copied {
                        for (row, &offset) in block.chunks_exact_mut(nr).zip(&offsets[pc..pc + kc]) {
                            let source = &x_image[offset + q0..offset + q0 + nr];
                            for v in 0..VECTORS {
                                T::Vector::load(&source[v * lanes..]).store(&mut row[v * lanes..]);
                            }
                        }
                    }
                    for panel in 0..panels {
                        let a = &packed[(panel * depth + pc) * ROWS..][..kc * ROWS];
                        // SAFETY: row p of the block is `nr` values at p·nr; row p of the tile
                        // in the image, `nr` values at offsets[pc + p] + q0 (see above)
                        let acc = unsafe {
                            if copied {
                                tile_product::<T, ROWS, VECTORS>(kc, a, |p| block.as_ptr().add(p * nr))
                            } else {
                                tile_product::<T, ROWS, VECTORS>(kc, a, |p| x_image.as_ptr().add(offsets[pc + p] + q0))
                            }
                        };
                        for (i, row_acc) in acc.iter().enumerate() {
                            // SAFETY: columns q0..q0 + nr of this row of Y belong to this task
                            let out = unsafe { std::slice::from_raw_parts_mut(wide_ptr.ptr().add(((image * panels + panel) * ROWS + i) * wide_len + q0), nr) };
                            for (v, vector) in row_acc.iter().enumerate() {
                                let out = &mut out[v * lanes..];
                                let sum = if pc == 0 { *vector } else { *vector + T::Vector::load(out) };
                                sum.store(out);
                            }
                        }
                    }
                }
            }
        },
    );

    // the real columns (ow < wo) of the real rows (channel < o), plus the bias
    let out_len = o * ho * wo;
    let mut y = pool::for_overwrite::<T>(n * out_len);
    y.par_chunks_mut(ho * wo).enumerate().for_each(|(row, y_row)| {
        let (image, channel) = (row / o, row % o);
        let source = &wide[(image * panels * ROWS + channel) * wide_len..][..q_len];
        let b = bias.map_or(T::zero(), |bias| bias[channel]);
        for (out, wide_row) in y_row.chunks_exact_mut(wo).zip(source.chunks_exact(wp)) {
            for (o, &v) in out.iter_mut().zip(&wide_row[..wo]) {
                *o = v + b;
            }
        }
    });
    y
}

/// `dW` for a stride-1 convolution `g` (see the module comment). Threads own disjoint columns
/// of `dW` and each sums over the images in order, so the result does not depend on the
/// number of threads. (Its dot products run over each image's outputs: on a strided
/// convolution's polyphase split, 4×4 to 16×16 outputs, it measured slower than im2col.)
pub(super) fn backward_weight<T: FloatElem>(x: &[T], dy: &[T], g: &ConvGeometry) -> Vec<T> {
    let lanes = T::Vector::LANES;
    let taps = Conv::forward(g).tap_runs(x, lanes);
    let (wp, ho, wo, depth, o, offsets) = (taps.wp, taps.ho, taps.wo, taps.offsets.len(), g.c_out, &taps.offsets);
    // runs of whole vectors: dY's rows are padded to a multiple of the vector width with zeros
    let q_vec = taps.q_len().div_ceil(lanes) * lanes;

    let mut dy_wide = Scratch::<T>::for_overwrite(g.n * o * q_vec);
    dy_wide.par_chunks_mut(q_vec).zip(dy.par_chunks(ho * wo)).for_each(|(wide, rows)| {
        wide.fill(T::zero());
        for (wide_row, row) in wide.chunks_mut(wp).zip(rows.chunks_exact(wo)) {
            wide_row[..wo].copy_from_slice(row);
        }
    });

    let mut dw = pool::zeroed::<T>(o * depth);
    let dw_ptr = SharedMut(dw.as_mut_ptr());
    let column_blocks = depth.div_ceil(DW_COLS);
    let tasks = (4 * rayon::current_num_threads()).min(column_blocks);
    let blocks_per_task = column_blocks.div_ceil(tasks);
    (0..tasks).into_par_iter().for_each(|task| {
        let blocks = task * blocks_per_task..((task + 1) * blocks_per_task).min(column_blocks);
        for image in 0..g.n {
            let x_image = taps.image(image);
            let dy_image = &dy_wide[image * o * q_vec..][..o * q_vec];
            for o0 in (0..o).step_by(DW_ROWS) {
                // a partial block repeats its last row (computed, not stored)
                let a: [&[T]; DW_ROWS] = std::array::from_fn(|i| &dy_image[(o0 + i).min(o - 1) * q_vec..][..q_vec]);
                for block in blocks.clone() {
                    let p0 = block * DW_COLS;
                    let b: [&[T]; DW_COLS] = std::array::from_fn(|j| &x_image[offsets[(p0 + j).min(depth - 1)]..][..q_vec]);
                    let sums = dot_tile::<T, DW_ROWS, DW_COLS>(&a, &b);
                    for (i, row) in sums.iter().enumerate().take(o - o0) {
                        for (j, &sum) in row.iter().enumerate().take(depth - p0) {
                            // SAFETY: column p0 + j of dW belongs to this task alone
                            unsafe { *dw_ptr.ptr().add((o0 + i) * depth + p0 + j) += sum };
                        }
                    }
                }
            }
        }
    });
    dw
}

/// `sums[i][j] = a[i] · b[j]` for equal-length runs (a multiple of the vector width): each
/// step loads one vector of every run and does `R·C` FMAs.
#[inline(always)]
pub(super) fn dot_tile<T: FloatElem, const R: usize, const C: usize>(a: &[&[T]; R], b: &[&[T]; C]) -> [[T; C]; R] {
    let lanes = T::Vector::LANES;
    let mut acc = [[T::Vector::splat(T::zero()); C]; R];
    for s in (0..a[0].len()).step_by(lanes) {
        let bv: [T::Vector; C] = std::array::from_fn(|j| T::Vector::load(&b[j][s..]));
        for i in 0..R {
            let av = T::Vector::load(&a[i][s..]);
            for j in 0..C {
                acc[i][j] = av.mul_add(bv[j], acc[i][j]);
            }
        }
    }
    acc.map(|row| row.map(|v| v.reduce_sum()))
}
