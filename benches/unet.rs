//! UNet benchmarks, side by side with diffusers/PyTorch on the same machine in the same run:
//! the `tiny` training step (B32, 32×32×1), the `ddpm-cifar10` training step (B8) and its
//! inference forward (B8). Each measurement runs in a fresh process (this binary re-invoked
//! with `--case NAME`, or the Python script), so that its peak memory (VmHWM) is its own;
//! ember and PyTorch alternate, round after round, and the table shows medians.
//! Run: `cargo xtask bench` (or `cargo bench --bench unet -- [--rounds N] [--only NAME]`).
//!
//! On a GPU (`cargo bench --features cuda --bench unet -- --device cuda [--precision
//! f32|tf32|bf16]`, or `bash scripts/gpu_check.sh` on a lent machine) the cases are the
//! `ddpm-cifar10` training step and forward at batch 128 on `Device::Cuda(0)`, against
//! PyTorch eager on the same GPU, both sides in the same precision: f32 (the default, TF32 off
//! on both sides), tf32 (ember's matrix products, convolutions and attention on tensor cores
//! in TF32, `ember::tensor::precision`; PyTorch's `allow_tf32` on for cuBLAS and cuDNN) or
//! bf16 (ember's products with bf16 inputs, its tensors f32 in memory; PyTorch under bf16
//! autocast). Memory is the device's peak in use during the steps above what the model and
//! data hold (ember's caching allocator's count; PyTorch's `max_memory_allocated`). The CPU
//! computes in f32 only: `--device cpu --precision tf32|bf16` is refused (exit 2).

use std::process::Command;
use std::time::Instant;

use ember::diffusion::{NoiseSchedule, epsilon_loss};
use ember::tensor::optim::{Adam, AdamConfig};
use ember::tensor::precision::{Precision, set_precision};
use ember::tensor::rng::Rng;
use ember::tensor::{DType, Device, Tensor, no_grad};
use ember::unet::module::{named_parameters, to_device};
use ember::unet::{ForwardContext, UNet, UNetConfig};

struct Case {
    name: &'static str,
    preset: &'static str,
    channels: usize,
    batch: usize,
    train: bool,
    iterations: usize,
    /// On `Device::Cuda(0)` (only with `--device cuda`), else on the CPU.
    cuda: bool,
}

const CASES: &[Case] = &[
    Case { name: "tiny_train_b32", preset: "tiny", channels: 1, batch: 32, train: true, iterations: 5, cuda: false },
    Case { name: "ddpm_cifar10_train_b8", preset: "ddpm-cifar10", channels: 3, batch: 8, train: true, iterations: 3, cuda: false },
    Case { name: "ddpm_cifar10_forward_b8", preset: "ddpm-cifar10", channels: 3, batch: 8, train: false, iterations: 3, cuda: false },
    Case { name: "ddpm_cifar10_train_b128_cuda", preset: "ddpm-cifar10", channels: 3, batch: 128, train: true, iterations: 5, cuda: true },
    Case { name: "ddpm_cifar10_forward_b128_cuda", preset: "ddpm-cifar10", channels: 3, batch: 128, train: false, iterations: 5, cuda: true },
];

/// The memory a case counts, MiB: on the CPU this process's resident memory (`VmRSS`, or its
/// peak `VmHWM`), on the GPU the bytes the device allocator has handed out (now, or at most
/// since the last call with `peak` false).
fn memory_mib(case: &Case, peak: bool) -> f64 {
    if !case.cuda {
        // this process's resident memory (/proc/self/status), peak or now
        return ember::train::report::resident_memory().map_or(f64::NAN, |(now, high)| (if peak { high } else { now }) as f64 / (1024.0 * 1024.0));
    }
    #[cfg(feature = "cuda")]
    {
        // NaN on the emulator (no allocator counts there)
        let Ok(device) = ember::tensor::cuda::driver::CudaDevice::shared(0) else { return f64::NAN };
        let bytes = if peak {
            device.peak_in_use_bytes()
        } else {
            device.reset_peak();
            device.in_use_bytes()
        };
        bytes as f64 / (1024.0 * 1024.0)
    }
    #[cfg(not(feature = "cuda"))]
    f64::NAN
}

