//! Winograd F(4×4, 3×3) for the forward (and input gradient) of the 3×3 stride-1
//! convolutions on larger images (Lavin & Gray, CVPR 2016): 4× fewer multiplications than the
//! direct product, against 2.25× for F(2×2, 3×3) in [`super::winograd`], whose forward driver
//! runs it ([`F4x4`] implements its `WinogradTile`: tiles numbered across images, chunks of
//! whole tile-rows, 36 GEMMs over the channels on the register tile of the GEMM). This file
//! holds only what differs: the 6×6 input and 4×4 output transforms and the kernel transform.
//!
//! A 4×4 block of outputs reads a 6×6 patch `d` of the zero-padded input, and
//! `Y = Aᵀ [ Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B) ] A` with (interpolation points 0, ±1, ±2, ∞)
//!
//! ```text
//!        ⎡4  0 −5  0  1  0⎤        ⎡ 1/4    0     0  ⎤
//!        ⎢0 −4 −4  1  1  0⎥        ⎢−1/6  −1/6  −1/6 ⎥        ⎡1  1  1  1  1  0⎤
//!   Bᵀ = ⎢0  4 −4 −1  1  0⎥    G = ⎢−1/6   1/6  −1/6 ⎥   Aᵀ = ⎢0  1 −1  2 −2  0⎥
//!        ⎢0 −2 −1  2  1  0⎥        ⎢1/24  1/12   1/6 ⎥        ⎢0  1  1  4  4  0⎥
//!        ⎢0  2 −1 −2  1  0⎥        ⎢1/24 −1/12   1/6 ⎥        ⎣0  1 −1  8 −8  1⎦
//!        ⎣0  4  0 −5  0  1⎦        ⎣  0     0     1  ⎦
//! ```
//!
//! The larger transforms cost more per output and round more: entries up to 8 make f32's
//! largest error about 5e-5 of the outputs' RMS on random data with 128 channels, against
//! 2.5e-6 for F(2×2, 3×3) (`cpu::conv` tests; the ddpm-cifar10 UNet's output still matches
//! diffusers' to 1.7e-6). So this road takes only the convolutions where it measured faster,
//! and `EMBER_NO_WINOGRAD4=1` turns it off.

use std::ops::Range;

use rayon::prelude::*;

use super::padded::ROWS;
use super::winograd::{Tiles, TransformScratch, WinogradTile, interleave, u_panel_len_for, u_xi_stride, xi_rows};
use crate::FloatElem;
use crate::cpu::pool::Scratch;
use crate::cpu::simd::{SimdStep, SimdVector, simd_steps};

/// Positions of a transformed 6×6 tile.
const XI: usize = 36;
/// Outputs per side of a tile.
const M: usize = 4;

/// Row `i` of the zero-padded plane of a `h × w` plane padded by `pad`, split by column modulo 4:
/// padded column `4k + φ` at `split[φ·quarter + k]`, so that the transforms of tiles four
/// columns apart read contiguous runs.
fn split_padded_row<T: FloatElem>(plane: &[T], (h, w): (usize, usize), pad: [usize; 2], i: usize, split: &mut [T]) {
    split.fill(T::zero());
    let Some(row) = i.checked_sub(pad[0]).filter(|&r| r < h) else { return };
    let quarter = split.len() / M;
    for (j, &value) in plane[row * w..][..w].iter().enumerate() {
        let column = j + pad[1];
        split[(column % M) * quarter + column / M] = value;
    }
}

/// `Bᵀ d` of a column of six values.
#[inline(always)]
fn b_transpose<T: FloatElem, V: SimdVector<T>>(d: [V; 6]) -> [V; 6] {
    let c = |v: f64| V::splat(T::from_f64(v));
    [
        c(4.0) * d[0] - c(5.0) * d[2] + d[4],
        d[3] + d[4] - c(4.0) * (d[1] + d[2]),
        c(4.0) * (d[1] - d[2]) - d[3] + d[4],
        c(2.0) * (d[3] - d[1]) - d[2] + d[4],
        c(2.0) * (d[1] - d[3]) - d[2] + d[4],
        c(4.0) * d[1] - c(5.0) * d[3] + d[5],
    ]
}

