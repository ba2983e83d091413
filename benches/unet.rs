//! UNet benchmarks, side by side with diffusers/PyTorch on the same machine in the same run:
//! the `tiny` training step (B32, 32×32×1), the `ddpm-cifar10` training step (B8) and its
//! inference forward (B8). Each measurement runs in a fresh process (this binary re-invoked
//! with `--case NAME`, or the Python script), so that its peak memory (VmHWM) is its own;
//! ember and PyTorch alternate, round after round, and the table shows medians.
//! Run: `cargo xtask bench` (or `cargo bench --bench unet -- [--rounds N] [--only NAME]`).

use std::process::Command;
use std::time::Instant;

use ember::diffusion::{NoiseSchedule, epsilon_loss};
use ember::tensor::optim::{Adam, AdamConfig};
use ember::tensor::rng::Rng;
use ember::tensor::{DType, Tensor, no_grad};
use ember::unet::module::named_parameters;
use ember::unet::{ForwardContext, UNet, UNetConfig};

struct Case {
    name: &'static str,
    preset: &'static str,
    channels: usize,
    batch: usize,
    train: bool,
    iterations: usize,
}

const CASES: &[Case] = &[
    Case { name: "tiny_train_b32", preset: "tiny", channels: 1, batch: 32, train: true, iterations: 5 },
    Case { name: "ddpm_cifar10_train_b8", preset: "ddpm-cifar10", channels: 3, batch: 8, train: true, iterations: 3 },
    Case { name: "ddpm_cifar10_forward_b8", preset: "ddpm-cifar10", channels: 3, batch: 8, train: false, iterations: 3 },
];

/// A memory figure of this process from /proc/self/status (`VmHWM` peak, `VmRSS` now), MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs one case in this process and prints `seconds_per_iteration peak_mib`.
fn run_case(case: &Case) {
    let config = UNetConfig::preset(case.preset, case.channels).unwrap();
    let model = UNet::new(&config, DType::F32, &mut Rng::new(0)).unwrap();
    let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let mut rng = Rng::new(1);
    let x0 = Tensor::rand_uniform(&[case.batch, case.channels, 32, 32], -1.0, 1.0, DType::F32, &mut rng).unwrap();
    // the step's memory: the peak while stepping, above what the model and data already hold
    // (so that library and interpreter baselines do not count); Adam's state is allocated after
    // this point here, as PyTorch allocates it lazily inside its first step
    let baseline = status_mib("VmRSS:");
    let params = named_parameters(&model).into_iter().map(|(_, p)| p).collect();
    let mut adam = Adam::new(params, AdamConfig::adam(2e-4)).unwrap();
    let mut dropout = Rng::new(2);
    let mut iteration = |rng: &mut Rng| {
        ember::tensor::profile::reset_mark();
        if case.train {
            let mut predict = |x: &Tensor, t: &[f64]| model.forward(x, t, &mut ForwardContext { training: true, rng: &mut dropout });
            let loss = epsilon_loss(&mut predict, &schedule, &x0, rng).unwrap();
            let grads = loss.backward().unwrap();
            ember::tensor::profile::reset_mark();
            adam.step(&grads).unwrap();
            drop(grads);
            ember::tensor::profile::mark("optimizer", "adam step, gradients freed");
        } else {
            let _guard = no_grad();
            let t: Vec<f64> = (0..case.batch).map(|i| (i * 97 % 1000) as f64).collect();
            std::hint::black_box(model.forward(&x0, &t, &mut ForwardContext { training: false, rng: &mut dropout }).unwrap());
        }
    };
    iteration(&mut rng); // warm-up
    let mut times = Vec::new();
    for _ in 0..case.iterations {
        let start = Instant::now();
        iteration(&mut rng);
        times.push(start.elapsed().as_secs_f64());
    }
    ember::tensor::profile::report();
    times.sort_by(f64::total_cmp);
    println!("{} {}", times[times.len() / 2], status_mib("VmHWM:") - baseline);
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
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let name = &args[i + 1];
        run_case(CASES.iter().find(|c| c.name == name).expect("known case"));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    let rounds: usize = args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(3);
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1).cloned());
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.venv/bin/python");
    let has_torch = Command::new(&python).args(["-c", "import torch, diffusers"]).output().is_ok_and(|o| o.status.success());
    if !has_torch {
        println!("(PyTorch/diffusers side skipped: {python} with torch and diffusers not found; `cargo xtask fixtures` creates it)");
    }
    let threads = rayon::current_num_threads();
    let me = std::env::current_exe().unwrap();
    println!("machine: {threads} threads; {rounds} rounds, alternating ember and PyTorch, each run in a fresh process");
    println!("(MiB: peak resident memory during the steps, minus the resident memory before them)");
    println!("{:<26} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}", "case", "ember ms", "torch ms", "ratio", "ember MiB", "torch MiB", "ratio");
    for case in CASES.iter().filter(|c| only.as_deref().is_none_or(|o| o == c.name)) {
        let (mut ember_t, mut ember_m, mut torch_t, mut torch_m) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let out = Command::new(&me).args(["--case", case.name]).output().expect("run ember case");
            if let Some((t, m)) = parse_line(&String::from_utf8_lossy(&out.stdout)) {
                ember_t.push(t);
                ember_m.push(m);
            }
            if has_torch {
                let out = Command::new(&python)
                    .arg(format!("{root}/benches/torch_unet.py"))
                    .args([case.preset, &case.channels.to_string(), &case.batch.to_string()])
                    .arg(if case.train { "train" } else { "forward" })
                    .args([&case.iterations.to_string(), &threads.to_string()])
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
        let (et, em, tt, tm) = (median(&mut ember_t), median(&mut ember_m), median(&mut torch_t), median(&mut torch_m));
        println!(
            "{:<26} {:>10.1} {:>10.1} {:>7.2}x {:>10.0} {:>10.0} {:>7.2}x",
            case.name,
            et * 1e3,
            tt * 1e3,
            et / tt,
            em,
            tm,
            em / tm
        );
    }
}
