//! CPU kernels: plain functions over slices and [`Layout`](crate::Layout)s, generic over
//! [`FloatElem`](crate::FloatElem), vectorized with `wide` and threaded with `rayon`. They know
//! nothing of autograd; the ops in `ops/` call them and record the backward.


pub mod copy;
pub mod elementwise;
pub mod math;
pub mod gemm;
pub mod reduce;
pub mod simd;

/// Elements per rayon task in elementwise kernels: big enough to amortize the task.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 14;
pub mod conv;
pub mod softmax;
pub mod attention;
pub mod peak;
pub mod pool;
pub mod norm;
