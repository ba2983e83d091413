//! Winograd F(2×2, 3×3) for the 3×3 stride-1 convolutions (Lavin & Gray, "Fast Algorithms
//! for Convolutional Neural Networks", CVPR 2016): 2.25× fewer multiplications than the
//! direct product.
//!
//! A 2×2 block of outputs reads a 4×4 patch `d` of the zero-padded input. With
//!
//! ```text
//!        ⎡1  0 −1  0⎤        ⎡1    0   0 ⎤
//!   Bᵀ = ⎢0  1  1  0⎥    G = ⎢½    ½   ½ ⎥    Aᵀ = ⎡1  1  1  0⎤
//!        ⎢0 −1  1  0⎥        ⎢½   −½   ½ ⎥         ⎣0  1 −1 −1⎦
//!        ⎣0  1  0 −1⎦        ⎣0    0   1 ⎦
//! ```
//!
//! each output block is `Y = Aᵀ [ Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B) ] A`. Numbering the 16 positions
//! of a transformed 4×4 tile `ξ`, that is 16 independent GEMMs over the channels,
//! `M_ξ[o, t] = Σ_c U_ξ[o, c] · V_ξ[c, t]` (t: the tiles), between a transform of the kernel
//! (`U`), one of the input tiles (`V`) and one of the results back to outputs (`M → Y`).
//! - forward: as above, the GEMMs on the register tile of the GEMM (`gemm::tile_product`);
//! - backward-input: the forward with the kernel flipped and its channel axes swapped, padded by
//!   `2 − p` (as in [`super::padded`]);
//! - backward-weight: the adjoint of the tile map in `g`,
//!   `dW_oc = Gᵀ [ Σ_tiles (A dY_o Aᵀ) ⊙ (Bᵀ d_c B) ] G`: 16 products of rows over the tiles,
//!   `Ŵ_ξ[o, c] = Σ_t P_ξ[o, t] · V_ξ[c, t]`, on the dot-product tile of `padded`.
//!
//! Tiles are numbered across images, a tile-row (`wo/2` tiles of one image) after another; work
//! goes in chunks of whole tile-rows. Only even output sizes are taken (every UNet level).

use std::ops::Range;

use rayon::prelude::*;

use super::ConvGeometry;
use super::padded::{Conv, ROWS, VECTORS, dot_tile};
use crate::FloatElem;
use crate::cpu::gemm::{SharedMut, tile_product};
use crate::cpu::pool::{self, Scratch};
use crate::cpu::simd::{SimdStep, SimdVector, simd_steps};

/// Positions of a transformed 4×4 tile.
const XI: usize = 16;
/// Values of `V_ξ` (channels × tiles) a forward chunk keeps, so that one `ξ` sits in L1 while
/// every panel of `U_ξ` passes over it.
const FORWARD_BLOCK: usize = 3072;
/// Extra elements between the blocks of consecutive `ξ`: blocks a multiple of 4 KiB apart would
/// put the 16 rows a transform writes (or reads) at once in the same L1 set.
pub(super) const SKEW: usize = 16;
/// Tiles per chunk of the weight gradient (its V and P then fit in L2/L3).
const WEIGHT_TILES: usize = 512;
/// Groups of chunks of the weight gradient run side by side when there are at least twice
/// as many chunks (a fixed number, so that the sums do not depend on the thread count).
const WEIGHT_GROUPS: usize = 4;
/// Output channels × input channels per weight-gradient dot tile.
const DW_ROWS: usize = 4;
const DW_COLS: usize = 3;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Where the tiles of a convolution lie: `rows` tile-rows of `tiles_w` tiles, `tiles_h` rows per
/// image.
pub(super) struct Tiles {
    pub(super) rows: usize,
    tiles_h: usize,
    pub(super) tiles_w: usize,
}

