// The numbers the CUDA kernels switch on for the unary and binary ops: an op's number is its
// position in these lists, which hold the ops' names (`UnaryOp::name`, `BinaryOp::name`).
// build.rs includes this file too and writes `ember_op_codes.h` from it (`U_<NAME>`,
// `B_<NAME>`), the header kernels/unary.cu and kernels/binary.cu include: no number is
// copied by hand. Append new ops at the end. (Plain constants only: build.rs compiles it.)

/// `UnaryOp`s by number (`U_NEG = 0`, …).
pub const UNARY_CODES: &[&str] =
    &["neg", "exp", "log", "sqrt", "sqr", "abs", "relu", "silu", "gelu", "sigmoid", "tanh", "sin", "cos", "powf", "affine", "clamp"];

/// `BinaryOp`s by number (`B_ADD = 0`, …).
pub const BINARY_CODES: &[&str] = &["add", "sub", "mul", "div", "equal"];
