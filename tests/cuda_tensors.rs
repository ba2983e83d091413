//! Tensors on a CUDA device (the emulator in CI, a GPU when one is lent): moving between
//! devices, ops dispatching on their inputs' device, autograd through the CUDA kernels, and
//! the typed errors for mixing devices or an op without a CUDA kernel yet.
//!
//! The gradients computed on the device are checked against the CPU's, which are themselves
//! proven by f64 finite differences (tests/ops_*.rs).
#![cfg(feature = "cuda-emu")]

use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Device, Tensor, TensorError};

const GPU: Device = Device::Cuda(0);

fn random(shape: &[usize], seed: u64) -> Tensor {
    ember::tensor::testing::random(shape, -1.5, 1.5, seed).to_dtype(DType::F32).unwrap()
}

fn assert_close(gpu: &Tensor, cpu: &Tensor, what: &str) {
    assert_eq!(gpu.device(), GPU, "{what}: not on the device");
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shape");
    let error = relative_error(&gpu.to_vec_f64(), &cpu.to_vec_f64());
    assert!(error < 1e-5, "{what}: relative error {error:e}");
}

#[test]
fn tensors_move_to_the_device_and_back() {
    // which device this file proves (printed with `--show-output`, as scripts/gpu_check.sh runs it)
    println!("Device::Cuda(0) is {}", ember::tensor::cuda::GpuBackend::describe(&*ember::tensor::cuda::device(0).unwrap()));
    let x = random(&[4, 5, 6], 1);
    let view = x.permute(&[2, 0, 1]).unwrap().narrow(1, 1, 2).unwrap();
    let on_gpu = view.to_device(GPU).unwrap();
    assert_eq!(on_gpu.device(), GPU);
    assert_eq!(on_gpu.to_vec::<f32>().unwrap(), view.to_vec::<f32>().unwrap());
    assert_eq!(on_gpu.to_device(Device::Cpu).unwrap().to_vec_f64(), view.to_vec_f64());
    // Storage-only dtypes travel too.
    let half = x.to_dtype(DType::F16).unwrap();
    assert_eq!(half.to_device(GPU).unwrap().to_vec_f64(), half.to_vec_f64());
    // from_vec straight onto the device.
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], GPU).unwrap();
    assert_eq!(t.device(), GPU);
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
}

#[test]
fn ops_on_device_inputs_run_on_the_device() {
    let a = random(&[3, 4, 5], 2);
    let b = random(&[4, 1], 3);
    let m = random(&[3, 5, 7], 4);
    let (ga, gb, gm) = (a.to_device(GPU).unwrap(), b.to_device(GPU).unwrap(), m.to_device(GPU).unwrap());
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor>)> = vec![
        ("silu", Box::new(|a, _, _| a.silu().unwrap())),
        ("exp of a transposed view", Box::new(|a, _, _| a.transpose(0, 2).unwrap().exp().unwrap())),
        ("broadcast add", Box::new(|a, b, _| a.add(b).unwrap())),
        ("broadcast div", Box::new(|a, b, _| a.div(&b.affine(1.0, 2.0).unwrap()).unwrap())),
        ("sum over axes", Box::new(|a, _, _| a.sum(&[0, 2], false).unwrap())),
        ("mean", Box::new(|a, _, _| a.mean_all().unwrap())),
        ("batched matmul", Box::new(|a, _, m| a.matmul(m).unwrap())),
        ("matmul with a broadcast batch", Box::new(|a, _, m| a.matmul(&m.narrow(0, 1, 1).unwrap()).unwrap())),
        ("matmul of transposed views", Box::new(|a, _, m| m.transpose(1, 2).unwrap().matmul(&a.transpose(1, 2).unwrap()).unwrap())),
        ("softmax", Box::new(|a, _, _| a.softmax(1).unwrap())),
        ("log_softmax", Box::new(|a, _, _| a.log_softmax(-1).unwrap())),
        ("cat", Box::new(|a, _, _| Tensor::cat(&[a, &a.exp().unwrap()], 1).unwrap())),
        ("pad", Box::new(|a, _, _| a.pad(&[(0, 1), (2, 0), (1, 1)], 0.5).unwrap())),
        ("contiguous", Box::new(|a, _, _| a.permute(&[2, 0, 1]).unwrap().contiguous().unwrap())),
        ("max", Box::new(|a, _, _| a.max(&[1], false).unwrap())),
        ("var", Box::new(|a, _, _| a.var(&[2], true, 1).unwrap())),
        ("layer_norm", Box::new(|a, _, _| a.layer_norm(&[5], None, None, 1e-5).unwrap())),
        ("mse_loss", Box::new(|a, _, _| a.mse_loss(&a.exp().unwrap()).unwrap())),
        ("upsample_nearest2d", Box::new(|a, _, _| a.reshape(&[1, 3, 4, 5]).unwrap().upsample_nearest2d(2).unwrap())),
    ];
    for (what, f) in cases {
        assert_close(&f(&ga, &gb, &gm), &f(&a, &b, &m), what);
    }
}