impl Tiles {
    /// The 2×2 output blocks of F(2×2, 3×3).
    fn of(conv: &Conv) -> Tiles {
        Tiles::sized(conv, 2)
    }
    /// The `size`×`size` output blocks of `conv` (whose output sizes `size` divides).
    pub(super) fn sized(conv: &Conv, size: usize) -> Tiles {
        Tiles { rows: conv.n * conv.ho() / size, tiles_h: conv.ho() / size, tiles_w: conv.wo() / size }
    }
    /// `(image, tile row within it)` of tile-row `r`.
    pub(super) fn locate(&self, r: usize) -> (usize, usize) {
        (r / self.tiles_h, r % self.tiles_h)
    }
    /// Tile-rows per forward chunk for `c` input channels: whole register tiles (`unit`
    /// tile-rows make a multiple of `nr` tiles: a chunk of fewer tiles would pad its GEMM
    /// columns up to `nr` with wasted work), about `FORWARD_BLOCK` values of `V_ξ`, and
    /// enough chunks for every thread.
    pub(super) fn forward_rows_per_chunk(&self, c: usize, nr: usize) -> usize {
        let unit = nr / gcd(nr, self.tiles_w);
        let wanted = (FORWARD_BLOCK / c / self.tiles_w).min(self.rows.div_ceil(4 * rayon::current_num_threads()));
        (wanted / unit).max(1) * unit
    }
    /// The chunks of at most `rows_per_chunk` tile-rows.
    pub(super) fn chunks(&self, rows_per_chunk: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.rows).step_by(rows_per_chunk).map(move |start| start..(start + rows_per_chunk).min(self.rows))
    }
}

/// The `N` rows `ξ·stride .. ξ·stride + nt` of `v`, one per position of the transformed tile.
pub(super) fn xi_rows<T, const N: usize>(v: &mut [T], stride: usize, nt: usize) -> [&mut [T]; N] {
    let mut rows = v.chunks_mut(stride);
    std::array::from_fn(|_| &mut rows.next().expect("a row per position")[..nt])
}

/// Row `i` of the zero-padded plane (`wp` wide) of a `h × w` plane padded by `pad`, stored
/// split: its even columns, then its odd ones (`wp/2` each), so that the transforms of tiles two
/// columns apart read contiguous runs.
fn split_padded_row<T: FloatElem>(plane: &[T], (h, w): (usize, usize), pad: [usize; 2], i: usize, split: &mut [T]) {
    split.fill(T::zero());
    let Some(row) = i.checked_sub(pad[0]).filter(|&r| r < h) else { return };
    let (even, odd) = split.split_at_mut(split.len() / 2);
    // x[2k], x[2k + 1] land on padded columns 2k + p and 2k + 1 + p (w is even)
    let pairs = plane[row * w..][..w].chunks_exact(2);
    let first = pad[1] / 2;
    if pad[1].is_multiple_of(2) {
        for ((pair, e), o) in pairs.zip(&mut even[first..]).zip(&mut odd[first..]) {
            (*e, *o) = (pair[0], pair[1]);
        }
    } else {
        for ((pair, o), e) in pairs.zip(&mut odd[first..]).zip(&mut even[first + 1..]) {
            (*o, *e) = (pair[0], pair[1]);
        }
    }
}

/// `Bᵀ d` on four split rows: `t0 = d0 − d2, t1 = d1 + d2, t2 = d2 − d1, t3 = d1 − d3`.
struct CombineRows<'a, T> {
    d: [&'a [T]; 4],
    t: [&'a mut [T]; 4],
}

impl<T: FloatElem> SimdStep<T> for CombineRows<'_, T> {
    #[inline(always)]
    fn step<V: SimdVector<T>>(&mut self, i: usize) {
        let (d0, d1, d2, d3) = (V::load(&self.d[0][i..]), V::load(&self.d[1][i..]), V::load(&self.d[2][i..]), V::load(&self.d[3][i..]));
        (d0 - d2).store(&mut self.t[0][i..]);
        (d1 + d2).store(&mut self.t[1][i..]);
        (d2 - d1).store(&mut self.t[2][i..]);
        (d1 - d3).store(&mut self.t[3][i..]);
    }
}

/// `(Bᵀ d) B` of one row of `Bᵀ d`, split into even (`te`) and odd (`to`) columns: tile `i`
/// reads columns `2i .. 2i + 3`, i.e. `te[i], to[i], te[i + 1], to[i + 1]`.
struct CombineColumns<'a, T> {
    te: &'a [T],
    to: &'a [T],
    v: [&'a mut [T]; 4],
}

