//! Shared primitive: SIMD sums over contiguous runs, used by the reductions
//! (`ops/reduce/cpu.rs`) and the group norm (`ops/norm/cpu.rs`).

use crate::FloatElem;
use crate::cpu::simd::SimdVector;

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
