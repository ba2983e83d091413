//! Shared primitive (matmul, attention, the convolutions): general matrix multiply, `C = A·B` or `C += A·B`, for any row and column strides of A and B
//! (so transposed operands cost nothing extra): the BLIS scheme.
//!
//! - C is split into one block of rows (or of columns) per thread; each thread runs the loops
//!   below on its block alone, with its own packing buffers, so a call makes one parallel
//!   dispatch and no thread waits for another until the end.
//! - For each `NC`-wide column block and `KC`-deep slice, B is packed into micro-panels of `NR`
//!   columns (`NR` = two SIMD vectors); then for each `MC`-row block, A into micro-panels of
//!   `MR` rows, zero-padded at the edges so that the micro-kernel never branches on size.
//! - The micro-kernel keeps an `MR`×`NR` tile of C in `2*MR` SIMD registers and, for each `p`
//!   of the `KC` slice, broadcasts one A value per row and does two FMAs per row.

use std::ops::Range;

use rayon::prelude::*;

use crate::FloatElem;
use crate::cpu::simd::SimdVector;

/// Rows of the micro-tile.
const MR: usize = 6;
/// Depth of a packed slice: an A micro-panel (`MR*KC`) and a B micro-panel (`KC*NR`) stay in L1.
const KC: usize = 256;
/// Rows of A packed at once (a multiple of `MR`); the packed block stays in L2.
const MC: usize = 96;
/// Columns of B packed at once (a multiple of `NR`): a `KC`×`NC` packed slice stays in L3.
const NC: usize = 4096;

/// Below this many multiply-adds a single thread is faster than splitting.
const PARALLEL_THRESHOLD: usize = 1 << 18;

/// A strided read-only matrix: element (i, j) at `data[i*row_stride + j*col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A raw pointer that threads may share because each writes a disjoint part of the output
/// (C here; the convolutions' outputs in `cpu/conv/padded.rs`).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    /// (A method, so that closures capture the whole `Sync` wrapper, not the raw field.)
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}

/// `C[m×n] (+)= A[m×k] · B[k×n]`; C is row-major with row stride `ldc` (columns contiguous).
/// With `accumulate` false, C's previous contents are ignored (may be garbage).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: FloatElem>(m: usize, n: usize, k: usize, a: MatRef<T>, b: MatRef<T>, c: &mut [T], ldc: usize, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C is too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::zero());
            }
        }
        return;
    }
    let nr = 2 * T::Vector::LANES;
    let c_ptr = SharedMut(c.as_mut_ptr());
    let threads = if m * n * k >= PARALLEL_THRESHOLD { rayon::current_num_threads() } else { 1 };
    // Split the longer side of C: the other operand is then packed once per block, and the
    // blocks are whole micro-tiles.
    let (row_units, column_units) = (m.div_ceil(MR), n.div_ceil(nr));
    let split_rows = row_units >= column_units;
    let units = if split_rows { row_units } else { column_units };
    let blocks = threads.min(units);
    let block = |i: usize| -> (Range<usize>, Range<usize>) {
        let (start, end) = (i * units / blocks, (i + 1) * units / blocks);
        if split_rows { ((start * MR)..(end * MR).min(m), 0..n) } else { (0..m, (start * nr)..(end * nr).min(n)) }
    };
    let run_block = |i: usize| {
        let (rows, columns) = block(i);
        // SAFETY: the blocks are disjoint parts of C, which holds them all (asserted above)
        unsafe { gemm_block(rows, columns, k, a, b, &c_ptr, ldc, accumulate) };
    };
    if blocks > 1 {
        (0..blocks).into_par_iter().for_each(run_block);
    } else {
        run_block(0);
    }
}

