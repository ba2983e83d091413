//! Throwaway probe: the tiny UNet's convolutions at B32, timed kernel by kernel.
use ember_tensor::cpu::conv::{ConvGeometry, conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
use std::time::Instant;

fn geom(n: usize, c_in: usize, c_out: usize, h: usize, k: usize, s: usize) -> ConvGeometry {
    let p = k / 2;
    let ho = (h + 2 * p - k) / s + 1;
    ConvGeometry { n, c_in, h, w: h, c_out, kh: k, kw: k, stride: [s, s], padding: [p, p], dilation: [1, 1], ho, wo: ho }
}

fn best<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        b = b.min(t.elapsed().as_secs_f64());
    }
    b
}

fn main() {
    let n = 32;
    // (c_in, c_out, h, k, stride, count)
    let shapes = [
        (1, 32, 32, 3, 1, 1), (32, 32, 32, 3, 1, 4 + 3), (32, 32, 32, 3, 2, 1), (32, 64, 16, 3, 1, 1), (64, 64, 16, 3, 1, 3 + 3),
        (32, 64, 16, 1, 1, 1), (64, 64, 16, 3, 2, 1), (64, 64, 8, 3, 1, 8 + 3), (128, 64, 8, 3, 1, 3), (128, 64, 8, 1, 1, 3),
        (64, 64, 16, 3, 1, 1), (128, 64, 16, 3, 1, 2), (96, 64, 16, 3, 1, 1), (128, 64, 16, 1, 1, 2), (96, 64, 16, 1, 1, 1),
        (64, 64, 32, 3, 1, 1), (96, 32, 32, 3, 1, 1), (64, 32, 32, 3, 1, 2), (96, 32, 32, 1, 1, 1), (64, 32, 32, 1, 1, 2), (32, 1, 32, 3, 1, 1),
    ];
    let only = std::env::args().nth(1);
    let mut totals = [0.0f64; 3];
    let mut flops_total = 0.0;
    println!("{:<28} {:>8} {:>8} {:>8}  {:>6} {:>6} {:>6} GFLOP/s", "shape x count", "fwd ms", "bwd_in", "bwd_w", "fwd", "in", "w");
    for &(ci, co, h, k, s, count) in &shapes {
        let g = geom(n, ci, co, h, k, s);
        let name = format!("{ci}->{co} @{h} k{k} s{s} x{count}");
        if let Some(o) = &only { if !name.contains(o.as_str()) { continue; } }
        let x: Vec<f32> = (0..n * ci * h * h).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let w: Vec<f32> = (0..co * ci * k * k).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
        let dy: Vec<f32> = (0..n * co * g.ho * g.wo).map(|i| ((i * 31) % 1000) as f32 * 1e-3 - 0.5).collect();
        let flops = 2.0 * (n * co * g.ho * g.wo * ci * k * k) as f64;
        let t = [
            best(5, || { std::hint::black_box(conv2d_forward(&x, &w, &g)); }),
            best(5, || { std::hint::black_box(conv2d_backward_input(&dy, &w, &g)); }),
            best(5, || { std::hint::black_box(conv2d_backward_weight(&x, &dy, &g)); }),
        ];
        for i in 0..3 { totals[i] += t[i] * count as f64; }
        flops_total += flops * count as f64;
        println!("{:<28} {:>8.3} {:>8.3} {:>8.3}  {:>6.1} {:>6.1} {:>6.1}", name, t[0] * 1e3, t[1] * 1e3, t[2] * 1e3, flops / t[0] / 1e9, flops / t[1] / 1e9, flops / t[2] / 1e9);
    }
    println!("totals per step (ms): fwd {:.1} bwd_in {:.1} bwd_w {:.1}; sum {:.1}; GFLOP per pass {:.2}", totals[0] * 1e3, totals[1] * 1e3, totals[2] * 1e3, (totals[0] + totals[1] + totals[2]) * 1e3, flops_total / 1e9);
    println!("peak {:.0} GFLOP/s", ember_tensor::cpu::peak::measure_f32_fma_peak(0.5));
}