/// Waits for the device's queued work (a no-op on the CPU).
fn synchronize(case: &Case) {
    if case.cuda {
        ember::tensor::cuda::device(0).unwrap().synchronize().unwrap();
    }
}

/// Runs one case in this process, its products in `precision`, and prints
/// `seconds_per_iteration peak_mib`.
fn run_case(case: &Case, precision: Precision) {
    let _precision = set_precision(precision);
    let config = UNetConfig::preset(case.preset, case.channels).unwrap();
    let model = UNet::new(&config, DType::F32, &mut Rng::new(0)).unwrap();
    let device = if case.cuda { Device::Cuda(0) } else { Device::Cpu };
    to_device(&model, device).unwrap();
    let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let mut rng = Rng::new(1);
    let x0 = Tensor::rand_uniform(&[case.batch, case.channels, 32, 32], -1.0, 1.0, DType::F32, &mut rng).unwrap().to_device(device).unwrap();
    // the step's memory: the peak while stepping, above what the model and data already hold
    // (so that library and interpreter baselines do not count); Adam's state is allocated after
    // this point here, as PyTorch allocates it lazily inside its first step
    synchronize(case);
    let baseline = memory_mib(case, false);
    // (the inference case has no optimizer: its moments would count as 2x the weights)
    let mut adam = case.train.then(|| Adam::new(named_parameters(&model).into_iter().map(|(_, p)| p).collect(), AdamConfig::adam(2e-4)).unwrap());
    let mut dropout = Rng::new(2);
    let mut iteration = |rng: &mut Rng| {
        ember::tensor::profile::reset_mark();
        if case.train {
            let mut predict = |x: &Tensor, t: &[f64]| model.forward(x, t, &mut ForwardContext { training: true, rng: &mut dropout });
            let loss = epsilon_loss(&mut predict, &schedule, &x0, rng).unwrap();
            let grads = loss.backward().unwrap();
            ember::tensor::profile::reset_mark();
            adam.as_mut().expect("a training case has its optimizer").step(&grads).unwrap();
            drop(grads);
            ember::tensor::profile::mark("optimizer", "adam step, gradients freed");
        } else {
            let _guard = no_grad();
            let t: Vec<f64> = (0..case.batch).map(|i| (i * 97 % 1000) as f64).collect();
            std::hint::black_box(model.forward(&x0, &t, &mut ForwardContext { training: false, rng: &mut dropout }).unwrap());
        }
    };
    iteration(&mut rng); // warm-up (kernels compiled and loaded on a GPU): not profiled
    synchronize(case);
    ember::tensor::profile::clear();
    let mut times = Vec::new();
    for _ in 0..case.iterations {
        let start = Instant::now();
        iteration(&mut rng);
        synchronize(case);
        times.push(start.elapsed().as_secs_f64());
    }
    ember::tensor::profile::report();
    times.sort_by(f64::total_cmp);
    println!("{} {}", times[times.len() / 2], memory_mib(case, true) - baseline);
}