/// A two-layer network with a log-softmax loss: every op of it runs on the device.
fn mlp_loss(x: &Tensor, w1: &Tensor, b1: &Tensor, w2: &Tensor, target: &Tensor) -> Tensor {
    let hidden = x.matmul(w1).unwrap().add(b1).unwrap().silu().unwrap();
    let logits = hidden.matmul(w2).unwrap();
    logits.log_softmax(-1).unwrap().mul(target).unwrap().sum_all().unwrap().neg().unwrap()
}

#[test]
fn autograd_through_device_ops_matches_the_cpu() {
    let x = random(&[6, 7], 5);
    let (w1, b1, w2) = (random(&[7, 9], 6).variable(), random(&[9], 7).variable(), random(&[9, 3], 8).variable());
    let target = Tensor::from_vec((0..18).map(|i| if i % 3 == i / 3 % 3 { 1.0f32 } else { 0.0 }).collect(), &[6, 3], Device::Cpu).unwrap();

    let cpu_loss = mlp_loss(&x, &w1, &b1, &w2, &target);
    let cpu_grads = cpu_loss.backward().unwrap();

    let on = |t: &Tensor| t.to_device(GPU).unwrap().detach().variable();
    let (gw1, gb1, gw2) = (on(&w1), on(&b1), on(&w2));
    let gpu_loss = mlp_loss(&x.to_device(GPU).unwrap(), &gw1, &gb1, &gw2, &target.to_device(GPU).unwrap());
    assert_close(&gpu_loss, &cpu_loss, "loss");
    let gpu_grads = gpu_loss.backward().unwrap();
    for (name, gpu, cpu) in [("w1", &gw1, &w1), ("b1", &gb1, &b1), ("w2", &gw2, &w2)] {
        assert_close(gpu_grads.get(gpu).unwrap(), cpu_grads.get(cpu).unwrap(), &format!("grad of {name}"));
    }

    // A CPU variable moved to the device gets its gradient back on the CPU.
    let w = random(&[7, 9], 9).variable();
    let loss = x.to_device(GPU).unwrap().matmul(&w.to_device(GPU).unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(grads.get(&w).unwrap().device(), Device::Cpu);
}

#[test]
fn convolutions_and_their_gradients_on_the_device_match_the_cpu() {
    use ember::tensor::ops::conv::{Conv2dParams, ConvTranspose2dParams};
    let x = random(&[2, 3, 9, 8], 20);
    let w = random(&[5, 3, 3, 3], 21);
    let b = random(&[5], 22);
    let wt = random(&[3, 4, 4, 4], 23);
    let run = |x: &Tensor, w: &Tensor, b: &Tensor, wt: &Tensor| {
        let params = Conv2dParams { stride: [2, 2], padding: [1, 1], dilation: [1, 1] };
        let y = x.conv2d(w, Some(b), params).unwrap();
        let up = x.conv_transpose2d(wt, None, ConvTranspose2dParams::new(2, 1, 0)).unwrap();
        y.sqr().unwrap().sum_all().unwrap().add(&up.sum_all().unwrap()).unwrap()
    };
    let vars = [&x, &w, &b, &wt].map(|t| t.variable());
    let cpu_loss = run(&vars[0], &vars[1], &vars[2], &vars[3]);
    let cpu_grads = cpu_loss.backward().unwrap();
    let gpu_vars = [&x, &w, &b, &wt].map(|t| t.to_device(GPU).unwrap().variable());
    let gpu_loss = run(&gpu_vars[0], &gpu_vars[1], &gpu_vars[2], &gpu_vars[3]);
    assert_close(&gpu_loss, &cpu_loss, "conv loss");
    let gpu_grads = gpu_loss.backward().unwrap();
    for (name, (gpu, cpu)) in ["x", "w", "b", "w_transposed"].iter().zip(gpu_vars.iter().zip(&vars)) {
        assert_close(gpu_grads.get(gpu).unwrap(), cpu_grads.get(cpu).unwrap(), &format!("grad of {name}"));
    }
}

#[test]
fn group_norm_and_attention_gradients_on_the_device_match_the_cpu() {
    // The UNet's blocks in small: group norm + SiLU (fused on the device), q/k/v projections,
    // fused attention.
    let x = random(&[2, 8, 4, 5], 30);
    let (gamma, beta) = (random(&[8], 31), random(&[8], 32));
    let (wq, wk, wv) = (random(&[8, 8], 33), random(&[8, 8], 34), random(&[8, 8], 35));
    let run = |t: &[Tensor]| {
        let [x, gamma, beta, wq, wk, wv] = [&t[0], &t[1], &t[2], &t[3], &t[4], &t[5]];
        let h = x.group_norm_silu(4, Some(gamma), Some(beta), 1e-5).unwrap();
        let tokens = h.reshape(&[2, 8, 20]).unwrap().transpose(1, 2).unwrap(); // [2, 20, 8]
        let (q, k, v) = (tokens.matmul(wq).unwrap(), tokens.matmul(wk).unwrap(), tokens.matmul(wv).unwrap());
        let split = |t: Tensor| t.reshape(&[2, 20, 2, 4]).unwrap().transpose(1, 2).unwrap(); // 2 heads
        let a = Tensor::scaled_dot_product_attention(&split(q), &split(k), &split(v), None).unwrap();
        a.sqr().unwrap().sum_all().unwrap()
    };
    let cpu: Vec<Tensor> = [&x, &gamma, &beta, &wq, &wk, &wv].iter().map(|t| t.variable()).collect();
    let gpu: Vec<Tensor> = [&x, &gamma, &beta, &wq, &wk, &wv].iter().map(|t| t.to_device(GPU).unwrap().variable()).collect();
    let (cpu_loss, gpu_loss) = (run(&cpu), run(&gpu));
    assert_close(&gpu_loss, &cpu_loss, "attention block loss");
    let (cpu_grads, gpu_grads) = (cpu_loss.backward().unwrap(), gpu_loss.backward().unwrap());
    for (i, name) in ["x", "gamma", "beta", "wq", "wk", "wv"].iter().enumerate() {
        assert_close(gpu_grads.get(&gpu[i]).unwrap(), cpu_grads.get(&cpu[i]).unwrap(), &format!("grad of {name}"));
    }
}

#[test]
fn mixing_devices_and_dtypes_without_kernels_are_typed_errors() {
    let cpu = random(&[2, 3], 10);
    let gpu = cpu.to_device(GPU).unwrap();
    assert!(matches!(cpu.add(&gpu), Err(TensorError::DeviceMismatch { .. })));
    assert!(matches!(gpu.matmul(&cpu.transpose(0, 1).unwrap()), Err(TensorError::DeviceMismatch { .. })));
    // f64 may live on the device, but the kernels are f32.
    let wide = ember::tensor::testing::random(&[3], 0.0, 1.0, 13).to_device(GPU).unwrap();
    assert!(matches!(wide.exp(), Err(TensorError::UnsupportedDType { .. })));
}

#[test]
fn the_device_draws_the_same_random_streams_as_the_cpu() {
    use ember::tensor::rng::Rng;
    for n in [1, 7, 1000] {
        let (mut cpu_rng, mut gpu_rng) = (Rng::new(42), Rng::new(42));
        let cpu = Tensor::rand_uniform(&[n], 0.0, 1.0, DType::F32, &mut cpu_rng).unwrap();
        let gpu = Tensor::rand_uniform_on(&[n], 0.0, 1.0, DType::F32, GPU, &mut gpu_rng).unwrap();
        assert_eq!(gpu.device(), GPU);
        assert_eq!(gpu.to_vec::<f32>().unwrap(), cpu.to_vec::<f32>().unwrap(), "uniform, n = {n}");
        // The two streams advanced alike: the next draw (normal, shifted) agrees too.
        let cpu = Tensor::randn(&[n], 0.5, 2.0, DType::F32, &mut cpu_rng);
        let gpu = Tensor::randn_on(&[n], 0.5, 2.0, DType::F32, GPU, &mut gpu_rng).unwrap();
        assert_close(&gpu, &cpu, &format!("normal, n = {n}"));
        assert_eq!(cpu_rng, gpu_rng);
    }
}

#[test]
fn dropout_masks_and_ema_updates_on_the_device_equal_the_cpu() {
    use ember::tensor::optim::ema_update;
    use ember::tensor::rng::Rng;
    let x = random(&[3, 50], 40);
    let cpu = x.dropout(0.3, true, &mut Rng::new(8)).unwrap();
    let gpu = x.to_device(GPU).unwrap().dropout(0.3, true, &mut Rng::new(8)).unwrap();
    assert_eq!(gpu.to_vec::<f32>().unwrap(), cpu.to_vec::<f32>().unwrap(), "dropout");
    let zeros = cpu.to_vec::<f32>().unwrap().iter().filter(|&&v| v == 0.0).count();
    assert!(zeros > 20 && zeros < 80, "{zeros} of 150 dropped at p = 0.3");

    let (ema, param) = (random(&[7, 9], 41), random(&[7, 9], 42));
    let (ema_gpu, param_gpu) = (ema.to_device(GPU).unwrap(), param.to_device(GPU).unwrap());
    ema_update(&ema, &param, 0.999).unwrap();
    ema_update(&ema_gpu, &param_gpu, 0.999).unwrap();
    assert_eq!(ema_gpu.to_vec::<f32>().unwrap(), ema.to_vec::<f32>().unwrap(), "ema");
}

#[test]
fn sgd_with_momentum_on_the_device_follows_the_cpu() {
    use ember::tensor::Gradients;
    use ember::tensor::optim::{Sgd, SgdConfig};
    let config = SgdConfig { momentum: 0.9, dampening: 0.1, weight_decay: 0.01, nesterov: true, ..SgdConfig::new(0.05) };
    let (p0, g) = (random(&[4, 6], 50), random(&[4, 6], 51));
    let cpu = p0.deep_copy().unwrap().variable();
    let gpu = p0.to_device(GPU).unwrap().variable();
    let (mut cpu_sgd, mut gpu_sgd) = (Sgd::new(vec![cpu.clone()], config).unwrap(), Sgd::new(vec![gpu.clone()], config).unwrap());
    for _ in 0..3 {
        let (mut cpu_grads, mut gpu_grads) = (Gradients::default(), Gradients::default());
        cpu_grads.insert(&cpu, g.clone());
        gpu_grads.insert(&gpu, g.to_device(GPU).unwrap());
        cpu_sgd.step(&cpu_grads).unwrap();
        gpu_sgd.step(&gpu_grads).unwrap();
    }
    assert_close(&gpu, &cpu, "sgd after three steps");
}

#[test]
fn index_select_and_its_gradient_on_the_device_match_the_cpu() {
    let table = random(&[5, 3, 4], 60);
    let indices = [4, 0, 4, 2, 4]; // repeats: the backward sums them
    let run = |t: &Tensor| t.index_select(0, &indices).unwrap().index_select(2, &[3, 1]).unwrap().sqr().unwrap().sum_all().unwrap();
    let (cpu, gpu) = (table.variable(), table.to_device(GPU).unwrap().variable());
    let (cpu_loss, gpu_loss) = (run(&cpu), run(&gpu));
    assert_close(&gpu_loss, &cpu_loss, "index_select loss");
    let (cpu_grads, gpu_grads) = (cpu_loss.backward().unwrap(), gpu_loss.backward().unwrap());
    assert_close(gpu_grads.get(&gpu).unwrap(), cpu_grads.get(&cpu).unwrap(), "index_select gradient");
    assert!(matches!(gpu.index_select(1, &[3]), Err(TensorError::InvalidArgument { .. })));
}

#[test]
fn upsampling_and_its_gradient_on_the_device_match_the_cpu() {
    let x = random(&[2, 3, 5, 4], 70);
    for scale in [1, 2, 3] {
        let run = |t: &Tensor| t.upsample_nearest2d(scale).unwrap().sqr().unwrap().sum_all().unwrap();
        let (cpu, gpu) = (x.variable(), x.to_device(GPU).unwrap().variable());
        assert_close(&gpu.upsample_nearest2d(scale).unwrap(), &cpu.upsample_nearest2d(scale).unwrap(), "upsample");
        let (cpu_loss, gpu_loss) = (run(&cpu), run(&gpu));
        let (cpu_grads, gpu_grads) = (cpu_loss.backward().unwrap(), gpu_loss.backward().unwrap());
        assert_close(gpu_grads.get(&gpu).unwrap(), cpu_grads.get(&cpu).unwrap(), &format!("upsample gradient, scale {scale}"));
    }
}

/// The optimizer's list kernels (one launch for many tensors, cut into chunks of 8192):
/// the global gradient norm, Adam with the clipping factor folded into its update, and the
/// EMA, on tensors of odd sizes, empty, and sizes around the chunk length, against the CPU.
#[test]
fn the_optimizers_list_kernels_on_the_device_follow_the_cpu() {
    use ember::tensor::optim::{Adam, AdamConfig, ema_update_all};
    use ember::tensor::{Gradients, clip_factor};
    let shapes: [&[usize]; 7] = [&[3], &[0], &[7, 9], &[8192 + 5], &[2, 8192], &[1], &[3, 4100]];
    let values: Vec<Tensor> = shapes.iter().enumerate().map(|(i, s)| random(s, 70 + i as u64)).collect();
    let grads_of = |seed: u64| -> Vec<Tensor> { shapes.iter().enumerate().map(|(i, s)| random(s, seed + i as u64)).collect() };

    // the global norm: one launch over all gradients, against an f64 sum
    let (cpu_params, gpu_params): (Vec<Tensor>, Vec<Tensor>) =
        values.iter().map(|v| (v.deep_copy().unwrap().variable(), v.to_device(GPU).unwrap().variable())).unzip();
    let fill = |params: &[Tensor], grads: &[Tensor], device: Device, skip: Option<usize>| {
        let mut g = Gradients::default();
        for (i, (p, grad)) in params.iter().zip(grads).enumerate() {
            if Some(i) != skip {
                g.insert(p, grad.to_device(device).unwrap());
            }
        }
        g
    };
    let first = grads_of(100);
    let expected = first.iter().flat_map(|g| g.to_vec_f64()).map(|x| x * x).sum::<f64>().sqrt();
    let gpu_norm = fill(&gpu_params, &first, GPU, None).global_norm().unwrap();
    let cpu_norm = fill(&cpu_params, &first, Device::Cpu, None).global_norm().unwrap();
    assert!(((gpu_norm - expected) / expected).abs() < 1e-6, "device norm {gpu_norm} vs {expected}");
    assert!(((cpu_norm - expected) / expected).abs() < 1e-6, "cpu norm {cpu_norm} vs {expected}");
    assert_eq!(fill(&gpu_params, &first, GPU, None).global_norm().unwrap(), gpu_norm, "the norm repeats bit for bit");
    assert_eq!(Gradients::default().global_norm().unwrap(), 0.0);

    // Adam with a clipping factor on both devices; on step 2 one parameter has no gradient,
    // so on step 3 the parameters hold two step counts (two launches)
    let config = AdamConfig::adamw(1e-2, 0.01);
    let mut cpu_adam = Adam::new(cpu_params.clone(), config).unwrap();
    let mut gpu_adam = Adam::new(gpu_params.clone(), config).unwrap();
    let reference: Vec<Tensor> = values.iter().map(|v| v.deep_copy().unwrap().variable()).collect();
    let mut reference_adam = Adam::new(reference.clone(), config).unwrap();
    for (step, skip) in [(0u64, None), (1, Some(2)), (2, None)] {
        let grads = grads_of(200 + 10 * step);
        let scale = clip_factor(gpu_norm, 0.5 * gpu_norm);
        assert!(scale < 0.51 && scale > 0.49);
        cpu_adam.step_with_grad_scale(&fill(&cpu_params, &grads, Device::Cpu, skip), scale).unwrap();
        gpu_adam.step_with_grad_scale(&fill(&gpu_params, &grads, GPU, skip), scale).unwrap();
        // the folded factor is exactly clipping's: the gradients scaled, then a plain step
        let mut scaled = fill(&reference, &grads, Device::Cpu, skip);
        scaled.scale(scale).unwrap();
        reference_adam.step(&scaled).unwrap();
    }
    for (i, ((cpu, gpu), reference)) in cpu_params.iter().zip(&gpu_params).zip(&reference).enumerate() {
        assert_eq!(cpu.to_vec::<f32>().unwrap(), reference.to_vec::<f32>().unwrap(), "tensor {i}: folded factor vs scaled gradients");
        if cpu.numel() > 0 {
            assert_close(gpu, cpu, &format!("tensor {i} after three Adam steps"));
        }
    }
    let steps: Vec<u64> = gpu_adam.state().iter().map(|s| s.step).collect();
    assert_eq!(steps, vec![3, 3, 2, 3, 3, 3, 3]);
    assert_eq!(steps, cpu_adam.state().iter().map(|s| s.step).collect::<Vec<_>>());
    for (cpu, gpu) in cpu_adam.state().iter().zip(gpu_adam.state()) {
        if cpu.exp_avg.numel() > 0 {
            assert_close(&gpu.exp_avg, &cpu.exp_avg, "m");
            assert_close(&gpu.exp_avg_sq, &cpu.exp_avg_sq, "v");
        }
    }

    // the EMA of every pair in one launch: the same f32 arithmetic as the CPU, exactly
    let cpu_ema: Vec<Tensor> = grads_of(300);
    let gpu_ema: Vec<Tensor> = cpu_ema.iter().map(|e| e.to_device(GPU).unwrap()).collect();
    let on_gpu: Vec<Tensor> = values.iter().map(|v| v.to_device(GPU).unwrap()).collect();
    ema_update_all(&cpu_ema.iter().zip(&values).collect::<Vec<_>>(), 0.97).unwrap();
    ema_update_all(&gpu_ema.iter().zip(&on_gpu).collect::<Vec<_>>(), 0.97).unwrap();
    for (cpu, gpu) in cpu_ema.iter().zip(&gpu_ema) {
        assert_eq!(gpu.to_vec::<f32>().unwrap(), cpu.to_vec::<f32>().unwrap(), "ema");
    }
    // a pair that does not match is refused before anything is updated
    let before = gpu_ema[0].to_vec::<f32>().unwrap();
    let mismatched = [(&gpu_ema[0], &gpu_params[0]), (&gpu_ema[2], &gpu_params[3])];
    assert!(matches!(ema_update_all(&mismatched, 0.5), Err(TensorError::ShapeMismatch { .. })));
    assert_eq!(gpu_ema[0].to_vec::<f32>().unwrap(), before);
}
