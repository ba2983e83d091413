//! The engine end to end in one page: a two-layer MLP learns y = sin(3x) on [-1, 1] with
//! Adam, printing the loss as it falls. Run: `cargo run --release --example fit_sine`.

use ember::tensor::optim::{Adam, AdamConfig};
use ember::tensor::rng::Rng;
use ember::tensor::{DType, Result, Tensor};

fn main() -> Result<()> {
    let mut rng = Rng::new(0);
    let hidden = 64;
    // PyTorch's default Linear init: U(−1/√fan_in, 1/√fan_in)
    let w1 = Tensor::rand_uniform(&[1, hidden], -1.0, 1.0, DType::F32, &mut rng)?.variable();
    let b1 = Tensor::rand_uniform(&[hidden], -1.0, 1.0, DType::F32, &mut rng)?.variable();
    let bound = 1.0 / (hidden as f64).sqrt();
    let w2 = Tensor::rand_uniform(&[hidden, 1], -bound, bound, DType::F32, &mut rng)?.variable();
    let b2 = Tensor::rand_uniform(&[1], -bound, bound, DType::F32, &mut rng)?.variable();
    let mut adam = Adam::new(vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()], AdamConfig::adam(1e-2))?;

    for step in 0..=1000 {
        let x = Tensor::rand_uniform(&[256, 1], -1.0, 1.0, DType::F32, &mut rng)?;
        let y = x.mul_scalar(3.0)?.sin()?;
        let prediction = x.matmul(&w1)?.add(&b1)?.silu()?.matmul(&w2)?.add(&b2)?;
        let loss = prediction.mse_loss(&y)?;
        let grads = loss.backward()?;
        adam.step(&grads)?;
        if step % 100 == 0 {
            println!("step {step:>4}  loss {:.6}", loss.item()?);
        }
    }
    Ok(())
}