/// `C[rows, columns] (+)= A[rows, ..] · B[.., columns]` on one thread (see the module comment).
///
/// # Safety
/// `c` must hold element `(i, j)` of C at `i·ldc + j` for every `i` in `rows` and `j` in
/// `columns`, and no one else may touch them during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block<T: FloatElem>(
    rows: Range<usize>,
    columns: Range<usize>,
    k: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    c: &SharedMut<T>,
    ldc: usize,
    accumulate: bool,
) {
    let nr = 2 * T::Vector::LANES;
    let mut packed_a = crate::cpu::pool::Scratch::<T>::for_overwrite(MC.min(rows.len()).div_ceil(MR) * MR * KC.min(k));
    let mut packed_b = crate::cpu::pool::Scratch::<T>::for_overwrite(NC.min(columns.len()).div_ceil(nr) * nr * KC.min(k));
    for jc in columns.clone().step_by(NC) {
        let nc = NC.min(columns.end - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(b, pc, kc, jc, nc, nr, &mut packed_b);
            let overwrite = pc == 0 && !accumulate;
            for ic in rows.clone().step_by(MC) {
                let mc = MC.min(rows.end - ic);
                pack_a(a, ic, mc, pc, kc, &mut packed_a);
                for (panel, b_panel) in packed_b.chunks_exact(kc * nr).take(nc.div_ceil(nr)).enumerate() {
                    let jr = jc + panel * nr;
                    let nr_eff = nr.min(jc + nc - jr);
                    for (ip, a_panel) in packed_a.chunks_exact(MR * kc).take(mc.div_ceil(MR)).enumerate() {
                        let ir = ic + ip * MR;
                        // SAFETY: tile (ir.., jr..) lies in this block of C (the caller's promise)
                        unsafe {
                            let c_tile = c.ptr().add(ir * ldc + jr);
                            micro_kernel::<T>(kc, a_panel, b_panel, c_tile, ldc, MR.min(rows.end - ir), nr_eff, overwrite);
                        }
                    }
                }
            }
        }
    }
}

/// Copies a `depth`×`width` block of a strided matrix (element (p, j) at
/// `src[p·depth_stride + j·width_stride]`) into `panel` (row p at `panel[p·panel_width..]`),
/// reading along whichever axis is contiguous in memory.
fn pack_block<T: FloatElem>(src: &[T], depth_stride: usize, width_stride: usize, depth: usize, width: usize, panel: &mut [T], panel_width: usize) {
    if width_stride == 1 {
        for (p, row) in panel.chunks_exact_mut(panel_width).take(depth).enumerate() {
            row[..width].copy_from_slice(&src[p * depth_stride..][..width]);
        }
    } else if depth_stride == 1 {
        // a transposed operand: each of the `width` lines is contiguous along the depth
        for j in 0..width {
            let line = &src[j * width_stride..][..depth];
            for (p, &value) in line.iter().enumerate() {
                panel[p * panel_width + j] = value;
            }
        }
    } else {
        for (p, row) in panel.chunks_exact_mut(panel_width).take(depth).enumerate() {
            for (j, value) in row[..width].iter_mut().enumerate() {
                *value = src[p * depth_stride + j * width_stride];
            }
        }
    }
}

/// Packs `B[pc..pc+kc, jc..jc+nc]` into micro-panels of `nr` columns: panel `q` holds, for each
/// `p`, the `nr` values `B[pc+p, jc+q*nr..jc+q*nr+nr]` (zeros past `nc`).
fn pack_b<T: FloatElem>(b: MatRef<T>, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, out: &mut [T]) {
    for (q, panel) in out.chunks_exact_mut(kc * nr).take(nc.div_ceil(nr)).enumerate() {
        let j0 = q * nr;
        let width = nr.min(nc - j0);
        if width < nr {
            panel.fill(T::zero());
        }
        let origin = &b.data[pc * b.row_stride + (jc + j0) * b.col_stride..];
        pack_block(origin, b.row_stride, b.col_stride, kc, width, panel, nr);
    }
}

/// Packs `A[ic..ic+mc, pc..pc+kc]` into micro-panels of `MR` rows: panel `r` holds, for each
/// `p`, the `MR` values `A[ic+r*MR.., pc+p]` (zeros past `mc`).
fn pack_a<T: FloatElem>(a: MatRef<T>, ic: usize, mc: usize, pc: usize, kc: usize, out: &mut [T]) {
    for (r, panel) in out.chunks_exact_mut(MR * kc).take(mc.div_ceil(MR)).enumerate() {
        let height = MR.min(mc - r * MR);
        if height < MR {
            panel.fill(T::zero());
        }
        let origin = &a.data[(ic + r * MR) * a.row_stride + pc * a.col_stride..];
        pack_block(origin, a.col_stride, a.row_stride, kc, height, panel, MR);
    }
}

