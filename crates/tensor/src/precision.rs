//! How the GPU's f32 products round: the switch PyTorch calls `allow_tf32`, and bf16 inputs
//! as under autocast, per thread.
//!
//! Matrix products (matmul, the implicit-GEMM convolutions forward and both gradients, and
//! attention's products forward and backward) on a CUDA device run either on FMA units
//! (exact f32 arithmetic, the default) or on the tensor cores in TF32: each operand rounded
//! to 10 mantissa bits (round to nearest, ties away from zero: `cvt.rna.tf32.f32`), products
//! accumulated in f32. TF32 keeps f32's exponent range (only values within half a TF32 step
//! of f32's largest round up to infinity); an operand's relative rounding error is at most
//! 2⁻¹¹, so a product's error grows from about 2⁻²⁴ to about 2⁻¹⁰ of Σ|a||b|. The CPU always
//! computes in f32: the setting changes what a CUDA device does only.
//!
//! With bf16 the inputs are rounded to 7 stored mantissa bits (8 significant; round to nearest
//! even) and multiplied on tensor cores (mma.m16n8k16), accumulated in f32 and written in f32:
//! the products of PyTorch's bf16 autocast but with f32 outputs (an operand's error up to
//! 2⁻⁸, a product's about 2⁻⁷ of Σ|a||b|), the tensors staying f32 in memory (bf16 storage is
//! not built yet).
//!
//! The setting is per thread (as [`crate::no_grad`] is), so that tests running side by side
//! do not change each other's arithmetic; a training run sets it once on its thread.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

/// The arithmetic of f32 matrix products on a CUDA device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 inputs and f32 fused multiply-adds (exact f32, like PyTorch with TF32 off).
    #[default]
    F32,
    /// Inputs rounded to TF32, multiplied on tensor cores (mma.m16n8k8), accumulated in f32.
    Tf32,
    /// Inputs rounded to bf16, multiplied on tensor cores (mma.m16n8k16), accumulated and
    /// written in f32 (autocast's bf16 inputs), the tensors staying f32 in memory.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Tf32, Precision::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(text: &str) -> Result<Precision, String> {
        Precision::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(text)).ok_or_else(|| format!("unknown precision {text:?}: f32, tf32 or bf16"))
    }
}

thread_local! {
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The precision of this thread's CUDA matrix products.
pub fn precision() -> Precision {
    PRECISION.with(Cell::get)
}

/// Sets this thread's precision until the guard is dropped (the previous one comes back).
#[must_use = "the precision returns to the previous one when the guard is dropped"]
pub fn set_precision(precision: Precision) -> PrecisionGuard {
    PrecisionGuard { previous: PRECISION.with(|p| p.replace(precision)) }
}

/// Runs `f` with this thread's CUDA matrix products in `precision`.
pub fn with_precision<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let _guard = set_precision(precision);
    f()
}

/// Restores the previous precision when dropped ([`set_precision`]).
pub struct PrecisionGuard {
    previous: Precision,
}

impl Drop for PrecisionGuard {
    fn drop(&mut self) {
        PRECISION.with(|p| p.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_per_thread_scoped_and_parsed_by_name() {
        assert_eq!(precision(), Precision::F32);
        with_precision(Precision::Tf32, || {
            assert_eq!(precision(), Precision::Tf32);
            std::thread::spawn(|| assert_eq!(precision(), Precision::F32)).join().unwrap();
            with_precision(Precision::F32, || assert_eq!(precision(), Precision::F32));
            assert_eq!(precision(), Precision::Tf32);
        });
        assert_eq!(precision(), Precision::F32);
        assert_eq!("TF32".parse::<Precision>(), Ok(Precision::Tf32));
        assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp8".parse::<Precision>().unwrap_err().contains("f32, tf32 or bf16"));
        assert_eq!(Precision::Tf32.to_string(), "tf32");
    }
}