impl<T: FloatElem> SimdStep<T> for CombineColumns<'_, T> {
    #[inline(always)]
    fn step<V: SimdVector<T>>(&mut self, i: usize) {
        let (e0, e1, o0, o1) = (V::load(&self.te[i..]), V::load(&self.te[i + 1..]), V::load(&self.to[i..]), V::load(&self.to[i + 1..]));
        (e0 - e1).store(&mut self.v[0][i..]);
        (o0 + e1).store(&mut self.v[1][i..]);
        (e1 - o0).store(&mut self.v[2][i..]);
        (o0 - o1).store(&mut self.v[3][i..]);
    }
}

/// Scratch rows of a transform: the input rows a tile-row reads (split), and as many
/// combined rows.
pub(super) struct TransformScratch<T> {
    pub(super) input: Vec<T>,
    pub(super) rows: Vec<T>,
}

impl<T: FloatElem> TransformScratch<T> {
    /// `count` rows of `width` values each way.
    pub(super) fn new(count: usize, width: usize) -> Self {
        TransformScratch { input: vec![T::zero(); count * width], rows: vec![T::zero(); count * width] }
    }
}

/// `Bᵀ d B` of every 4×4 patch of the tile-rows `rows`, for one channel: into `v[ξ][t]` (`t` the
/// tile's number within the chunk), zero from the chunk's tiles to the rows' end. `plane(image)`
/// is the channel's `h × w` plane in that image, zero-padded by `pad` to `wp` columns here.
#[allow(clippy::too_many_arguments)]
fn transform_input<'a, T: FloatElem>(
    plane: impl Fn(usize) -> &'a [T],
    (h, w): (usize, usize),
    pad: [usize; 2],
    wp: usize,
    tiles: &Tiles,
    rows: Range<usize>,
    mut v: [&mut [T]; XI],
    s: &mut TransformScratch<T>,
) {
    let (n, half) = (tiles.tiles_w, wp / 2);
    let used = rows.len() * n;
    for (k, r) in rows.enumerate() {
        let (image, th) = tiles.locate(r);
        for (i, split) in s.input.chunks_exact_mut(wp).enumerate() {
            split_padded_row(plane(image), (h, w), pad, 2 * th + i, split);
        }
        let d = &s.input;
        let (t0, rest) = s.rows.split_at_mut(wp);
        let (t1, rest) = rest.split_at_mut(wp);
        let (t2, t3) = rest.split_at_mut(wp);
        // Bᵀ d: the rows combined (split rows stay split)
        simd_steps(wp, &mut CombineRows { d: [&d[..wp], &d[wp..2 * wp], &d[2 * wp..3 * wp], &d[3 * wp..]], t: [t0, t1, t2, t3] });
        // (Bᵀ d) B: the columns of each tile combined
        for a in 0..4 {
            let ta = &s.rows[a * wp..][..wp];
            let [v0, v1, v2, v3] = &mut v[4 * a..4 * a + 4] else { unreachable!() };
            let out = [&mut v0[k * n..][..n], &mut v1[k * n..][..n], &mut v2[k * n..][..n], &mut v3[k * n..][..n]];
            simd_steps(n, &mut CombineColumns { te: &ta[..half], to: &ta[half..], v: out });
        }
    }
    for row in v {
        row[used..].fill(T::zero());
    }
}

/// `A dY Aᵀ` of 2×2 blocks, from the even and odd columns of the block's two rows
/// (`A = [1 0; 1 1; 1 −1; 0 −1]`): rows `q = (d0, d0 + d1, d0 − d1, −d1)`, each then
/// `(qe, qe + qo, qe − qo, −qo)`.
struct GradTiles<'a, T> {
    /// even and odd columns of the block's first and second row
    d: [&'a [T]; 4],
    p: [&'a mut [T]; XI],
}

impl<T: FloatElem> SimdStep<T> for GradTiles<'_, T> {
    #[inline(always)]
    fn step<V: SimdVector<T>>(&mut self, i: usize) {
        let (e0, o0, e1, o1) = (V::load(&self.d[0][i..]), V::load(&self.d[1][i..]), V::load(&self.d[2][i..]), V::load(&self.d[3][i..]));
        let zero = V::splat(T::zero());
        let q = [(e0, o0), (e0 + e1, o0 + o1), (e0 - e1, o0 - o1), (zero - e1, zero - o1)];
        for (a, (qe, qo)) in q.into_iter().enumerate() {
            qe.store(&mut self.p[4 * a][i..]);
            (qe + qo).store(&mut self.p[4 * a + 1][i..]);
            (qe - qo).store(&mut self.p[4 * a + 2][i..]);
            (zero - qo).store(&mut self.p[4 * a + 3][i..]);
        }
    }
}

