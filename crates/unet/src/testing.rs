//! Deterministic "procedural" weights for parity tests: the same formula is in
//! `scripts/make_unet_fixtures.py`, so ember and diffusers can run the 35.7M-parameter model
//! with identical weights without a 143 MB file in git. For parameter `name` of shape `s`:
//!
//! `uᵢ = sin(0.61803·i + phase)`, `phase = (Σ bytes of name mod 997)·0.01`;
//! norm weights `1 + 0.1u`, biases `0.1u`, other weights `u·√(3/fan_in)` with
//! `fan_in = numel / s[0]`; rounded to f32.

use ember_tensor::{DType, Tensor};

use crate::error::Result;
use crate::module::{Module, named_parameters};

/// The procedural value of every element of parameter `name` with `shape`.
pub fn procedural_values(name: &str, shape: &[usize]) -> Vec<f64> {
    let numel: usize = shape.iter().product();
    let phase = (name.bytes().map(|b| b as u64).sum::<u64>() % 997) as f64 * 0.01;
    let (module, last) = name.rsplit_once('.').unwrap_or(("", name));
    let module_name = module.rsplit('.').next().unwrap_or("");
    let (scale, offset) = if module_name.contains("norm") && last == "weight" {
        (0.1, 1.0)
    } else if last == "bias" {
        (0.1, 0.0)
    } else {
        ((3.0 / (numel / shape[0]) as f64).sqrt(), 0.0)
    };
    (0..numel).map(|i| ((0.61803 * i as f64 + phase).sin() * scale + offset) as f32 as f64).collect()
}

/// Overwrites every parameter of `module` with its procedural values.
pub fn fill_procedural(module: &dyn Module) -> Result<()> {
    for (name, p) in named_parameters(module) {
        let values = Tensor::from_f64(&procedural_values(&name, p.shape()), p.shape(), DType::F64)?;
        p.assign(&values.to_dtype(p.dtype())?)?;
    }
    Ok(())
}
