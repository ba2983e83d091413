//! Elementwise functions of one tensor. [`UnaryOp`] is the table of derivative rules: each
//! op's forward `y = f(x)` next to its derivative `dy/dx` written with `x` and `y`. The
//! backward of every unary op is the one kernel `grad_x = grad_y * dy/dx`.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

pub mod cpu;
pub mod cuda;

use crate::dispatch::kernels;
use crate::error::Result;
use crate::ops::check_same;
use crate::{FloatElem, Tensor};

/// The kernels of the unary ops, one implementation per device (`cpu.rs`, `cuda.rs`).
pub(crate) trait UnaryKernels {
    /// `y = op(x)` over the view `x`, contiguous out.
    fn unary_forward(&self, x: &Tensor, op: UnaryOp) -> Result<Tensor>;
    /// `dx = dy · op'(saved)`, `saved` being x or y as [`UnaryOp::derivative_needs`] names
    /// (the derivative reads only that one, so it is passed as both).
    fn unary_backward(&self, op: UnaryOp, saved: &Tensor, dy: &Tensor) -> Result<Tensor>;
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
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
    /// `y = x^p` for a constant `p`.
    Powf(f64),
    /// `y = mul * x + add`.
    Affine {
        mul: f64,
        add: f64,
    },
    /// `y = min(max(x, min), max)`.
    Clamp {
        min: f64,
        max: f64,
    },
}

fn c<T: FloatElem>(x: f64) -> T {
    T::from_f64(x)
}