/// `A dY Aᵀ` of every 2×2 block of the tile-rows `rows` of one output channel (`plane(image)`
/// is its `ho × wo` plane): into `p[ξ][t]`, zero from the chunk's tiles to the rows' end.
fn transform_output_grad<'a, T: FloatElem>(
    plane: impl Fn(usize) -> &'a [T],
    wo: usize,
    tiles: &Tiles,
    rows: Range<usize>,
    mut p: [&mut [T]; XI],
    s: &mut TransformScratch<T>,
) {
    let n = tiles.tiles_w;
    let used = rows.len() * n;
    for (k, r) in rows.enumerate() {
        let (image, th) = tiles.locate(r);
        let d = &plane(image)[2 * th * wo..][..2 * wo];
        // even and odd columns of the two rows
        let (e0, rest) = s.rows.split_at_mut(n);
        let (o0, rest) = rest.split_at_mut(n);
        let (e1, rest) = rest.split_at_mut(n);
        let o1 = &mut rest[..n];
        for (j, (pair0, pair1)) in d[..wo].chunks_exact(2).zip(d[wo..].chunks_exact(2)).enumerate() {
            (e0[j], o0[j], e1[j], o1[j]) = (pair0[0], pair0[1], pair1[0], pair1[1]);
        }
        let out: [&mut [T]; XI] = {
            let mut rows = p.iter_mut();
            std::array::from_fn(|_| &mut rows.next().expect("16 rows")[k * n..][..n])
        };
        simd_steps(n, &mut GradTiles { d: [&*e0, &*o0, &*e1, &*o1], p: out });
    }
    for row in p {
        row[used..].fill(T::zero());
    }
}

/// `Y = Aᵀ M A` for the tiles of one output channel, into the even and odd columns of the
/// block's two output rows: `s0 = m0 + m1 + m2`, `s1 = m1 − m2 − m3` on the rows of `M`, then the
/// same on the columns.
struct OutputTiles<'a, T> {
    m: [&'a [T]; XI],
    /// the output channel's bias
    bias: T,
    /// even and odd columns of the first output row, then of the second
    y: [&'a mut [T]; 4],
}

impl<T: FloatElem> SimdStep<T> for OutputTiles<'_, T> {
    #[inline(always)]
    fn step<V: SimdVector<T>>(&mut self, i: usize) {
        let m = |xi: usize| V::load(&self.m[xi][i..]);
        // rows 1 and 2 of M serve both rows of Aᵀ M
        let (r1, r2) = ([m(4), m(5), m(6), m(7)], [m(8), m(9), m(10), m(11)]);
        let s0 = [m(0) + r1[0] + r2[0], m(1) + r1[1] + r2[1], m(2) + r1[2] + r2[2], m(3) + r1[3] + r2[3]];
        let s1 = [r1[0] - r2[0] - m(12), r1[1] - r2[1] - m(13), r1[2] - r2[2] - m(14), r1[3] - r2[3] - m(15)];
        let b = V::splat(self.bias);
        (s0[0] + s0[1] + s0[2] + b).store(&mut self.y[0][i..]);
        (s0[1] - s0[2] - s0[3] + b).store(&mut self.y[1][i..]);
        (s1[0] + s1[1] + s1[2] + b).store(&mut self.y[2][i..]);
        (s1[1] - s1[2] - s1[3] + b).store(&mut self.y[3][i..]);
    }
}

