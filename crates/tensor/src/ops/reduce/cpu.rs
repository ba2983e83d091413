//! The reductions' CPU kernel: sum or max over any set of axes of a strided view.
//!
//! The kept axes are permuted in front of the reduced ones. When that view is contiguous, each
//! output element reduces one contiguous run (SIMD); otherwise the run is walked through a
//! precomputed table of relative offsets. Output elements are independent: rayon splits them.

use rayon::prelude::*;

use super::{ReduceKernels, ReduceKind};
use crate::cpu::reduce::sum_slice;
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_slices, wrap};
use crate::layout::Layout;
use crate::{FloatElem, Result, Tensor};

impl ReduceKernels for Cpu {
    fn reduce(&self, x: &Tensor, axes: &[usize], kind: ReduceKind, out_shape: &[usize]) -> Result<Tensor> {
        let out = with_host_slices!(kind.name(), [x => xs], wrap(reduce(xs, x.layout(), axes, kind)));
        Ok(host_tensor(out, out_shape))
    }
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
    let kept_layout = Layout::new(kept.iter().map(|&a| layout.shape()[a]).collect(), kept.iter().map(|&a| layout.strides()[a]).collect(), layout.offset());
    let run_layout = Layout::new(axes.iter().map(|&a| layout.shape()[a]).collect(), axes.iter().map(|&a| layout.strides()[a]).collect(), 0);
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
