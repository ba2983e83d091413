//! The whole chain on a CUDA device (the emulator in CI, a GPU when one is lent): one
//! training step of the tiny UNet, loss and every parameter's gradient, equals the same step
//! on the CPU to 1e-4 relative, and the device's Adam update equals the CPU's Adam applied to
//! the device's gradients.
#![cfg(feature = "cuda-emu")]

use ember::diffusion::loss::epsilon_loss_with;
use ember::diffusion::schedule::NoiseSchedule;
use ember::tensor::optim::{Adam, AdamConfig};
use ember::tensor::rng::Rng;
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Device, Gradients, Tensor};
use ember::unet::module::{ForwardContext, named_parameters, to_device};
use ember::unet::{UNet, UNetConfig};

const GPU: Device = Device::Cuda(0);

type Named = Vec<(String, Vec<f64>)>;

/// Loss, gradients (by parameter name), and parameters before and after one Adam step.
fn train_step(model: &UNet, x0: &Tensor, noise: &Tensor, t: &[usize]) -> (f64, Named, Named, Named) {
    let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let mut dropout = Rng::new(11);
    let mut predict = |x: &Tensor, t: &[f64]| model.forward(x, t, &mut ForwardContext { training: true, rng: &mut dropout });
    let loss = epsilon_loss_with(&mut predict, &schedule, x0, t, noise).unwrap();
    let grads = loss.backward().unwrap();
    let params = named_parameters(model);
    let before = params.iter().map(|(name, p)| (name.clone(), p.to_vec_f64())).collect();
    let grad_values = params.iter().map(|(name, p)| (name.clone(), grads.get(p).unwrap().to_vec_f64())).collect();
    let mut adam = Adam::new(params.iter().map(|(_, p)| p.clone()).collect(), AdamConfig::adam(1e-3)).unwrap();
    adam.step(&grads).unwrap();
    let updated = named_parameters(model).iter().map(|(name, p)| (name.clone(), p.to_vec_f64())).collect();
    (loss.item().unwrap(), grad_values, before, updated)
}

#[test]
fn a_tiny_unet_training_step_on_the_device_equals_the_cpu_step() {
    // which device this proves (printed with `--show-output`, as scripts/gpu_check.sh runs it)
    println!("Device::Cuda(0) is {}", ember::tensor::cuda::GpuBackend::describe(&*ember::tensor::cuda::device(0).unwrap()));
    let config = UNetConfig::tiny(1);
    let cpu_model = UNet::new(&config, DType::F32, &mut Rng::new(5)).unwrap();
    let gpu_model = UNet::new(&config, DType::F32, &mut Rng::new(5)).unwrap();
    to_device(&gpu_model, GPU).unwrap();
    assert!(named_parameters(&gpu_model).iter().all(|(_, p)| p.device() == GPU));

    let mut rng = Rng::new(9);
    let x0 = Tensor::rand_uniform(&[1, 1, 32, 32], -1.0, 1.0, DType::F32, &mut rng).unwrap();
    let noise = Tensor::randn(&[1, 1, 32, 32], 0.0, 1.0, DType::F32, &mut rng);
    let t = [420];

    let (cpu_loss, cpu_grads, _, _) = train_step(&cpu_model, &x0, &noise, &t);
    let (gpu_loss, gpu_grads, gpu_before, gpu_after) = train_step(&gpu_model, &x0.to_device(GPU).unwrap(), &noise.to_device(GPU).unwrap(), &t);
    let loss_error = (gpu_loss - cpu_loss).abs() / cpu_loss.abs();
    assert!(loss_error < 1e-4, "loss {gpu_loss} vs {cpu_loss}");
    // Some gradients are zero in exact arithmetic (the key projection's bias: softmax ignores
    // a constant added to a row of scores), so both sides hold rounding noise there; they are
    // compared against a thousandth of the largest gradient instead of their own size.
    let largest = cpu_grads.iter().flat_map(|(_, g)| g.iter()).fold(0.0f64, |m, v| m.max(v.abs()));
    for ((name, gpu), (_, cpu)) in gpu_grads.iter().zip(&cpu_grads) {
        let scale = cpu.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3 * largest);
        let error = gpu.iter().zip(cpu).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(error < 1e-4, "gradient of {name}: relative error {error:e}");
    }

    // Adam's first step is lr·g/(|g| + eps): elements whose gradient is rounding noise move by
    // ±lr either way, so the update is checked against the CPU's Adam on the same gradients.
    let as_tensor = |values: &[f64], like: &[usize]| Tensor::from_f64(values, like, DType::F32).unwrap();
    let shapes: Vec<Vec<usize>> = named_parameters(&cpu_model).iter().map(|(_, p)| p.shape().to_vec()).collect();
    let params: Vec<Tensor> = gpu_before.iter().zip(&shapes).map(|((_, v), s)| as_tensor(v, s).variable()).collect();
    let mut grads = Gradients::default();
    for ((p, (_, g)), s) in params.iter().zip(&gpu_grads).zip(&shapes) {
        grads.insert(p, as_tensor(g, s));
    }
    Adam::new(params.clone(), AdamConfig::adam(1e-3)).unwrap().step(&grads).unwrap();
    for ((name, gpu), cpu) in gpu_after.iter().zip(&params) {
        let error = relative_error(gpu, &cpu.to_vec_f64());
        assert!(error < 1e-5, "{name} after the Adam step: relative error {error:e}");
    }
}

