//! Kernel benchmarks: matmul and conv2d (forward and backward) in f32, timed with criterion,
//! then summarized as GFLOP/s, % of this machine's measured FMA peak, and the ratio to
//! PyTorch on the same machine in the same run (when `.venv/bin/python` has torch; see
//! README). Run: `cargo bench --bench kernels`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use ember::tensor::ops::conv::Conv2dParams;
use ember::tensor::rng::Rng;
use ember::tensor::{DType, Tensor};

/// One benchmark case: its inputs, the ember call, and the JSON that tells the PyTorch script
/// to run the same thing.
struct Case {
    name: String,
    flops: f64,
    run: Box<dyn Fn()>,
    torch_spec: String,
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -0.5, 0.5, DType::F32, &mut Rng::new(seed)).unwrap()
}

fn matmul_case(batch: usize, m: usize, n: usize, k: usize) -> Case {
    let (a_shape, b_shape) = if batch == 1 { (vec![m, k], vec![k, n]) } else { (vec![batch, m, k], vec![batch, k, n]) };
    let (a, b) = (random(&a_shape, 1), random(&b_shape, 2));
    let name = if batch == 1 { format!("matmul_{m}x{n}x{k}") } else { format!("matmul_b{batch}_{m}x{n}x{k}") };
    Case {
        torch_spec: format!(r#"{{"name":"{name}","op":"matmul","a":{a_shape:?},"b":{b_shape:?}}}"#),
        name,
        flops: 2.0 * (batch * m * n * k) as f64,
        run: Box::new(move || {
            std::hint::black_box(a.matmul(&b).unwrap());
        }),
    }
}

fn conv_case(x_shape: [usize; 4], w_shape: [usize; 4], stride: usize, padding: usize, backward: bool) -> Case {
    let (x, w) = (random(&x_shape, 3), random(&w_shape, 4));
    let params = Conv2dParams::new(stride, padding);
    let ho = (x_shape[2] + 2 * padding - w_shape[2]) / stride + 1;
    let wo = (x_shape[3] + 2 * padding - w_shape[3]) / stride + 1;
    let forward_flops = 2.0 * (x_shape[0] * w_shape[0] * ho * wo * w_shape[1] * w_shape[2] * w_shape[3]) as f64;
    let [n, c, h, _] = x_shape;
    let [o, _, k, _] = w_shape;
    let op = if backward { "conv2d_backward" } else { "conv2d" };
    let name = format!("{op}_n{n}_c{c}_o{o}_h{h}_k{k}_s{stride}");
    let run: Box<dyn Fn()> = if backward {
        let (xv, wv) = (x.variable(), w.variable());
        let y = xv.conv2d(&wv, None, params).unwrap();
        let dy = random(y.shape(), 5);
        Box::new(move || {
            std::hint::black_box(y.backward_retaining_graph(&dy).unwrap());
        })
    } else {
        Box::new(move || {
            std::hint::black_box(x.conv2d(&w, None, params).unwrap());
        })
    };
    Case {
        torch_spec: format!(r#"{{"name":"{name}","op":"{op}","x":{x_shape:?},"w":{w_shape:?},"stride":{stride},"padding":{padding}}}"#),
        name,
        flops: if backward { 2.0 * forward_flops } else { forward_flops },
        run,
    }
}

fn cases() -> Vec<Case> {
    vec![
        matmul_case(1, 256, 256, 256),
        matmul_case(1, 512, 512, 512),
        matmul_case(1, 1024, 1024, 1024),
        matmul_case(64, 256, 256, 64), // attention-shaped: QKᵀ for 256 tokens, head dim 64
        conv_case([8, 3, 32, 32], [64, 3, 3, 3], 1, 1, false),
        conv_case([8, 64, 32, 32], [64, 64, 3, 3], 1, 1, false),
        conv_case([8, 128, 16, 16], [128, 128, 3, 3], 1, 1, false),
        conv_case([8, 64, 32, 32], [64, 64, 3, 3], 2, 1, false),
        conv_case([8, 64, 32, 32], [64, 64, 3, 3], 1, 1, true),
    ]
}

/// Runs the PyTorch script on the same cases; `None` (with a message) if it cannot.
fn torch_timings(cases: &[Case], threads: usize) -> Option<BTreeMap<String, serde_json::Value>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.venv/bin/python");
    if !std::path::Path::new(&python).exists() {
        println!("(PyTorch comparison skipped: {python} not found; `cargo xtask fixtures` creates it)");
        return None;
    }
    let spec = format!("[{}]", cases.iter().map(|c| c.torch_spec.as_str()).collect::<Vec<_>>().join(","));
    let mut child = Command::new(&python)
        .arg(format!("{root}/benches/torch_kernels.py"))
        .arg(threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(spec.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    if !output.status.success() {
        println!("(PyTorch comparison skipped: the script failed)");
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

fn main() {
    let mut criterion =
        Criterion::default().configure_from_args().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let threads = rayon::current_num_threads();
    let peak = ember::tensor::cpu::peak::measure_f32_fma_peak(0.5);
    let cases = cases();
    let medians: RefCell<BTreeMap<String, f64>> = RefCell::default();
    for case in &cases {
        let mut per_call = Vec::new();
        criterion.bench_function(&case.name, |b| {
            b.iter_custom(|iterations| {
                let start = Instant::now();
                for _ in 0..iterations {
                    (case.run)();
                }
                let elapsed = start.elapsed();
                per_call.push(elapsed.as_secs_f64() / iterations as f64);
                elapsed
            })
        });
        if !per_call.is_empty() {
            per_call.sort_by(f64::total_cmp);
            medians.borrow_mut().insert(case.name.clone(), per_call[per_call.len() / 2]);
        }
    }
    criterion.final_summary();
    let medians = medians.into_inner();
    if medians.is_empty() {
        return; // filtered out, or `cargo test --benches`
    }
    let torch = torch_timings(&cases, threads);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    println!("\nmachine: {cpu}, {threads} threads; measured f32 FMA peak {peak:.0} GFLOP/s");
    if let Some(t) = &torch {
        println!("PyTorch {} with {} threads, same machine, same run", t["torch_version"], t["threads"]);
    }
    println!("{:<36} {:>10} {:>9} {:>7} {:>10} {:>9}", "case", "ember ms", "GFLOP/s", "% peak", "torch ms", "ember/torch");
    for case in &cases {
        let Some(&seconds) = medians.get(&case.name) else { continue };
        let gflops = case.flops / seconds / 1e9;
        let torch_seconds = torch.as_ref().and_then(|t| t.get(&case.name)).and_then(|v| v.as_f64());
        let (torch_ms, ratio) = match torch_seconds {
            Some(ts) => (format!("{:.3}", ts * 1e3), format!("{:.2}x", seconds / ts)),
            None => ("-".into(), "-".into()),
        };
        println!("{:<36} {:>10.3} {:>9.1} {:>6.1}% {:>10} {:>9}", case.name, seconds * 1e3, gflops, 100.0 * gflops / peak, torch_ms, ratio);
    }
}
