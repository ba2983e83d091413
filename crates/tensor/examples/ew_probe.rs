//! Throwaway probe: elementwise op costs at UNet sizes.
use ember_tensor::{DType, Tensor, rng::Rng};
use std::time::Instant;

fn best<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        b = b.min(t.elapsed().as_secs_f64());
    }
    b * 1e3
}

fn main() {
    let mut rng = Rng::new(0);
    let shape = [32, 32, 32, 32];
    let x = Tensor::rand_uniform(&shape, -1.0, 1.0, DType::F32, &mut rng).unwrap();
    let y = Tensor::rand_uniform(&shape, -1.0, 1.0, DType::F32, &mut rng).unwrap();
    let b = Tensor::rand_uniform(&[32, 32, 1, 1], -1.0, 1.0, DType::F32, &mut rng).unwrap();
    let c = Tensor::rand_uniform(&[32, 1, 1], -1.0, 1.0, DType::F32, &mut rng).unwrap();
    let n = x.numel() as f64;
    if std::env::args().nth(1).as_deref() == Some("dropout") {
        for _ in 0..300 {
            std::hint::black_box(Tensor::dropout_mask_on(&shape, 0.1, DType::F32, ember_tensor::Device::Cpu, &mut rng).unwrap());
        }
        return;
    }
    let report = |name: &str, ms: f64| println!("{name:<36} {ms:8.3} ms  {:6.2} ns/elem", ms * 1e6 / n);
    report("add same shape", best(10, || { std::hint::black_box(x.add(&y).unwrap()); }));
    report("mul same shape", best(10, || { std::hint::black_box(x.mul(&y).unwrap()); }));
    report("add [N,C,1,1] broadcast", best(10, || { std::hint::black_box(x.add(&b).unwrap()); }));
    report("add [C,1,1] broadcast", best(10, || { std::hint::black_box(x.add(&c).unwrap()); }));
    report("silu", best(10, || { std::hint::black_box(x.silu().unwrap()); }));
    report("dropout_mask", best(10, || { std::hint::black_box(Tensor::dropout_mask_on(&shape, 0.1, DType::F32, ember_tensor::Device::Cpu, &mut rng).unwrap()); }));
    report("dropout (train)", best(10, || { std::hint::black_box(x.dropout(0.1, true, &mut rng).unwrap()); }));
    report("contiguous of permuted", best(10, || { std::hint::black_box(x.permute(&[0, 2, 3, 1]).unwrap().contiguous().unwrap()); }));
    report("sum over N,H,W", best(10, || { std::hint::black_box(x.sum(&[0, 2, 3], false).unwrap()); }));
    report("sum over H,W keepdim", best(10, || { std::hint::black_box(x.sum(&[2, 3], true).unwrap()); }));
    report("cat on C", best(10, || { std::hint::black_box(Tensor::cat(&[&x, &y], 1).unwrap()); }));
    report("group_norm_silu", best(10, || { std::hint::black_box(x.group_norm_silu(8, None, None, 1e-6).unwrap()); }));
}
