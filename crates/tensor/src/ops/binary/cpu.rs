//! The binary ops' CPU kernel: a strided zip over the two broadcast views.

use super::{BinaryKernels, BinaryOp};
use crate::cpu::elementwise::zip_map;
use crate::dispatch::Cpu;
use crate::dispatch::host::{host_tensor, with_host_slices, wrap};
use crate::{Layout, Result, Tensor};

impl BinaryKernels for Cpu {
    fn binary(&self, op: BinaryOp, a: &Tensor, la: &Layout, b: &Tensor, lb: &Layout) -> Result<Tensor> {
        // one closure per op, so that the kernel loop has no per-element match
        let out = with_host_slices!(op.name(), [a => av, b => bv], wrap(match op {
            BinaryOp::Add => zip_map(av, la, bv, lb, |x, y| BinaryOp::Add.apply(x, y)),
            BinaryOp::Sub => zip_map(av, la, bv, lb, |x, y| BinaryOp::Sub.apply(x, y)),
            BinaryOp::Mul => zip_map(av, la, bv, lb, |x, y| BinaryOp::Mul.apply(x, y)),
            BinaryOp::Div => zip_map(av, la, bv, lb, |x, y| BinaryOp::Div.apply(x, y)),
            BinaryOp::Equal => zip_map(av, la, bv, lb, |x, y| BinaryOp::Equal.apply(x, y)),
        }));
        Ok(host_tensor(out, la.shape()))
    }
}