/// `G g Gᵀ` of each 3×3 kernel, packed for the register tile: panels of `ROWS` output channels,
/// [`u_panel_len`] apart, within a panel `ξ` after `ξ` ([`u_xi_stride`] apart), and for each `ξ`
/// `[c][ROWS]` (zeros past the last output channel). Panels are transformed in parallel.
fn transform_weights<T: FloatElem>(weight: &[T], o: usize, c: usize) -> Scratch<T> {
    let panels = o.div_ceil(ROWS);
    let xi_stride = u_xi_stride(c);
    let mut packed = Scratch::<T>::for_overwrite(panels * u_panel_len(c));
    let half = T::from_f64(0.5);
    packed.par_chunks_mut(u_panel_len(c)).enumerate().for_each(|(panel, out)| {
        for ch in 0..c {
            for row in 0..ROWS {
                let channel = panel * ROWS + row;
                let mut u = [[T::zero(); 4]; 4];
                if channel < o {
                    let g = &weight[(channel * c + ch) * 9..][..9];
                    // G g: rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2
                    let row_of = |i: usize| [g[3 * i], g[3 * i + 1], g[3 * i + 2]];
                    let (g0, g1, g2) = (row_of(0), row_of(1), row_of(2));
                    let gg: [[T; 3]; 4] =
                        [g0, std::array::from_fn(|j| (g0[j] + g1[j] + g2[j]) * half), std::array::from_fn(|j| (g0[j] - g1[j] + g2[j]) * half), g2];
                    // (G g) Gᵀ
                    u = gg.map(|r| [r[0], (r[0] + r[1] + r[2]) * half, (r[0] - r[1] + r[2]) * half, r[2]]);
                }
                for (xi, &value) in u.as_flattened().iter().enumerate() {
                    out[xi * xi_stride + ch * ROWS + row] = value;
                }
            }
        }
    });
    packed
}

/// Values between consecutive `ξ` within a panel of transformed weights: the lines a
/// panel's transform writes at once then fall in different L1 sets.
pub(super) fn u_xi_stride(c: usize) -> usize {
    c * ROWS + SKEW
}

/// Values per panel of transformed weights.
fn u_panel_len(c: usize) -> usize {
    u_panel_len_for(XI, c)
}

/// Values per panel of transformed weights with `xi_count` positions per tile.
pub(super) fn u_panel_len_for(xi_count: usize, c: usize) -> usize {
    xi_count * u_xi_stride(c)
}

/// One Winograd tile, F(m×m, 3×3): what differs between F(2×2, 3×3) ([`F2x2`], here) and
/// F(4×4, 3×3) (`winograd4::F4x4`): the tile's sizes and its three transforms. [`conv`] is the
/// forward driver they share (chunks of tile-rows, the input transform, the `XI` GEMMs, the
/// output transform and the scatter into `y`).
pub(super) trait WinogradTile {
    /// Outputs per side of a tile (m).
    const M: usize;
    /// Positions of a transformed tile, `(m + 2)²`.
    const XI: usize;
    /// The length of a split input row of the transform for padded rows `wp` wide.
    fn split_width(wp: usize) -> usize;
    /// `G g Gᵀ` of each 3×3 kernel of `weight` `[o, c, 3, 3]`, packed for the register tile:
    /// panels of `ROWS` output channels, [`u_panel_len_for`]`(XI, c)` apart, within a panel `ξ`
    /// after `ξ` ([`u_xi_stride`] apart), and for each `ξ` `[c][ROWS]` (zeros past the last
    /// output channel).
    fn transform_weights<T: FloatElem>(weight: &[T], o: usize, c: usize) -> Scratch<T>;
    /// `Bᵀ d B` of every patch of the tile-rows `rows` for one channel (`plane(image)` its
    /// `h × w` plane, zero-padded by `pad`): into the `XI` rows of `v` (`v_stride` apart, `nt`
    /// used, zero from the chunk's tiles on), split rows `width` long.
    #[allow(clippy::too_many_arguments)]
    fn transform_input<'a, T: FloatElem>(
        plane: impl Fn(usize) -> &'a [T],
        size: (usize, usize),
        pad: [usize; 2],
        width: usize,
        tiles: &Tiles,
        rows: Range<usize>,
        v: (&mut [T], usize, usize),
        scratch: &mut TransformScratch<T>,
    );
    /// `Y = Aᵀ M A + bias` for the `nt` tiles of one output channel (`m`: its `XI` rows,
    /// `m_stride` apart), into `y`: `M·M` rows of `nt`, row `M·a + φ` holding row `a`,
    /// column `φ` of each tile's block.
    fn transform_output<T: FloatElem>(m: &[T], m_stride: usize, nt: usize, bias: T, y: &mut [T]);
    /// Output row `a` of the blocks of a tile-row, from the rows [`WinogradTile::transform_output`]
    /// wrote (`nt` apart, the tile-row's tiles from `first` on) into `y_row`.
    fn scatter_row<T: FloatElem>(ys: &[T], nt: usize, a: usize, first: usize, y_row: &mut [T]);
}