/// The same step with the device's matrix products on tensor cores (`--precision tf32` and
/// `bf16`): every convolution, matmul and attention product with its inputs rounded to TF32
/// (10 stored mantissa bits) or bf16 (7). The loss and every gradient stay near the CPU's f32 step
/// (bounds: 2e-3 and 3e-2 in TF32, 1e-2 and 1e-1 in bf16, relative to each gradient's
/// largest entry), and they differ from it by more than f32's rounding (so the rounded
/// kernels ran).
#[test]
fn a_tiny_unet_training_step_on_tensor_cores_stays_near_the_f32_step() {
    use ember::tensor::precision::{Precision, with_precision};
    let config = UNetConfig::tiny(1);
    let cpu_model = UNet::new(&config, DType::F32, &mut Rng::new(5)).unwrap();
    let mut rng = Rng::new(9);
    let x0 = Tensor::rand_uniform(&[1, 1, 32, 32], -1.0, 1.0, DType::F32, &mut rng).unwrap();
    let noise = Tensor::randn(&[1, 1, 32, 32], 0.0, 1.0, DType::F32, &mut rng);
    let t = [420];
    let (cpu_loss, cpu_grads, _, _) = train_step(&cpu_model, &x0, &noise, &t);
    let largest = cpu_grads.iter().flat_map(|(_, g)| g.iter()).fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst_by_precision = Vec::new();
    for (precision, loss_bound, gradient_bound) in [(Precision::Tf32, 2e-3, 3e-2), (Precision::Bf16, 1e-2, 1e-1)] {
        let gpu_model = UNet::new(&config, DType::F32, &mut Rng::new(5)).unwrap();
        to_device(&gpu_model, GPU).unwrap();
        let (gpu_loss, gpu_grads, _, _) = with_precision(precision, || train_step(&gpu_model, &x0.to_device(GPU).unwrap(), &noise.to_device(GPU).unwrap(), &t));
        let loss_error = (gpu_loss - cpu_loss).abs() / cpu_loss.abs();
        assert!(loss_error < loss_bound, "{precision} loss {gpu_loss} vs f32 {cpu_loss}");
        let mut worst = 0.0f64;
        for ((name, gpu), (_, cpu)) in gpu_grads.iter().zip(&cpu_grads) {
            let scale = cpu.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3 * largest);
            let error = gpu.iter().zip(cpu).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(error < gradient_bound, "{precision} gradient of {name}: relative error {error:e}");
            worst = worst.max(error);
        }
        println!("{precision}: loss {loss_error:e} from f32, worst gradient {worst:e}");
        assert!(worst > 1e-4, "the {precision} step equals the f32 step to {worst:e}: were the products rounded?");
        worst_by_precision.push(worst);
    }
    // bf16 (8 significant bits) lands farther from f32 than TF32 (11): its own kernels ran
    assert!(worst_by_precision[1] > 2.0 * worst_by_precision[0], "bf16 {:e} against TF32 {:e}", worst_by_precision[1], worst_by_precision[0]);
}

/// A small UNet (16 px, two levels, attention at the bottom) for a trainer on the device.
fn small_trainer_config() -> ember::train::trainer::TrainConfig {
    use ember::unet::config::{ATTN_DOWN_BLOCK, ATTN_UP_BLOCK, DOWN_BLOCK, UP_BLOCK};
    let unet = UNetConfig {
        sample_size: 16,
        block_out_channels: vec![16, 32],
        down_block_types: vec![DOWN_BLOCK.into(), ATTN_DOWN_BLOCK.into()],
        up_block_types: vec![ATTN_UP_BLOCK.into(), UP_BLOCK.into()],
        layers_per_block: 1,
        norm_num_groups: 4,
        ..UNetConfig::tiny(1)
    };
    ember::train::trainer::TrainConfig { unet, data: "procedural:64:16".into(), batch_size: 2, steps: 2, lr: 1e-3, warmup_steps: 0, ..Default::default() }
}

