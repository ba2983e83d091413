//! The basic layers, holding their parameters in PyTorch's layouts and names.

use ember_tensor::ops::conv::{Conv2dParams, ConvTranspose2dParams};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};

use crate::error::Result;
use crate::module::{Module, join, uniform_fan_in};

/// `y = x·Wᵀ + b` over the last axis; `weight [out, in]`, `bias [out]` (absent in a layer made
/// by [`Linear::without_bias`], as diffusers' attention projections `to_q`, `to_k`, `to_v`).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(in_features: usize, out_features: usize, dtype: DType, rng: &mut Rng) -> Result<Linear> {
        let weight = uniform_fan_in(&[out_features, in_features], in_features, dtype, rng)?;
        Ok(Linear { weight, bias: Some(uniform_fan_in(&[out_features], in_features, dtype, rng)?) })
    }

    /// `y = x·Wᵀ` (PyTorch's `nn.Linear(.., bias=False)`).
    pub fn without_bias(in_features: usize, out_features: usize, dtype: DType, rng: &mut Rng) -> Result<Linear> {
        Ok(Linear { weight: uniform_fan_in(&[out_features, in_features], in_features, dtype, rng)?, bias: None })
    }

    /// `x [..., in] → [..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_features = self.weight.shape()[1];
        if x.shape().last() != Some(&in_features) {
            return Err(ember_tensor::TensorError::ShapeMismatch { op: "Linear", lhs: x.shape().to_vec(), rhs: self.weight.shape().to_vec() }.into());
        }
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("rank ≥ 1, checked") = self.weight.shape()[0];
        let rows = x.reshape(&[x.numel() / in_features.max(1), in_features])?;
        let product = rows.matmul(&self.weight.transpose(0, 1)?)?;
        let y = match &self.bias {
            Some(bias) => product.add(bias)?,
            None => product,
        };
        Ok(y.reshape(&out_shape)?)
    }
}

impl Module for Linear {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        if let Some(bias) = &self.bias {
            f(join(prefix, "bias"), bias);
        }
    }
}

/// A 2-D convolution with bias; `weight [out, in, k, k]`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub params: Conv2dParams,
}

impl Conv2d {
    pub fn new(c_in: usize, c_out: usize, kernel: usize, params: Conv2dParams, dtype: DType, rng: &mut Rng) -> Result<Conv2d> {
        let fan_in = c_in * kernel * kernel;
        Ok(Conv2d { weight: uniform_fan_in(&[c_out, c_in, kernel, kernel], fan_in, dtype, rng)?, bias: uniform_fan_in(&[c_out], fan_in, dtype, rng)?, params })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.conv2d(&self.weight, Some(&self.bias), self.params)?)
    }
}

impl Module for Conv2d {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        f(join(prefix, "bias"), &self.bias);
    }
}

/// A 2-D transposed convolution with bias; `weight [in, out, k, k]` (PyTorch's layout).
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub params: ConvTranspose2dParams,
}

impl ConvTranspose2d {
    pub fn new(c_in: usize, c_out: usize, kernel: usize, params: ConvTranspose2dParams, dtype: DType, rng: &mut Rng) -> Result<Self> {
        // PyTorch computes fan_in from weight.size(1) * k * k for transposed convs
        let fan_in = c_out * kernel * kernel;
        Ok(ConvTranspose2d {
            weight: uniform_fan_in(&[c_in, c_out, kernel, kernel], fan_in, dtype, rng)?,
            bias: uniform_fan_in(&[c_out], fan_in, dtype, rng)?,
            params,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.conv_transpose2d(&self.weight, Some(&self.bias), self.params)?)
    }
}

impl Module for ConvTranspose2d {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        f(join(prefix, "bias"), &self.bias);
    }
}

/// Group normalization with a per-channel affine (weight 1, bias 0 at init).
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub num_groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(num_groups: usize, channels: usize, eps: f64, dtype: DType) -> GroupNorm {
        GroupNorm { weight: Tensor::ones(&[channels], dtype).variable(), bias: Tensor::zeros(&[channels], dtype).variable(), num_groups, eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.group_norm(self.num_groups, Some(&self.weight), Some(&self.bias), self.eps)?)
    }

    /// `silu(forward(x))`, fused on a CUDA device ([`Tensor::group_norm_silu`]).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.group_norm_silu(self.num_groups, Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}

impl Module for GroupNorm {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        f(join(prefix, "bias"), &self.bias);
    }
}

/// Layer normalization over the last axis with a per-feature affine (PyTorch's `nn.LayerNorm`,
/// weight 1 and bias 0 at init).
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(features: usize, eps: f64, dtype: DType) -> LayerNorm {
        LayerNorm { weight: Tensor::ones(&[features], dtype).variable(), bias: Tensor::zeros(&[features], dtype).variable(), eps }
    }

    /// `x [..., features]` standardized over its last axis, then scaled and shifted.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.layer_norm(self.weight.shape(), Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}

impl Module for LayerNorm {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        f(join(prefix, "bias"), &self.bias);
    }
}