fn parse_line(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut parts = line.split_whitespace().map(|p| p.parse::<f64>().ok());
    Some((parts.next()??, parts.next()??))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // the parent passes its `--precision` on to each `--case` child
    let precision: Precision = match args.iter().position(|a| a == "--precision").and_then(|i| args.get(i + 1)) {
        None => Precision::F32,
        Some(text) => text.parse().unwrap_or_else(|e| {
            eprintln!("--precision: {e}");
            std::process::exit(2)
        }),
    };
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let name = &args[i + 1];
        run_case(CASES.iter().find(|c| c.name == name).expect("known case"), precision);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    let rounds: usize = args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(3);
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1).cloned());
    let cuda = match args.iter().position(|a| a == "--device").and_then(|i| args.get(i + 1)).map(String::as_str) {
        None | Some("cpu") => false,
        Some("cuda") => true,
        Some(other) => panic!("--device {other}: expected cpu or cuda"),
    };
    if !cuda && precision != Precision::F32 {
        eprintln!("--precision {precision} needs --device cuda: the CPU computes in f32");
        std::process::exit(2);
    }
    if cuda {
        // a real GPU only (not the emulator, which `Device::Cuda(0)` falls back to)
        #[cfg(feature = "cuda")]
        let gpu = ember::tensor::cuda::driver::CudaDevice::shared(0).map(|gpu| ember::tensor::cuda::GpuBackend::describe(&*gpu));
        #[cfg(not(feature = "cuda"))]
        let gpu: Result<String, &str> = Err("built without the `cuda` feature");
        match gpu {
            Ok(gpu) => println!("device: {gpu}"),
            Err(e) => {
                println!("SKIPPED: no CUDA GPU ({e})");
                return;
            }
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    // the repo's virtualenv (`cargo xtask fixtures`), else the machine's python3 (a lent GPU machine's)
    let venv = format!("{root}/.venv/bin/python");
    let python = if std::path::Path::new(&venv).exists() { venv } else { "python3".to_string() };
    let has_torch = Command::new(&python).args(["-c", "import torch, diffusers"]).output().is_ok_and(|o| o.status.success());
    if !has_torch {
        println!("(PyTorch/diffusers side skipped: {python} with torch and diffusers not found; `cargo xtask fixtures` creates it)");
    }
    let threads = rayon::current_num_threads();
    let me = std::env::current_exe().unwrap();
    println!("machine: {threads} threads; {rounds} rounds, alternating ember and PyTorch, each run in a fresh process");
    if cuda {
        println!("(MiB: peak device memory in use during the steps, minus what was in use before them)");
    } else {
        println!("(MiB: peak resident memory during the steps, minus the resident memory before them)");
    }
    println!("(noise: the lowest and highest of the rounds' time ratios, each round's ember run over the PyTorch run beside it)");
    let case_column = format!("case ({precision})");
    println!("{case_column:<30} {:>10} {:>10} {:>8} {:>13} {:>10} {:>10} {:>8}", "ember ms", "torch ms", "ratio", "noise", "ember MiB", "torch MiB", "ratio");
    for case in CASES.iter().filter(|c| c.cuda == cuda && only.as_deref().is_none_or(|o| o == c.name)) {
        let (mut ember_t, mut ember_m, mut torch_t, mut torch_m) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let out = Command::new(&me).args(["--case", case.name, "--precision", precision.name()]).output().expect("run ember case");
            if let Some((t, m)) = parse_line(&String::from_utf8_lossy(&out.stdout)) {
                ember_t.push(t);
                ember_m.push(m);
            } else {
                eprintln!("ember case failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            if has_torch {
                let out = Command::new(&python)
                    .arg(format!("{root}/benches/torch_unet.py"))
                    .args([case.preset, &case.channels.to_string(), &case.batch.to_string()])
                    .arg(if case.train { "train" } else { "forward" })
                    .args([&case.iterations.to_string(), &threads.to_string()])
                    .arg(if case.cuda { "cuda" } else { "cpu" })
                    .arg(precision.name())
                    .output()
                    .expect("run the PyTorch case");
                if let Some((t, m)) = parse_line(&String::from_utf8_lossy(&out.stdout)) {
                    torch_t.push(t);
                    torch_m.push(m);
                } else {
                    eprintln!("PyTorch case failed: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
        // the ratio of each round's pair of runs, which alternate: their spread is the noise
        let round_ratios: Vec<f64> = ember_t.iter().zip(&torch_t).map(|(e, t)| e / t).collect();
        let noise = match (round_ratios.iter().copied().reduce(f64::min), round_ratios.iter().copied().reduce(f64::max)) {
            (Some(low), Some(high)) => format!("{low:.2}-{high:.2}x"),
            _ => "-".to_string(),
        };
        let (et, em, tt, tm) = (median(&mut ember_t), median(&mut ember_m), median(&mut torch_t), median(&mut torch_m));
        println!("{:<30} {:>10.1} {:>10.1} {:>7.2}x {noise:>13} {:>10.0} {:>10.0} {:>7.2}x", case.name, et * 1e3, tt * 1e3, et / tt, em, tm, em / tm);
    }
}