#[test]
fn the_trainer_runs_on_the_device_and_its_checkpoint_resumes_there() {
    use ember::train::checkpoint::{Checkpoint, save_checkpoint};
    use ember::train::data::{Dataset, Split};
    use ember::train::trainer::Trainer;
    let config = small_trainer_config();
    let new_trainer = || Trainer::new(config.clone(), Dataset::from_name(&config.data, Split::Train, 1).unwrap()).unwrap();
    let (mut cpu, mut gpu) = (new_trainer(), new_trainer());
    gpu.to_device(GPU).unwrap();
    let (cpu_first, gpu_first) = (cpu.train_step().unwrap(), gpu.train_step().unwrap());
    assert!((gpu_first.loss - cpu_first.loss).abs() < 1e-4 * cpu_first.loss, "{gpu_first:?} vs {cpu_first:?}");

    // A checkpoint written from the device resumes on the device, and the next step equals
    // the uninterrupted run's.
    let path = std::env::temp_dir().join(format!("ember-cuda-checkpoint-{}.safetensors", std::process::id()));
    save_checkpoint(&gpu, &path).unwrap();
    let mut resumed = Checkpoint::load(&path).unwrap().into_trainer(Dataset::from_name(&config.data, Split::Train, 1).unwrap()).unwrap();
    resumed.to_device(GPU).unwrap();
    let (next, resumed_next) = (gpu.train_step().unwrap(), resumed.train_step().unwrap());
    assert_eq!(next.loss, resumed_next.loss);
    let _ = std::fs::remove_file(&path);
}

/// The TF32 and bf16 runs' loss curves follow the f32 run's: a micro UNet (8 px, two levels,
/// attention at the bottom) trained on the device from the same start, data and noise, with
/// exact f32 products, then TF32 ones, then bf16 ones; every moving average of the rounded
/// runs' losses over a twentieth of the run (at least 5 steps) is within 5% of the f32 one's,
/// and the runs differ (the products were rounded). 25 steps by default (the emulator takes seconds a step);
/// `scripts/gpu_check.sh` runs 300 on a GPU (`EMBER_CURVE_STEPS`).
#[test]
fn tf32_and_bf16_training_runs_follow_the_f32_loss_curve() {
    use ember::tensor::precision::{Precision, with_precision};
    use ember::train::data::{Dataset, Split};
    use ember::train::trainer::Trainer;
    use ember::unet::config::{ATTN_DOWN_BLOCK, ATTN_UP_BLOCK, DOWN_BLOCK, UP_BLOCK};
    let steps = std::env::var("EMBER_CURVE_STEPS").ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(25).max(5);
    let window = (steps / 20).max(5);
    let unet = UNetConfig {
        sample_size: 8,
        block_out_channels: vec![8, 16],
        down_block_types: vec![DOWN_BLOCK.into(), ATTN_DOWN_BLOCK.into()],
        up_block_types: vec![ATTN_UP_BLOCK.into(), UP_BLOCK.into()],
        layers_per_block: 1,
        norm_num_groups: 4,
        ..UNetConfig::tiny(1)
    };
    let config = ember::train::trainer::TrainConfig {
        unet,
        data: "procedural:64:8".into(),
        batch_size: 4,
        steps: steps as u64,
        lr: 2e-3,
        warmup_steps: 0,
        ..Default::default()
    };
    let curve = |precision: Precision| {
        let mut trainer = Trainer::new(config.clone(), Dataset::from_name(&config.data, Split::Train, 1).unwrap()).unwrap();
        trainer.to_device(GPU).unwrap();
        (0..steps).map(|_| with_precision(precision, || trainer.train_step().unwrap().loss)).collect::<Vec<f64>>()
    };
    let exact = curve(Precision::F32);
    let average = |losses: &[f64], end: usize| losses[end - window..end].iter().sum::<f64>() / window as f64;
    let mut differences = Vec::new();
    for precision in [Precision::Tf32, Precision::Bf16] {
        let rounded = curve(precision);
        let largest_step_difference = exact.iter().zip(&rounded).fold(0.0f64, |m, (e, r)| m.max((r - e).abs() / e));
        assert!(largest_step_difference > 1e-6, "the {precision} run equals the f32 run to {largest_step_difference:e}: were the products rounded?");
        differences.push(largest_step_difference);
        for end in window..=steps {
            let (e, r) = (average(&exact, end), average(&rounded, end));
            if end % window == 0 {
                println!("steps {}..{end}: loss f32 {e:.4}, {precision} {r:.4} ({:+.2}%)", end - window, 100.0 * (r - e) / e);
            }
            assert!((r - e).abs() <= 0.05 * e, "steps {}..{end}: {precision} average loss {r} against f32 {e}", end - window);
        }
    }
    // bf16 (8 significant bits) drifts farther from f32 than TF32 (11): its own kernels ran
    assert!(differences[1] > 2.0 * differences[0], "bf16 {:e} against TF32 {:e}", differences[1], differences[0]);
}
