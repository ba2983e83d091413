//! The differentiable ops, one folder each: `mod.rs` holds the public API with its math and
//! gradient, forward and backward side by side, the op's descriptor types and its kernel
//! trait; `cpu.rs` (or `cpu/`) its CPU kernels; `cuda.rs` the host side of its CUDA kernels
//! (`kernels/<op>.cu`). An op asks [`crate::dispatch::kernels`] for its inputs' device and
//! never branches on the device itself.

pub mod attention;
pub mod binary;
pub mod conv;
pub mod cross_entropy;
pub mod dropout;
pub mod geglu;
pub mod index_select;
pub mod matmul;
pub mod movement;
pub mod mse_loss;
pub mod norm;
pub mod op_codes;
pub mod reduce;
pub mod softmax;
pub mod unary;
pub mod upsample;

use crate::Tensor;
use crate::error::{Result, TensorError};

/// `t` with row-major elements starting at its buffer's first element (a copy if not), as
/// the kernels that take plain contiguous buffers want.
pub(crate) fn dense(t: &Tensor) -> Result<Tensor> {
    if t.layout().contiguous_range().is_some_and(|r| r.start == 0) { Ok(t.clone()) } else { t.deep_copy() }
}

/// Checks that all inputs of `op` live on one device and share one dtype.
pub(crate) fn check_same(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    let first = tensors[0];
    for t in &tensors[1..] {
        if t.device() != first.device() {
            return Err(TensorError::DeviceMismatch { op, lhs: first.device(), rhs: t.device() });
        }
        if t.dtype() != first.dtype() {
            return Err(TensorError::DTypeMismatch { op, lhs: first.dtype(), rhs: t.dtype() });
        }
    }
    Ok(())
}

/// Checks a tensor's rank.
pub(crate) fn check_rank(op: &'static str, t: &Tensor, rank: usize, what: &str) -> Result<()> {
    if t.rank() != rank {
        return crate::error::invalid(op, format!("{what} must have rank {rank}, got shape {:?}", t.shape()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::binary::BinaryOp;
    use super::op_codes::{BINARY_CODES, UNARY_CODES};
    use super::unary::UnaryOp;

    /// Every `UnaryOp` (the `match` without a wildcard fails to compile when a variant is added
    /// and not listed here).
    fn every_unary_op() -> Vec<UnaryOp> {
        use UnaryOp::*;
        let ops = vec![
            Neg,
            Exp,
            Log,
            Sqrt,
            Sqr,
            Abs,
            Relu,
            Silu,
            Gelu,
            Sigmoid,
            Tanh,
            Sin,
            Cos,
            Powf(2.0),
            Affine { mul: 2.0, add: 1.0 },
            Clamp { min: -1.0, max: 1.0 },
        ];
        for op in &ops {
            match op {
                Neg | Exp | Log | Sqrt | Sqr | Abs | Relu | Silu | Gelu | Sigmoid | Tanh | Sin | Cos | Powf(_) | Affine { .. } | Clamp { .. } => {}
            }
        }
        ops
    }

    #[test]
    fn every_unary_and_binary_op_has_its_own_kernel_number_from_the_generated_table() {
        let mut unary: Vec<i32> = every_unary_op().iter().map(|op| op.code().0).collect();
        unary.sort();
        assert_eq!(unary, (0..UNARY_CODES.len() as i32).collect::<Vec<_>>(), "one number per unary op, none unused");
        let binary = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Equal];
        for op in binary {
            match op {
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Equal => {}
            }
        }
        let mut numbers: Vec<i32> = binary.iter().map(|op| op.code()).collect();
        numbers.sort();
        assert_eq!(numbers, (0..BINARY_CODES.len() as i32).collect::<Vec<_>>(), "one number per binary op, none unused");
        // the constants travel with the number
        assert_eq!(UnaryOp::Clamp { min: -1.0, max: 2.0 }.code(), (UNARY_CODES.iter().position(|&n| n == "clamp").unwrap() as i32, -1.0, 2.0));
    }
}