/// `C[0..mr_eff, 0..nr_eff] (+)= Apanel · Bpanel` over depth `kc`.
///
/// # Safety
/// `c` must point to an `mr_eff`×`nr_eff` tile with row stride `ldc` that no one else touches.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel<T: FloatElem>(kc: usize, a_panel: &[T], b_panel: &[T], c: *mut T, ldc: usize, mr_eff: usize, nr_eff: usize, overwrite: bool) {
    let lanes = T::Vector::LANES;
    let nr = 2 * lanes;
    debug_assert!(b_panel.len() >= kc * nr);
    // SAFETY: row p of the packed B panel is `nr` values at p·nr, inside the panel
    let acc = unsafe { tile_product::<T, MR, 2>(kc, a_panel, |p| b_panel.as_ptr().add(p * nr)) };
    for (i, row_acc) in acc.iter().enumerate().take(mr_eff) {
        // SAFETY: row i of the tile, nr_eff values, is the caller's
        let c_row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr_eff) };
        if nr_eff == nr {
            for (v, &vector) in row_acc.iter().enumerate() {
                let out = &mut c_row[v * lanes..];
                let sum = if overwrite { vector } else { vector + T::Vector::load(out) };
                sum.store(out);
            }
            continue;
        }
        let mut tile = [T::zero(); 32];
        row_acc[0].store(&mut tile[..lanes]);
        row_acc[1].store(&mut tile[lanes..nr]);
        if overwrite {
            c_row.copy_from_slice(&tile[..nr_eff]);
        } else {
            for (dst, &value) in c_row.iter_mut().zip(&tile[..nr_eff]) {
                *dst += value;
            }
        }
    }
}

/// The register tile of a GEMM: `acc[i][v] = Σ_p a_panel[p·ROWS + i] · B[p, v·lanes ..]` for
/// `p < kc`, where row `p` of B (`VECTORS` SIMD vectors) is read at `b_row(p)`. Per `p`: the
/// B vectors are loaded once, each A value broadcast once, `ROWS·VECTORS` FMAs. The packed
/// GEMM above and the stride-1 convolutions (`cpu/conv/padded.rs`, B read straight from the
/// padded image) share it.
///
/// # Safety
/// `b_row(p)` must point to `VECTORS·lanes` readable values for every `p < kc`.
#[inline(always)]
pub(crate) unsafe fn tile_product<T: FloatElem, const ROWS: usize, const VECTORS: usize>(
    kc: usize,
    a_panel: &[T],
    b_row: impl Fn(usize) -> *const T,
) -> [[T::Vector; VECTORS]; ROWS] {
    let lanes = T::Vector::LANES;
    let mut acc = [[T::Vector::splat(T::zero()); VECTORS]; ROWS];
    for (p, a_col) in a_panel.chunks_exact(ROWS).take(kc).enumerate() {
        let row = b_row(p);
        let b: [T::Vector; VECTORS] = std::array::from_fn(|v| T::Vector::load(unsafe { std::slice::from_raw_parts(row.add(v * lanes), lanes) }));
        for i in 0..ROWS {
            let ai = T::Vector::splat(a_col[i]);
            for v in 0..VECTORS {
                acc[i][v] = ai.mul_add(b[v], acc[i][v]);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn gemm_matches_the_naive_product_on_odd_sizes_and_transposed_operands() {
        let mut seed = 1u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        // threaded ones split rows (200×150) or columns (50×700, 7×4200: past one NC block)
        for &(m, n, k) in &[(1, 1, 1), (7, 33, 5), (97, 65, 300), (13, 1, 600), (200, 150, 70), (50, 700, 40), (7, 4200, 30)] {
            let a: Vec<f64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f64> = (0..k * n).map(|_| next()).collect();
            let expected = naive(m, n, k, &a, &b);
            // A as stored, B read through its transpose's strides (column-major copy).
            let b_t: Vec<f64> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
            let mut c = vec![f64::NAN; m * n];
            let a_ref = MatRef { data: &a, row_stride: k, col_stride: 1 };
            let b_ref = MatRef { data: &b_t, row_stride: 1, col_stride: k };
            gemm(m, n, k, a_ref, b_ref, &mut c, n, false);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-12, "{m}x{n}x{k}: {x} vs {y}");
            }
            gemm(m, n, k, a_ref, b_ref, &mut c, n, true);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - 2.0 * y).abs() < 1e-12);
            }
        }
    }
}
