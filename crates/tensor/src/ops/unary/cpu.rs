//! The unary ops' CPU kernels: one strided map per op, specialized so the loop vectorizes.

use super::{UnaryKernels, UnaryOp};
use crate::cpu::elementwise::{map, zip_map};
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_slices, wrap};
use crate::{FloatElem, Layout, Result, Tensor};

/// Calls `$run` with `$f` bound to each variant of `$op`: a constant for the variants without
/// data, so that a closure calling `$f.forward(v)` has the variant in its code, its `match`
/// folds away and the kernel loop vectorizes (a captured variable would keep the `match` in
/// the loop, since the kernels do not inline their closure's environment).
macro_rules! specialize_unary {
    ($op:expr, |$f:ident| $run:expr) => {
        match $op {
            UnaryOp::Neg => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Neg;
                $run
            }
            UnaryOp::Exp => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Exp;
                $run
            }
            UnaryOp::Log => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Log;
                $run
            }
            UnaryOp::Sqrt => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Sqrt;
                $run
            }
            UnaryOp::Sqr => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Sqr;
                $run
            }
            UnaryOp::Abs => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Abs;
                $run
            }
            UnaryOp::Relu => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Relu;
                $run
            }
            UnaryOp::Silu => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Silu;
                $run
            }
            UnaryOp::Gelu => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Gelu;
                $run
            }
            UnaryOp::Sigmoid => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Sigmoid;
                $run
            }
            UnaryOp::Tanh => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Tanh;
                $run
            }
            UnaryOp::Sin => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Sin;
                $run
            }
            UnaryOp::Cos => {
                #[allow(non_upper_case_globals)]
                const $f: UnaryOp = UnaryOp::Cos;
                $run
            }
            UnaryOp::Powf(p) => {
                let $f = UnaryOp::Powf(p);
                $run
            }
            UnaryOp::Affine { mul, add } => {
                let $f = UnaryOp::Affine { mul, add };
                $run
            }
            UnaryOp::Clamp { min, max } => {
                let $f = UnaryOp::Clamp { min, max };
                $run
            }
        }
    };
}

/// `y = op(x)` over the view `layout` of `x`, contiguous out.
fn forward_kernel<T: FloatElem>(x: &[T], layout: &Layout, op: UnaryOp) -> Vec<T> {
    specialize_unary!(op, |f| map(x, layout, move |v| f.forward(v)))
}

/// `dy · op'(saved)` over the views of `dy` and `saved`.
fn backward_kernel<T: FloatElem>(dy: &[T], dy_layout: &Layout, saved: &[T], saved_layout: &Layout, op: UnaryOp) -> Vec<T> {
    specialize_unary!(op, |f| zip_map(dy, dy_layout, saved, saved_layout, move |g, v| g * f.derivative(v, v)))
}

impl UnaryKernels for Cpu {
    fn unary_forward(&self, x: &Tensor, op: UnaryOp) -> Result<Tensor> {
        let y = with_host_slices!(op.name(), [x => xs], wrap(forward_kernel(xs, x.layout(), op)));
        Ok(host_tensor(y, x.shape()))
    }

    fn unary_backward(&self, op: UnaryOp, saved: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = with_host_slices!(op.name(), [dy => gs, saved => ss], wrap(backward_kernel(gs, dy.layout(), ss, saved.layout(), op)));
        Ok(host_tensor(dx, saved.shape()))
    }
}
