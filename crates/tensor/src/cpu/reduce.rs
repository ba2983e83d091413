//! Reductions (sum, max) over any set of axes of a strided view.
//!
//! The kept axes are permuted in front of the reduced ones. When that view is contiguous, each
//! output element reduces one contiguous run (SIMD); otherwise the run is walked through a
//! precomputed table of relative offsets. Output elements are independent: rayon splits them.

use rayon::prelude::*;

use crate::FloatElem;
use crate::cpu::simd::SimdVector;
use crate::layout::Layout;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Max,
}

/// Sum of a contiguous run with four SIMD accumulators.
pub fn sum_slice<T: FloatElem>(x: &[T]) -> T {
    let lanes = T::Vector::LANES;
    let zero = T::Vector::splat(T::zero());
    let one = T::Vector::splat(T::one());
    let mut acc = [zero; 4];
    let mut blocks = x.chunks_exact(4 * lanes);
    for block in &mut blocks {
        for (v, a) in acc.iter_mut().enumerate() {
            *a = T::Vector::load(&block[v * lanes..]).mul_add(one, *a);
        }
    }
    let total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    blocks.remainder().iter().fold(total.reduce_sum(), |s, &v| s + v)
}

/// `(Σ a, Σ a·b)` over two runs of one length, with two SIMD accumulators each.
pub fn sum_and_dot<T: FloatElem>(a: &[T], b: &[T]) -> (T, T) {
    assert_eq!(a.len(), b.len());
    let lanes = T::Vector::LANES;
    let zero = T::Vector::splat(T::zero());
    let one = T::Vector::splat(T::one());
    let (mut sums, mut dots) = ([zero; 2], [zero; 2]);
    let (mut a_blocks, mut b_blocks) = (a.chunks_exact(2 * lanes), b.chunks_exact(2 * lanes));
    for (a, b) in (&mut a_blocks).zip(&mut b_blocks) {
        for v in 0..2 {
            let (av, bv) = (T::Vector::load(&a[v * lanes..]), T::Vector::load(&b[v * lanes..]));
            sums[v] = av.mul_add(one, sums[v]);
            dots[v] = av.mul_add(bv, dots[v]);
        }
    }
    let (sum, dot) = ((sums[0] + sums[1]).reduce_sum(), (dots[0] + dots[1]).reduce_sum());
    a_blocks.remainder().iter().zip(b_blocks.remainder()).fold((sum, dot), |(s, d), (&a, &b)| (s + a, d + a * b))
}

/// `Σ (x − c)²` over a contiguous run, with four SIMD accumulators.
pub fn sum_squared_deviations<T: FloatElem>(x: &[T], c: T) -> T {
    let lanes = T::Vector::LANES;
    let center = T::Vector::splat(c);
    let mut acc = [T::Vector::splat(T::zero()); 4];
    let mut blocks = x.chunks_exact(4 * lanes);
    for block in &mut blocks {
        for (v, a) in acc.iter_mut().enumerate() {
            let d = T::Vector::load(&block[v * lanes..]) - center;
            *a = d.mul_add(d, *a);
        }
    }
    let total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    blocks.remainder().iter().fold(total.reduce_sum(), |s, &v| s + (v - c) * (v - c))
}

fn max_slice<T: FloatElem>(x: &[T]) -> T {
    x.iter().fold(T::neg_infinity(), |m, &v| if v > m || v.is_nan() { v } else { m })
}

/// Elements per index of the first `keep` axes.
fn run_len_of(layout: &Layout, keep: usize) -> usize {
    layout.shape()[keep..].iter().product()
}

/// Reduces `axes` of the view `layout` over `x`; the result holds one value per combination of
/// the kept axes, in row-major order of those axes.
pub fn reduce<T: FloatElem>(x: &[T], layout: &Layout, axes: &[usize], kind: ReduceKind) -> Vec<T> {
    let rank = layout.rank();
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let order: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let permuted = layout.permute(&order).expect("a permutation");
    let run_len: usize = axes.iter().map(|&a| layout.shape()[a]).product();
    let out_len: usize = kept.iter().map(|&a| layout.shape()[a]).product();
    let reduce_run = |run: &[T]| match kind {
        ReduceKind::Sum => sum_slice(run),
        ReduceKind::Max => max_slice(run),
    };
    if run_len == 0 {
        let empty = match kind {
            ReduceKind::Sum => T::zero(),
            ReduceKind::Max => T::neg_infinity(),
        };
        return vec![empty; out_len];
    }
    // Trailing reduced axes of a contiguous input (e.g. H, W when summing [N, C, H, W] over
    // N, H, W): reduce those contiguous runs first, then the rest on the much smaller result.
    let trailing = (0..rank).rev().take_while(|a| axes.contains(a)).count();
    if trailing > 0 && trailing < axes.len() && layout.is_contiguous() {
        let keep = rank - trailing;
        let partial_layout = Layout::contiguous(&[layout.numel() / run_len_of(layout, keep), run_len_of(layout, keep)]).offset_by(layout.offset());
        let partial = reduce(x, &partial_layout, &[1], kind);
        let rest: Vec<usize> = axes.iter().copied().filter(|&a| a < keep).collect();
        return reduce(&partial, &Layout::contiguous(&layout.shape()[..keep]), &rest, kind);
    }
    if let Some(range) = permuted.contiguous_range() {
        let data = &x[range];
        let mut out = crate::cpu::pool::for_overwrite::<T>(out_len);
        out.par_iter_mut().with_min_len(64).zip(data.par_chunks(run_len)).for_each(|(o, run)| *o = reduce_run(run));
        return out;
    }
    let kept_layout = Layout::new(
        kept.iter().map(|&a| layout.shape()[a]).collect(),
        kept.iter().map(|&a| layout.strides()[a]).collect(),
        layout.offset(),
    );
    let run_layout = Layout::new(
        axes.iter().map(|&a| layout.shape()[a]).collect(),
        axes.iter().map(|&a| layout.strides()[a]).collect(),
        0,
    );
    let bases = kept_layout.offsets();
    let relative = run_layout.offsets();
    bases
        .par_iter()
        .with_min_len(16)
        .map_init(
            || Vec::with_capacity(run_len),
            |run, &base| {
                run.clear();
                run.extend(relative.iter().map(|&r| x[base + r]));
                reduce_run(run)
            },
        )
        .collect()
}