/// `Aᵀ m` of a column of six values.
#[inline(always)]
fn a_transpose<T: FloatElem, V: SimdVector<T>>(m: [V; 6]) -> [V; 4] {
    let c = |v: f64| V::splat(T::from_f64(v));
    let (sum12, diff12, sum34, diff34) = (m[1] + m[2], m[1] - m[2], m[3] + m[4], m[3] - m[4]);
    [m[0] + sum12 + sum34, diff12 + c(2.0) * diff34, sum12 + c(4.0) * sum34, diff12 + c(8.0) * diff34 + m[5]]
}

/// `Bᵀ d` on six split rows.
struct CombineRows<'a, T> {
    d: [&'a [T]; 6],
    t: [&'a mut [T]; 6],
}

impl<T: FloatElem> SimdStep<T> for CombineRows<'_, T> {
    #[inline(always)]
    fn step<V: SimdVector<T>>(&mut self, i: usize) {
        let t = b_transpose::<T, V>(std::array::from_fn(|r| V::load(&self.d[r][i..])));
        for (row, value) in self.t.iter_mut().zip(t) {
            value.store(&mut row[i..]);
        }
    }
}

/// `(Bᵀ d) B` of one row of `Bᵀ d`, split by column modulo 4 (`q[φ]`): tile `i` reads columns
/// `4i .. 4i + 5`, i.e. `q0[i], q1[i], q2[i], q3[i], q0[i + 1], q1[i + 1]`.
struct CombineColumns<'a, T> {
    q: [&'a [T]; M],
    v: [&'a mut [T]; 6],
}

impl<T: FloatElem> SimdStep<T> for CombineColumns<'_, T> {
    #[inline(always)]
    fn step<V: SimdVector<T>>(&mut self, i: usize) {
        let q = &self.q;
        let d = [V::load(&q[0][i..]), V::load(&q[1][i..]), V::load(&q[2][i..]), V::load(&q[3][i..]), V::load(&q[0][i + 1..]), V::load(&q[1][i + 1..])];
        for (row, value) in self.v.iter_mut().zip(b_transpose::<T, V>(d)) {
            value.store(&mut row[i..]);
        }
    }
}

/// `Bᵀ d B` of every 6×6 patch of the tile-rows `rows`, for one channel: into `v[ξ][t]` (`t` the
/// tile's number within the chunk), zero from the chunk's tiles to the rows' end. `plane(image)`
/// is the channel's `h × w` plane in that image; split rows are `4·quarter` long.
#[allow(clippy::too_many_arguments)]
fn transform_input<'a, T: FloatElem>(
    plane: impl Fn(usize) -> &'a [T],
    (h, w): (usize, usize),
    pad: [usize; 2],
    quarter: usize,
    tiles: &Tiles,
    rows: Range<usize>,
    mut v: [&mut [T]; XI],
    s: &mut TransformScratch<T>,
) {
    let (n, width) = (tiles.tiles_w, M * quarter);
    let used = rows.len() * n;
    for (k, r) in rows.enumerate() {
        let (image, th) = tiles.locate(r);
        for (i, split) in s.input.chunks_exact_mut(width).enumerate() {
            split_padded_row(plane(image), (h, w), pad, M * th + i, split);
        }
        {
            let d: [&[T]; 6] = std::array::from_fn(|i| &s.input[i * width..][..width]);
            let mut parts = s.rows.chunks_exact_mut(width);
            let t: [&mut [T]; 6] = std::array::from_fn(|_| parts.next().expect("six rows"));
            simd_steps(width, &mut CombineRows { d, t });
        }
        for a in 0..6 {
            let ta = &s.rows[a * width..][..width];
            let q: [&[T]; M] = std::array::from_fn(|phase| &ta[phase * quarter..][..quarter]);
            let out: [&mut [T]; 6] = {
                let mut rows = v[6 * a..6 * a + 6].iter_mut();
                std::array::from_fn(|_| &mut rows.next().expect("six rows")[k * n..][..n])
            };
            simd_steps(n, &mut CombineColumns { q, v: out });
        }
    }
    for row in v {
        row[used..].fill(T::zero());
    }
}

/// `Y = Aᵀ M A` for the tiles of one output channel, into the four output rows of each block,
/// each split by column modulo 4: `y[4a + φ][t]` is row `a`, column `φ` of tile `t`'s block.
struct OutputTiles<'a, T> {
    m: [&'a [T]; XI],
    bias: T,
    y: [&'a mut [T]; M * M],
}

impl<T: FloatElem> SimdStep<T> for OutputTiles<'_, T> {
    #[inline(always)]
    fn step<V: SimdVector<T>>(&mut self, i: usize) {
        // Aᵀ on each column of M, then on each row of the result
        let columns: [[V; M]; 6] = std::array::from_fn(|b| a_transpose::<T, V>(std::array::from_fn(|a| V::load(&self.m[6 * a + b][i..]))));
        let bias = V::splat(self.bias);
        #[allow(clippy::needless_range_loop)] // `a` indexes the transform rows of `columns` and `self.m`
        for a in 0..M {
            let row = a_transpose::<T, V>(std::array::from_fn(|b| columns[b][a]));
            for (phase, value) in row.into_iter().enumerate() {
                (value + bias).store(&mut self.y[M * a + phase][i..]);
            }
        }
    }
}

