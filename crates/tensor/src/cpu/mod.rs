//! The CPU's shared primitives: plain functions over slices and [`Layout`](crate::Layout)s,
//! generic over [`FloatElem`](crate::FloatElem), vectorized with `wide` and threaded with
//! `rayon`: the GEMM, strided maps and copies, SIMD sums, `exp`, the buffer cache, the FMA
//! peak. Each op's own CPU kernels are in its folder (`ops/<op>/cpu.rs`). This module never
//! imports `crate::cuda`.

pub mod copy;
pub mod elementwise;
pub mod gemm;
pub mod math;
pub mod reduce;
pub mod simd;

/// Elements per rayon task in elementwise kernels: big enough to amortize the task.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 14;
pub mod peak;
pub mod pool;