/// `y_row[M·t + φ] = phases[φ][t]`: the `M` column phases of an output row interleaved.
#[inline(always)]
pub(super) fn interleave<T: Copy, const M: usize>(y_row: &mut [T], phases: [&[T]; M]) {
    let n = y_row.len() / M;
    let phases = phases.map(|phase| &phase[..n]);
    for (t, block) in y_row.chunks_exact_mut(M).enumerate() {
        for (value, phase) in block.iter_mut().zip(&phases) {
            *value = phase[t];
        }
    }
}

/// F(2×2, 3×3).
pub(super) struct F2x2;

impl WinogradTile for F2x2 {
    const M: usize = 2;
    const XI: usize = XI;
    fn split_width(wp: usize) -> usize {
        wp
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
        transform_input(plane, size, pad, width, tiles, rows, xi_rows(v, v_stride, nt), scratch);
    }
    fn transform_output<T: FloatElem>(m: &[T], m_stride: usize, nt: usize, bias: T, y: &mut [T]) {
        let halves: [&mut [T]; 4] = {
            let mut parts = y.chunks_exact_mut(nt);
            std::array::from_fn(|_| parts.next().expect("4 rows"))
        };
        let m: [&[T]; XI] = std::array::from_fn(|xi| &m[xi * m_stride..][..nt]);
        simd_steps(nt, &mut OutputTiles { m, bias, y: halves });
    }
    fn scatter_row<T: FloatElem>(ys: &[T], nt: usize, a: usize, first: usize, y_row: &mut [T]) {
        interleave::<T, 2>(y_row, std::array::from_fn(|phase| &ys[(2 * a + phase) * nt + first..]));
    }
}

/// `y = conv(x, weight) + bias` by the Winograd tile `W` for a 3×3 stride-1 convolution `conv`
/// that `algorithm::winograd_applies` (and, for F(4×4, 3×3), `algorithm::winograd4_pays`): its
/// input `x` `[n, c, h, w]`, kernel `[o, c, 3, 3]`, both contiguous; `y` `[n, o, ho, wo]`.
pub(super) fn conv<W: WinogradTile, T: FloatElem>(x: &[T], weight: &[T], bias: Option<&[T]>, conv: &Conv) -> Vec<T> {
    let (c, o, ho, wo) = (conv.c, conv.o, conv.ho(), conv.wo());
    let (m_side, xi_count) = (W::M, W::XI);
    let nr = VECTORS * T::Vector::LANES;
    let panels = o.div_ceil(ROWS);
    let plane_len = conv.h * conv.w;
    let width = W::split_width(conv.wp());
    let u = W::transform_weights(weight, o, c);
    let tiles = Tiles::sized(conv, m_side);
    let rows_per_chunk = tiles.forward_rows_per_chunk(c, nr);
    let nt_max = (rows_per_chunk * tiles.tiles_w).div_ceil(nr) * nr;

    let mut y = pool::for_overwrite::<T>(conv.n * o * ho * wo);
    let y_ptr = SharedMut(y.as_mut_ptr());
    let chunks: Vec<Range<usize>> = tiles.chunks(rows_per_chunk).collect();
    chunks.into_par_iter().for_each_init(
        || {
            let v = Scratch::<T>::for_overwrite(xi_count * (c * nt_max + SKEW));
            let m = Scratch::<T>::for_overwrite(xi_count * (panels * ROWS * nt_max + SKEW));
            let ys = Scratch::<T>::for_overwrite(m_side * m_side * nt_max);
            (v, m, ys, TransformScratch::new(m_side + 2, width))
        },
        |(v, m, ys, scratch), rows| {
            let nt = (rows.len() * tiles.tiles_w).div_ceil(nr) * nr;
            let (v_stride, m_stride) = (c * nt + SKEW, panels * ROWS * nt + SKEW);
            // V: [ξ][c][nt]
            for ch in 0..c {
                let plane = |image: usize| &x[(image * c + ch) * plane_len..][..plane_len];
                W::transform_input(plane, (conv.h, conv.w), conv.pad, width, &tiles, rows.clone(), (&mut v[ch * nt..], v_stride, nt), scratch);
            }
            // M_ξ = U_ξ V_ξ: [ξ][panels·ROWS][nt]
            multiply_transformed(xi_count, &u, v, m, c, panels, nt);
            // Y = Aᵀ M A for each output channel: the blocks' rows split by column modulo m for
            // all the chunk's tiles, then interleaved into y
            let n = tiles.tiles_w;
            for ch in 0..o {
                W::transform_output(&m[ch * nt..], m_stride, nt, bias.map_or(T::zero(), |b| b[ch]), ys);
                for (k, r) in rows.clone().enumerate() {
                    let (image, th) = tiles.locate(r);
                    // SAFETY: output rows m·th .. m·th + m of (image, ch) belong to this chunk alone
                    let out = unsafe { std::slice::from_raw_parts_mut(y_ptr.ptr().add(((image * o + ch) * ho + m_side * th) * wo), m_side * wo) };
                    for (a, y_row) in out.chunks_exact_mut(wo).enumerate() {
                        W::scatter_row(ys, nt, a, k * n, y_row);
                    }
                }
            }
        },
    );
    y
}