/// `G g Gᵀ` of each 3×3 kernel, packed for the register tile like
/// `winograd::transform_weights` (panels of `ROWS` output channels, `[ξ][c][ROWS]` within).
fn transform_weights<T: FloatElem>(weight: &[T], o: usize, c: usize) -> Scratch<T> {
    let panels = o.div_ceil(ROWS);
    let (panel_len, xi_stride) = (u_panel_len_for(XI, c), u_xi_stride(c));
    let mut packed = Scratch::<T>::for_overwrite(panels * panel_len);
    let k = |v: f64| T::from_f64(v);
    // G applied to a column of three values
    let g_times = |g: [T; 3]| -> [T; 6] {
        [
            g[0] * k(0.25),
            (g[0] + g[1] + g[2]) * k(-1.0 / 6.0),
            (g[0] - g[1] + g[2]) * k(-1.0 / 6.0),
            g[0] * k(1.0 / 24.0) + g[1] * k(1.0 / 12.0) + g[2] * k(1.0 / 6.0),
            g[0] * k(1.0 / 24.0) - g[1] * k(1.0 / 12.0) + g[2] * k(1.0 / 6.0),
            g[2],
        ]
    };
    packed.par_chunks_mut(panel_len).enumerate().for_each(|(panel, out)| {
        for ch in 0..c {
            for row in 0..ROWS {
                let channel = panel * ROWS + row;
                let mut u = [[T::zero(); 6]; 6];
                if channel < o {
                    let g = &weight[(channel * c + ch) * 9..][..9];
                    // G g: G applied to each column of g; then (G g) Gᵀ: G applied to each row
                    let columns: [[T; 6]; 3] = std::array::from_fn(|j| g_times([g[j], g[3 + j], g[6 + j]]));
                    u = std::array::from_fn(|a| g_times([columns[0][a], columns[1][a], columns[2][a]]));
                }
                for (xi, &value) in u.as_flattened().iter().enumerate() {
                    out[xi * xi_stride + ch * ROWS + row] = value;
                }
            }
        }
    });
    packed
}

/// F(4×4, 3×3), for the shared driver `winograd::conv`.
pub(super) struct F4x4;

impl WinogradTile for F4x4 {
    const M: usize = M;
    const XI: usize = XI;
    /// Split rows: a tile's reads run one past the last tile (plus a vector's overrun).
    fn split_width(wp: usize) -> usize {
        M * (wp.div_ceil(M) + 1)
    }
    fn transform_weights<T: FloatElem>(weight: &[T], o: usize, c: usize) -> Scratch<T> {
        transform_weights(weight, o, c)
    }
    fn transform_input<'a, T: FloatElem>(
        plane: impl Fn(usize) -> &'a [T],
        size: (usize, usize),
        pad: [usize; 2],
        width: usize,
        tiles: &Tiles,
        rows: Range<usize>,
        (v, v_stride, nt): (&mut [T], usize, usize),
        scratch: &mut TransformScratch<T>,
    ) {
        transform_input(plane, size, pad, width / M, tiles, rows, xi_rows(v, v_stride, nt), scratch);
    }
    fn transform_output<T: FloatElem>(m: &[T], m_stride: usize, nt: usize, bias: T, y: &mut [T]) {
        let split: [&mut [T]; M * M] = {
            let mut parts = y.chunks_exact_mut(nt);
            std::array::from_fn(|_| parts.next().expect("16 rows"))
        };
        let m: [&[T]; XI] = std::array::from_fn(|xi| &m[xi * m_stride..][..nt]);
        simd_steps(nt, &mut OutputTiles { m, bias, y: split });
    }
    fn scatter_row<T: FloatElem>(ys: &[T], nt: usize, a: usize, first: usize, y_row: &mut [T]) {
        interleave::<T, M>(y_row, std::array::from_fn(|phase| &ys[(M * a + phase) * nt + first..]));
    }
}
