//! Proof 1 of the UNet's gradients, end to end: for random directions `v` over *all*
//! parameters of the `tiny` UNet (dropout on, with a fixed mask) plus the ε-prediction loss,
//! the central difference `(L(θ + εv) − L(θ − εv)) / 2ε` equals `∇L · v` from backward, in f64,
//! to a relative error below 1e-6.

use ember::tensor::rng::Rng;
use ember::tensor::{DType, Tensor, no_grad};
use ember::unet::module::named_parameters;
use ember::unet::{ForwardContext, UNet, UNetConfig};

/// The loss at the model's current parameters: ε-prediction MSE with fixed inputs, timesteps
/// and dropout mask (a fresh dropout stream with the same seed each call).
fn loss(model: &UNet, x_t: &Tensor, t: &[f64], noise: &Tensor) -> Tensor {
    let mut dropout = Rng::new(99);
    let prediction = model.forward(x_t, t, &mut ForwardContext { training: true, rng: &mut dropout }).unwrap();
    prediction.mse_loss(noise).unwrap()
}

#[test]
fn tiny_unet_loss_gradient_matches_directional_finite_differences_in_f64() {
    let config = UNetConfig::tiny(1);
    let model = UNet::new(&config, DType::F64, &mut Rng::new(1)).unwrap();
    let params = named_parameters(&model);
    // GroupNorm starts at weight 1, bias 0; move them so that their gradients are generic
    let mut rng = Rng::new(2);
    for (name, p) in &params {
        if name.contains("norm") {
            p.assign(&p.add(&Tensor::randn(p.shape(), 0.0, 0.1, DType::F64, &mut rng)).unwrap()).unwrap();
        }
    }
    let x_t = Tensor::randn(&[2, 1, 32, 32], 0.0, 1.0, DType::F64, &mut rng);
    let noise = Tensor::randn(&[2, 1, 32, 32], 0.0, 1.0, DType::F64, &mut rng);
    let t = [37.0, 911.0];

    let grads = loss(&model, &x_t, &t, &noise).backward().unwrap();
    assert_eq!(grads.len(), params.len(), "every parameter gets a gradient");

    // v has norm ~1300 (1.6M normal entries): a small step keeps the O(ε²) truncation error
    // far below the tolerance while the O(1e-16/ε) rounding error stays negligible
    let epsilon = 1e-7;
    for direction in 0..3 {
        let v: Vec<Tensor> = params.iter().map(|(_, p)| Tensor::randn(p.shape(), 0.0, 1.0, DType::F64, &mut rng)).collect();
        let analytic: f64 = params.iter().zip(&v).map(|((_, p), v)| grads.get(p).unwrap().mul(v).unwrap().sum_all().unwrap().item().unwrap()).sum();
        let original: Vec<Tensor> = params.iter().map(|(_, p)| p.deep_copy().unwrap()).collect();
        let _guard = no_grad();
        let shifted_loss = |sign: f64| {
            for (((_, p), v), p0) in params.iter().zip(&v).zip(&original) {
                p.assign(&p0.add(&v.mul_scalar(sign * epsilon).unwrap()).unwrap()).unwrap();
            }
            loss(&model, &x_t, &t, &noise).item().unwrap()
        };
        let numeric = (shifted_loss(1.0) - shifted_loss(-1.0)) / (2.0 * epsilon);
        for ((_, p), p0) in params.iter().zip(&original) {
            p.assign(p0).unwrap();
        }
        let relative = (numeric - analytic).abs() / analytic.abs().max(numeric.abs());
        assert!(relative < 1e-6, "direction {direction}: numeric {numeric} vs backward {analytic}, relative error {relative:.2e}");
    }
}