/// `M_ξ = U_ξ V_ξ` for each of the `xi_count` positions of a transformed tile: `u` the
/// transformed kernels (panels of `ROWS` output channels, [`u_panel_len`] apart, `ξ` blocks
/// [`u_xi_stride`] apart within, each `[c][ROWS]`), `v` `[ξ][c][nt]` and `m`
/// `[ξ][panels·ROWS][nt]`, their `ξ` blocks `SKEW` values apart beyond their length.
pub(super) fn multiply_transformed<T: FloatElem>(xi_count: usize, u: &[T], v: &[T], m: &mut [T], c: usize, panels: usize, nt: usize) {
    let nr = VECTORS * T::Vector::LANES;
    let (v_stride, m_stride) = (c * nt + SKEW, panels * ROWS * nt + SKEW);
    let (panel_len, xi_stride) = (u_panel_len_for(xi_count, c), u_xi_stride(c));
    for xi in 0..xi_count {
        for col in (0..nt).step_by(nr) {
            for panel in 0..panels {
                let a = &u[panel * panel_len + xi * xi_stride..][..c * ROWS];
                let b = &v[xi * v_stride..][..c * nt];
                // SAFETY: row p of V_ξ has nt ≥ col + nr values at p·nt
                let acc = unsafe { tile_product::<T, ROWS, VECTORS>(c, a, |p| b.as_ptr().add(p * nt + col)) };
                for (i, row) in acc.iter().enumerate() {
                    let out = &mut m[xi * m_stride + (panel * ROWS + i) * nt + col..][..nr];
                    for (k, vector) in row.iter().enumerate() {
                        vector.store(&mut out[k * T::Vector::LANES..]);
                    }
                }
            }
        }
    }
}