#[inline(always)]
fn sigmoid<T: FloatElem>(x: T) -> T {
    if T::DTYPE == crate::DType::F32 {
        // straight-line, so SiLU loops vectorize; e^800 = ∞ gives exactly 0
        return T::one() / (T::one() + (-x).exp_branchless());
    }
    // the two branches avoid exp overflow for large |x|
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// Φ(x), the standard normal CDF.
fn normal_cdf<T: FloatElem>(x: T) -> T {
    c::<T>(0.5) * (T::one() + (x * c(FRAC_1_SQRT_2)).erf())
}

impl UnaryOp {
    /// The op's number in the CUDA kernels (its position in
    /// [`UNARY_CODES`](crate::ops::op_codes::UNARY_CODES), from which build.rs generates the
    /// kernels' `enum UnaryCode`) and its constants there (p, q).
    pub fn code(self) -> (i32, f32, f32) {
        let number = crate::ops::op_codes::UNARY_CODES.iter().position(|&name| name == self.name()).expect("every UnaryOp is listed in UNARY_CODES");
        let (p, q) = match self {
            UnaryOp::Powf(p) => (p as f32, 0.0),
            UnaryOp::Affine { mul, add } => (mul as f32, add as f32),
            UnaryOp::Clamp { min, max } => (min as f32, max as f32),
            _ => (0.0, 0.0),
        };
        (number as i32, p, q)
    }

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Sqr => "sqr",
            UnaryOp::Abs => "abs",
            UnaryOp::Relu => "relu",
            UnaryOp::Silu => "silu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Affine { .. } => "affine",
            UnaryOp::Clamp { .. } => "clamp",
        }
    }

    /// `y = f(x)`. (Always inlined: each kernel loop is specialized to one variant, so the
    /// `match` folds away and the loop can vectorize.)
    #[inline(always)]
    pub fn forward<T: FloatElem>(self, x: T) -> T {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Sqr => x * x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Relu => x.max(T::zero()),
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Gelu => x * normal_cdf(x),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Powf(p) => x.powf(c(p)),
            UnaryOp::Affine { mul, add } => x * c(mul) + c(add),
            UnaryOp::Clamp { min, max } => x.max(c(min)).min(c(max)),
        }
    }

    /// `dy/dx`, given `x` and `y = f(x)` (only the one [`Self::derivative_needs`] names is valid).
    #[inline(always)]
    pub fn derivative<T: FloatElem>(self, x: T, y: T) -> T {
        match self {
            UnaryOp::Neg => -T::one(),
            UnaryOp::Exp => y,
            UnaryOp::Log => x.recip(),
            UnaryOp::Sqrt => c::<T>(0.5) / y,
            UnaryOp::Sqr => c::<T>(2.0) * x,
            UnaryOp::Abs => {
                if x > T::zero() {
                    T::one()
                } else if x < T::zero() {
                    -T::one()
                } else {
                    T::zero()
                }
            }
            UnaryOp::Relu => {
                if x > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
            // d/dx x σ(x) = σ(x) (1 + x (1 − σ(x)))
            UnaryOp::Silu => {
                let s = sigmoid(x);
                s * (T::one() + x * (T::one() - s))
            }
            // d/dx x Φ(x) = Φ(x) + x φ(x)
            UnaryOp::Gelu => {
                let pdf = (-x * x * c(0.5)).exp() * c(1.0 / (2.0 * PI).sqrt());
                normal_cdf(x) + x * pdf
            }
            UnaryOp::Sigmoid => y * (T::one() - y),
            UnaryOp::Tanh => T::one() - y * y,
            UnaryOp::Sin => x.cos(),
            UnaryOp::Cos => -x.sin(),
            UnaryOp::Powf(p) => c::<T>(p) * x.powf(c(p - 1.0)),
            UnaryOp::Affine { mul, .. } => c(mul),
            UnaryOp::Clamp { min, max } => {
                if x > c(min) && x < c(max) {
                    T::one()
                } else {
                    T::zero()
                }
            }
        }
    }

    /// Which value the derivative is written in, so the forward saves only that one.
    pub fn derivative_needs(self) -> Saved {
        match self {
            UnaryOp::Exp | UnaryOp::Sqrt | UnaryOp::Sigmoid | UnaryOp::Tanh => Saved::Output,
            UnaryOp::Neg | UnaryOp::Affine { .. } => Saved::Nothing,
            _ => Saved::Input,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    Input,
    Output,
    Nothing,
}

impl Tensor {
    /// Applies `op` elementwise; the backward is `grad * op.derivative(x, y)`.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let out = kernels(self).unary_forward(self, op)?;
        let saved = match op.derivative_needs() {
            Saved::Input => Some(self.detach()),
            Saved::Output => Some(out.clone()),
            Saved::Nothing => None,
        };
        Ok(out.with_backward(op.name(), &[self], move |grad| {
            let grad_x = match &saved {
                Some(saved) => {
                    check_same(op.name(), &[grad, saved])?;
                    kernels(saved).unary_backward(op, saved, grad)?
                }
                None => grad.affine(op.derivative(0.0, 0.0), 0.0)?,
            };
            Ok(vec![Some(grad_x)])
        }))
    }

    /// −x
    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    /// eˣ; d/dx = eˣ
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    /// ln x; d/dx = 1/x
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    /// √x; d/dx = 1/(2√x)
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    /// x²; d/dx = 2x
    pub fn sqr(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqr)
    }
    /// |x|; d/dx = sign(x) (0 at 0)
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    /// max(x, 0); d/dx = 1 where x > 0, else 0
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    /// x·σ(x) (SiLU, "swish"); d/dx = σ(x)(1 + x(1 − σ(x)))
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }
    /// x·Φ(x), the exact (erf) GELU as in PyTorch; d/dx = Φ(x) + x·φ(x)
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }
    /// σ(x) = 1/(1 + e⁻ˣ); d/dx = σ(1 − σ)
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    /// x·σ(1.702·x), the "quick GELU" of OpenAI's CLIP (transformers' `quick_gelu`), a
    /// composition of primitive ops (its gradient from the parts):
    /// d/dx = σ(1.702x) + 1.702·x·σ(1.702x)·(1 − σ(1.702x))
    pub fn quick_gelu(&self) -> Result<Tensor> {
        self.mul(&self.mul_scalar(1.702)?.sigmoid()?)
    }
    /// tanh x; d/dx = 1 − tanh²x
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    /// sin x; d/dx = cos x
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sin)
    }
    /// cos x; d/dx = −sin x
    pub fn cos(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Cos)
    }
    /// xᵖ for a constant p; d/dx = p·xᵖ⁻¹
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(p))
    }
    /// mul·x + add; d/dx = mul
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }
    /// min(max(x, min), max); d/dx = 1 strictly inside (min, max), else 0
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN bounds are refused too
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        if !(min <= max) {
            return crate::error::invalid("clamp", format!("empty range [{min}, {max}]"));
        }
        self.unary(UnaryOp::Clamp { min, max })
    }
    /// x + s
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, s)
    }
    /// x − s
    pub fn sub_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, -s)
    }
    /// x·s
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(s, 0.0)
    }
    /// x / s
    pub fn div_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0 / s, 0.0)
    }
}
