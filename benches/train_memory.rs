//! Resident memory over a long training run: does `ember train` hold steady, or grow?
//!
//! Runs the real training loop (`ember_train::run::train`: logs, plots and report,
//! checkpoints and preview grids every 500 steps) of the `tiny` UNet in this process and reads
//! its resident set size (`VmRSS`, /proc/self/status) every `--every` steps. Prints one row per
//! reading and the largest deviation from the reading at `--from` (the issue's "flat within
//! ±5% from step 500 to step 5000").
//!
//! `cargo bench --bench train_memory -- [--steps 5000] [--batch 16] [--every 500] [--from 500] [--data fashion-mnist]
//! [--checkpoint-every 500] [--sample-every 500]`
//!
//! Fashion-MNIST when installed (else `--data procedural:2000`). No timing: a memory figure.

use ember::tensor::Device;
use ember::train::report::resident_memory;
use ember::train::run::{Observer, RunDir, train};
use ember::train::{StepStats, TrainConfig};
use ember::unet::UNetConfig;

struct Readings {
    every: u64,
    rows: Vec<(u64, u64)>,
}

impl Observer for Readings {
    fn step(&mut self, stats: &StepStats) {
        if stats.step.is_multiple_of(self.every) {
            let (rss, _) = resident_memory().expect("/proc/self/status");
            eprintln!("step {:>6}  loss {:.4}  resident {:7.1} MiB", stats.step, stats.loss, rss as f64 / 1048576.0);
            self.rows.push((stats.step, rss));
        }
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = arg(&args, "--steps", "5000").parse().expect("--steps N");
    let batch: usize = arg(&args, "--batch", "16").parse().expect("--batch N");
    let every: u64 = arg(&args, "--every", "500").parse().expect("--every N");
    let from: u64 = arg(&args, "--from", "500").parse().expect("--from STEP");
    let installed = std::path::Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists();
    let data = arg(&args, "--data", if installed { "fashion-mnist" } else { "procedural:2000" });

    let out = std::env::temp_dir().join(format!("ember-train-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let checkpoint_every: u64 = arg(&args, "--checkpoint-every", "500").parse().expect("--checkpoint-every N");
    let sample_every: u64 = arg(&args, "--sample-every", "500").parse().expect("--sample-every N");
    let config = TrainConfig {
        unet: UNetConfig::tiny(1),
        data: data.clone(),
        batch_size: batch,
        steps,
        lr: 5e-4,
        warmup_steps: 200,
        sample_count: 16,
        sample_steps: 50,
        checkpoint_every,
        sample_every,
        ..TrainConfig::default()
    };
    println!(
        "tiny UNet, batch {batch}, {steps} steps on {data}; checkpoint, plots and report every {checkpoint_every} steps, preview every {sample_every} (0: at the end)"
    );
    let mut readings = Readings { every, rows: Vec::new() };
    train(Some(config), None, &RunDir::new(&out), Device::Cpu, &mut readings).expect("training");
    let _ = std::fs::remove_dir_all(&out);

    println!("{:>8} {:>14} {:>12}", "step", "resident MiB", format!("vs step {from}"));
    let base = readings.rows.iter().find(|(step, _)| *step == from).map(|(_, rss)| *rss as f64);
    let mut worst: f64 = 0.0;
    for &(step, rss) in &readings.rows {
        let change = base.map(|b| 100.0 * (rss as f64 / b - 1.0));
        if step >= from {
            worst = worst.max(change.unwrap_or(0.0).abs());
        }
        println!("{step:>8} {:>14.1} {:>11}", rss as f64 / 1048576.0, change.map_or(String::new(), |c| format!("{c:+.1}%")));
    }
    println!("largest deviation from step {from}: {worst:.1}% (flat means within 5%)");
}