/// `dW` for a convolution `g` that `algorithm::winograd_applies`, `x` its input and `dy` its output's gradient.
/// Chunks of tiles go in order (in each of a fixed number of groups, summed in order); within
/// one, threads own disjoint `(ξ, output channels)` rows of `Ŵ`, so the result does not depend
/// on the number of threads.
pub(super) fn backward_weight<T: FloatElem>(x: &[T], dy: &[T], g: &ConvGeometry) -> Vec<T> {
    let conv = Conv::forward(g);
    let (c, o, wp, ho, wo) = (conv.c, conv.o, conv.wp(), conv.ho(), conv.wo());
    let lanes = T::Vector::LANES;
    let plane_len = conv.h * conv.w;
    let tiles = Tiles::of(&conv);
    let rows_per_chunk = (WEIGHT_TILES / tiles.tiles_w).max(1);
    let nt_max = (rows_per_chunk * tiles.tiles_w).div_ceil(lanes) * lanes;
    let (o_blocks, c_blocks) = (o.div_ceil(DW_ROWS), c.div_ceil(DW_COLS));

    // Ŵ += the products of the tile-rows `rows`, with `v` and `p` for work space
    let accumulate = |rows: Range<usize>, v: &mut [T], p: &mut [T], w_hat: &mut [T]| {
        let nt = (rows.len() * tiles.tiles_w).div_ceil(lanes) * lanes;
        // V: [c][ξ][nt], P: [o][ξ][nt]
        let stride = nt + SKEW; // between the rows of consecutive ξ
        v[..c * XI * stride].par_chunks_mut(XI * stride).enumerate().for_each_init(
            || TransformScratch::new(4, wp),
            |scratch, (ch, v_ch)| {
                let plane = |image: usize| &x[(image * c + ch) * plane_len..][..plane_len];
                transform_input(plane, (conv.h, conv.w), conv.pad, wp, &tiles, rows.clone(), xi_rows(v_ch, stride, nt), scratch);
            },
        );
        p[..o * XI * stride].par_chunks_mut(XI * stride).enumerate().for_each_init(
            || TransformScratch::new(4, wo),
            |scratch, (ch, p_ch)| {
                let plane = |image: usize| &dy[(image * o + ch) * ho * wo..][..ho * wo];
                transform_output_grad(plane, wo, &tiles, rows.clone(), xi_rows(p_ch, stride, nt), scratch);
            },
        );
        let (v, p) = (&*v, &*p);
        let w_hat_ptr = SharedMut(w_hat.as_mut_ptr());
        (0..XI * o_blocks).into_par_iter().for_each(|task| {
            let (xi, o0) = (task / o_blocks, (task % o_blocks) * DW_ROWS);
            // a partial block repeats its last row or column (computed, not stored)
            let a: [&[T]; DW_ROWS] = std::array::from_fn(|i| &p[((o0 + i).min(o - 1) * XI + xi) * stride..][..nt]);
            for c0 in (0..c_blocks).map(|b| b * DW_COLS) {
                let b: [&[T]; DW_COLS] = std::array::from_fn(|j| &v[((c0 + j).min(c - 1) * XI + xi) * stride..][..nt]);
                let sums = dot_tile::<T, DW_ROWS, DW_COLS>(&a, &b);
                for (i, row) in sums.iter().enumerate().take(o - o0) {
                    for (j, &sum) in row.iter().enumerate().take(c - c0) {
                        // SAFETY: row (ξ, o0 + i) of Ŵ belongs to this task alone
                        unsafe { *w_hat_ptr.ptr().add((xi * o + o0 + i) * c + c0 + j) += sum };
                    }
                }
            }
        });
    };

    // With many chunks, fixed groups of them run side by side, each into its own Ŵ (the
    // threads then rarely meet inside a chunk); the groups' Ŵ are summed in order. Ŵ: [ξ][o][c]
    let chunks: Vec<Range<usize>> = tiles.chunks(rows_per_chunk).collect();
    let groups = if chunks.len() >= 2 * WEIGHT_GROUPS { WEIGHT_GROUPS } else { 1 };
    let partials: Vec<Scratch<T>> = (0..groups)
        .into_par_iter()
        .map(|group| {
            let mut v = Scratch::<T>::for_overwrite(c * XI * (nt_max + SKEW));
            let mut p = Scratch::<T>::for_overwrite(o * XI * (nt_max + SKEW));
            let mut w_hat = Scratch::<T>::zeroed(XI * o * c);
            for rows in &chunks[group * chunks.len() / groups..(group + 1) * chunks.len() / groups] {
                accumulate(rows.clone(), &mut v, &mut p, &mut w_hat);
            }
            w_hat
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut w_hat = partials.next().expect("one group at least");
    for partial in partials {
        w_hat.par_chunks_mut(o * c).zip(partial.par_chunks(o * c)).for_each(|(sum, part)| sum.iter_mut().zip(part).for_each(|(s, &v)| *s += v));
    }

    // dW = Gᵀ Ŵ G for each (o, c)
    let half = T::from_f64(0.5);
    let mut dw = pool::for_overwrite::<T>(o * c * 9);
    dw.par_chunks_mut(9).enumerate().for_each(|(oc, dw)| {
        let w = |a: usize, b: usize| w_hat[(4 * a + b) * o * c + oc];
        // Gᵀ Ŵ: rows w0 + (w1 + w2)/2, (w1 − w2)/2, (w1 + w2)/2 + w3
        let n: [[T; 4]; 3] = [
            std::array::from_fn(|b| w(0, b) + (w(1, b) + w(2, b)) * half),
            std::array::from_fn(|b| (w(1, b) - w(2, b)) * half),
            std::array::from_fn(|b| (w(1, b) + w(2, b)) * half + w(3, b)),
        ];
        for (i, r) in n.iter().enumerate() {
            dw[3 * i] = r[0] + (r[1] + r[2]) * half;
            dw[3 * i + 1] = (r[1] - r[2]) * half;
            dw[3 * i + 2] = (r[1] + r[2]) * half + r[3];
        }
    });
    dw
}
