//! Elementwise functions of two tensors, with NumPy broadcasting. The backward of a broadcast
//! input sums the gradient over the axes it was repeated along ([`Tensor::sum_to_shape`]).

pub mod cpu;
pub mod cuda;

use crate::dispatch::kernels;
use crate::error::Result;
use crate::layout::{Layout, broadcast_shapes};
use crate::ops::check_same;
use crate::{FloatElem, Tensor};

/// The kernel of the binary ops, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait BinaryKernels {
    /// `out = a op b` over two views of the output's shape (broadcast axes with stride 0),
    /// contiguous out.
    fn binary(&self, op: BinaryOp, a: &Tensor, a_view: &Layout, b: &Tensor, b_view: &Layout) -> Result<Tensor>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// 1 where the elements are equal, else 0 (not differentiable; used for masks).
    Equal,
}

impl BinaryOp {
    /// The op's number in the CUDA kernels: its position in
    /// [`BINARY_CODES`](crate::ops::op_codes::BINARY_CODES), from which build.rs generates the
    /// kernels' `enum BinaryCode`.
    pub fn code(self) -> i32 {
        crate::ops::op_codes::BINARY_CODES.iter().position(|&name| name == self.name()).expect("every BinaryOp is listed in BINARY_CODES") as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Equal => "equal",
        }
    }

    #[inline]
    pub fn apply<T: FloatElem>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Equal => {
                if a == b {
                    T::one()
                } else {
                    T::zero()
                }
            }
        }
    }
}

impl Tensor {
    /// The forward of a binary op: broadcast both inputs to the common shape, apply `op`.
    fn binary_forward(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        check_same(op.name(), &[self, rhs])?;
        let shape = broadcast_shapes(op.name(), self.shape(), rhs.shape())?;
        let (la, lb) = (self.layout().broadcast_to(&shape)?, rhs.layout().broadcast_to(&shape)?);
        kernels(self).binary(op, self, &la, rhs, &lb)
    }

    /// a + b; ∂/∂a = 1, ∂/∂b = 1
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_forward(rhs, BinaryOp::Add)?;
        let (sa, sb) = (self.shape().to_vec(), rhs.shape().to_vec());
        Ok(out.with_backward("add", &[self, rhs], move |g| Ok(vec![Some(g.sum_to_shape(&sa)?), Some(g.sum_to_shape(&sb)?)])))
    }

    /// a − b; ∂/∂a = 1, ∂/∂b = −1
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_forward(rhs, BinaryOp::Sub)?;
        let (sa, sb) = (self.shape().to_vec(), rhs.shape().to_vec());
        Ok(out.with_backward("sub", &[self, rhs], move |g| Ok(vec![Some(g.sum_to_shape(&sa)?), Some(g.sum_to_shape(&sb)?.neg()?)])))
    }

    /// a·b; ∂/∂a = b, ∂/∂b = a
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_forward(rhs, BinaryOp::Mul)?;
        // each factor is saved only if the other one needs its gradient
        let (a_needs, b_needs) = (self.requires_grad(), rhs.requires_grad());
        let (a, b) = (b_needs.then(|| self.detach()), a_needs.then(|| rhs.detach()));
        let (sa, sb) = (self.shape().to_vec(), rhs.shape().to_vec());
        Ok(out.with_backward("mul", &[self, rhs], move |g| {
            let grad_a = b.as_ref().map(|b| g.mul(b)?.sum_to_shape(&sa)).transpose()?;
            let grad_b = a.as_ref().map(|a| g.mul(a)?.sum_to_shape(&sb)).transpose()?;
            Ok(vec![grad_a, grad_b])
        }))
    }

    /// a / b; ∂/∂a = 1/b, ∂/∂b = −a/b² = −(a/b)/b
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_forward(rhs, BinaryOp::Div)?;
        // the quotient is saved only if b needs its gradient
        let (b, y) = (rhs.detach(), rhs.requires_grad().then(|| out.clone()));
        let sa = self.shape().to_vec();
        Ok(out.with_backward("div", &[self, rhs], move |g| {
            let g_over_b = g.div(&b)?;
            let grad_b = y.as_ref().map(|y| g_over_b.mul(y)?.neg()?.sum_to_shape(b.shape())).transpose()?;
            Ok(vec![Some(g_over_b.sum_to_shape(&sa)?), grad_b])
        }))
    }

    /// aᵇ for tensors (a > 0), as exp(b·ln a); for a constant exponent use [`Tensor::powf`].
    pub fn pow(&self, exponent: &Tensor) -> Result<Tensor> {
        self.log()?.mul(exponent)?.exp()
    }

    /// 1 where `self == rhs` (broadcast), else 0. Not differentiable.
    pub fn eq_mask(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_forward(rhs, BinaryOp::Equal)
    }
}
