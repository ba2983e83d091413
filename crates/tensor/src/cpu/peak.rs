//! Shared primitive (for the benchmarks): the machine's measured f32 FMA peak, so that benchmarks report "% of peak" for the machine
//! they ran on (machines differ: AVX2 or AVX-512, 256- or 512-bit FMA units).

use rayon::prelude::*;

use crate::FloatElem;
use crate::cpu::simd::SimdVector;

/// Independent FMA chains per thread: enough to cover FMA latency × FMA ports.
const CHAINS: usize = 12;

/// GFLOP/s of f32 fused multiply-adds on all rayon threads, with the vector width the kernels
/// use (an FMA counts as two flops). Takes about `seconds`.
pub fn measure_f32_fma_peak(seconds: f64) -> f64 {
    let lanes = <f32 as FloatElem>::Vector::LANES;
    let threads = rayon::current_num_threads();
    let run = |iterations: usize| -> f64 {
        let start = std::time::Instant::now();
        (0..threads).into_par_iter().for_each(|t| {
            let (a, b) = (<f32 as FloatElem>::Vector::splat(0.999_999), <f32 as FloatElem>::Vector::splat(1e-7));
            let mut acc = [<f32 as FloatElem>::Vector::splat(t as f32); CHAINS];
            for _ in 0..iterations {
                for x in acc.iter_mut() {
                    *x = x.mul_add(a, b);
                }
            }
            std::hint::black_box(acc);
        });
        start.elapsed().as_secs_f64()
    };
    // calibrate, then measure
    let mut iterations = 100_000;
    let mut elapsed = run(iterations);
    while elapsed < seconds / 4.0 {
        iterations *= 2;
        elapsed = run(iterations);
    }
    let best = (0..3).map(|_| run(iterations)).fold(f64::INFINITY, f64::min);
    (threads * iterations * CHAINS * lanes * 2) as f64 / best / 1e9
}
