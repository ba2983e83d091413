//! Every CUDA kernel against the engine's CPU kernels, on random inputs (never zeros), with
//! sizes that are not multiples of the tiles (1, odd, just past a tile), strided and
//! broadcast views. Outputs start poisoned (the emulator fills new buffers with NaN bytes).
//! Runs on the CUDA emulator always, and on a real GPU too when built with `cuda` and one is
//! present (reported as skipped otherwise).
#![cfg(feature = "cuda-emu")]

use std::sync::Arc;

use ember::tensor::cpu::gemm::{MatRef, gemm as cpu_gemm};
use ember::tensor::cuda::emu::Emulator;
use ember::tensor::cuda::kernels;
use ember::tensor::cuda::launch as launch_cuda;
use ember::tensor::cuda::{DeviceBuffer, GpuBackend};
use ember::tensor::ops::attention::cuda as attention_cuda;
use ember::tensor::ops::attention::{AttentionShape, cpu as cpu_attention};
use ember::tensor::ops::binary::BinaryOp;
use ember::tensor::ops::binary::cuda as binary_cuda;
use ember::tensor::ops::conv::cuda as conv_cuda;
use ember::tensor::ops::conv::{ConvGeometry, cpu as cpu_conv};
use ember::tensor::ops::matmul::cuda as matmul_cuda;
use ember::tensor::ops::movement::cuda as movement_cuda;
use ember::tensor::ops::norm::cuda as norm_cuda;
use ember::tensor::ops::norm::{GroupNormShape, cpu as cpu_norm};
use ember::tensor::ops::reduce::cuda as reduce_cuda;
use ember::tensor::ops::reduce::{ReduceKind, cpu::reduce as cpu_reduce};
use ember::tensor::ops::softmax::cpu as softmax;
use ember::tensor::ops::softmax::cuda as softmax_cuda;
use ember::tensor::ops::unary::UnaryOp;
use ember::tensor::ops::unary::cuda as unary_cuda;
use ember::tensor::precision::{Precision, with_precision};
use ember::tensor::{Device, Layout, Tensor};

/// Says once per test binary, past the test harness's output capture (so it shows in a
/// normal `cargo test` run), that the GPU half of these tests did not run.
fn report_gpu_skipped(reason: &str) {
    use std::io::Write;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(std::io::stderr(), "SKIPPED on a real GPU (the emulator ran every kernel): {reason}");
    });
}

/// The devices to prove the kernels on: the emulator, and device 0 if it is a real GPU.
fn devices() -> Vec<Arc<dyn GpuBackend>> {
    #[allow(unused_mut)]
    let mut devices = vec![Emulator::new()];
    #[cfg(feature = "cuda")]
    match ember::tensor::cuda::driver::CudaDevice::shared(0) {
        Ok(gpu) => devices.push(gpu),
        Err(e) => report_gpu_skipped(&e.to_string()),
    }
    #[cfg(not(feature = "cuda"))]
    report_gpu_skipped("built without the `cuda` feature");
    devices
}

/// Deterministic values in [low, high), never exactly zero.
fn values(n: usize, low: f32, high: f32, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            let v = low + (high - low) * unit;
            if v == 0.0 { 0.5 } else { v }
        })
        .collect()
}

/// max |actual − expected| / max |expected|, NaN-aware (a NaN where a number is expected fails).
fn assert_close(actual: &[f32], expected: &[f32], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs())).max(1e-30);
    let mut worst = 0.0f64;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if a.is_nan() != e.is_nan() {
            panic!("{what}: element {i} is {a}, expected {e}");
        }
        if !e.is_nan() {
            worst = worst.max((a as f64 - e as f64).abs() / scale);
        }
    }
    assert!(worst <= tolerance, "{what}: relative error {worst:e} > {tolerance:e}");
}

fn upload(device: &Arc<dyn GpuBackend>, data: &[f32]) -> DeviceBuffer {
    DeviceBuffer::from_slice(device, data).unwrap()
}

fn download(buffer: &DeviceBuffer) -> Vec<f32> {
    buffer.to_vec::<f32>().unwrap()
}

/// The elements of the view `layout` of `data`, as a contiguous CPU tensor.
fn cpu_tensor(data: &[f32], layout: &Layout) -> Tensor {
    let gathered: Vec<f32> = layout.offsets().into_iter().map(|o| data[o]).collect();
    Tensor::from_vec(gathered, layout.shape(), Device::Cpu).unwrap()
}

fn cpu_binary(a: &Tensor, b: &Tensor, op: BinaryOp) -> Tensor {
    match op {
        BinaryOp::Add => a.add(b),
        BinaryOp::Sub => a.sub(b),
        BinaryOp::Mul => a.mul(b),
        BinaryOp::Div => a.div(b),
        BinaryOp::Equal => a.eq_mask(b),
    }
    .unwrap()
}

const UNARY_OPS: [UnaryOp; 16] = [
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Sqr,
    UnaryOp::Abs,
    UnaryOp::Relu,
    UnaryOp::Silu,
    UnaryOp::Gelu,
    UnaryOp::Sigmoid,
    UnaryOp::Tanh,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Powf(1.7),
    UnaryOp::Affine { mul: -1.5, add: 0.25 },
    UnaryOp::Clamp { min: -0.5, max: 0.75 },
];

/// Inputs inside each op's domain (positive for log, sqrt and powf).
fn op_inputs(op: UnaryOp, n: usize, seed: u64) -> Vec<f32> {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Powf(_) => values(n, 0.1, 3.0, seed),
        _ => values(n, -3.0, 3.0, seed),
    }
}

#[test]
fn unary_forward_and_backward_match_the_cpu() {
    // A permuted, narrowed view of a 5×6×7 buffer: strided in every axis.
    let layout = Layout::contiguous(&[5, 6, 7]).permute(&[2, 0, 1]).unwrap().narrow(1, 1, 3).unwrap();
    let n = layout.numel();
    for device in devices() {
        for (k, op) in UNARY_OPS.into_iter().enumerate() {
            let data = op_inputs(op, 5 * 6 * 7, 10 + k as u64);
            let x = cpu_tensor(&data, &layout).variable();
            let y = x.unary(op).unwrap();
            let y_gpu = unary_cuda::unary_forward(&upload(&device, &data), &layout, op).unwrap();
            assert_close(&download(&y_gpu), &y.to_vec::<f32>().unwrap(), 1e-5, &format!("{} forward", op.name()));

            let dy = values(n, -1.0, 1.0, 99 + k as u64);
            let dy_tensor = Tensor::from_vec(dy.clone(), y.shape(), Device::Cpu).unwrap();
            let grads = y.mul(&dy_tensor).unwrap().sum_all().unwrap().backward().unwrap();
            let dx_cpu = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
            let x_contiguous = upload(&device, &x.to_vec::<f32>().unwrap());
            let dx = unary_cuda::unary_backward(op, Some(&x_contiguous), Some(&y_gpu), &upload(&device, &dy), n).unwrap();
            assert_close(&download(&dx), &dx_cpu, 1e-5, &format!("{} backward", op.name()));
        }
    }
}

#[test]
fn binary_ops_broadcast_like_the_cpu() {
    // [3, 1, 5] op [4, 1] -> [3, 4, 5]; b is a transposed view of a [1, 4] buffer.
    let (a_shape, out_shape) = ([3, 1, 5], [3, 4, 5]);
    let a_data = values(15, -2.0, 2.0, 1);
    let b_data = values(4, 0.5, 2.0, 2);
    let b_layout = Layout::contiguous(&[1, 4]).permute(&[1, 0]).unwrap();
    for device in devices() {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Equal] {
            let a_view = Layout::contiguous(&a_shape).broadcast_to(&out_shape).unwrap();
            let b_view = b_layout.broadcast_to(&out_shape).unwrap();
            let expected = cpu_binary(&cpu_tensor(&a_data, &a_view), &cpu_tensor(&b_data, &b_view), op).to_vec::<f32>().unwrap();
            let out = binary_cuda::binary(op, &upload(&device, &a_data), &a_view, &upload(&device, &b_data), &b_view).unwrap();
            assert_close(&download(&out), &expected, 1e-6, op.name());
        }
        // Equal on equal inputs gives ones (the values above never collide).
        let same = upload(&device, &a_data);
        let view = Layout::contiguous(&[15]);
        assert!(download(&binary_cuda::binary(BinaryOp::Equal, &same, &view, &same, &view).unwrap()).iter().all(|&v| v == 1.0));
    }
}

#[test]
fn gather_makes_any_view_contiguous() {
    let data = values(4 * 5 * 6, -1.0, 1.0, 3);
    let views = [
        Layout::contiguous(&[4, 5, 6]).permute(&[2, 1, 0]).unwrap(),
        Layout::contiguous(&[4, 5, 6]).narrow(2, 1, 4).unwrap().narrow(0, 3, 1).unwrap(),
        Layout::contiguous(&[1, 5, 1]).broadcast_to(&[3, 5, 2]).unwrap(),
    ];
    for device in devices() {
        for view in &views {
            let expected: Vec<f32> = view.offsets().into_iter().map(|o| data[o]).collect();
            assert_close(&download(&movement_cuda::gather(&upload(&device, &data), view).unwrap()), &expected, 0.0, &format!("{view:?}"));
        }
    }
}

#[test]
fn reductions_over_any_axes_match_the_cpu() {
    let shape = [3, 37, 5, 2];
    let data = values(3 * 37 * 5 * 2, -4.0, 4.0, 4);
    let contiguous = Layout::contiguous(&shape);
    let permuted = Layout::contiguous(&[2, 5, 37, 3]).permute(&[3, 2, 1, 0]).unwrap();
    let axes_sets: [&[usize]; 6] = [&[0], &[1], &[3], &[0, 2], &[1, 2, 3], &[0, 1, 2, 3]];
    for device in devices() {
        let x = upload(&device, &data);
        for layout in [&contiguous, &permuted] {
            for axes in axes_sets {
                for kind in [ReduceKind::Sum, ReduceKind::Max] {
                    let expected = cpu_reduce(&data, layout, axes, kind);
                    let actual = download(&reduce_cuda::reduce(&x, layout, axes, kind).unwrap());
                    assert_close(&actual, &expected, 1e-5, &format!("{kind:?} over {axes:?} of {layout:?}"));
                }
            }
        }
    }
}

/// Long runs over few outputs (a bias gradient: each channel sums B·H·W elements) take two
/// launches, many warps per output and then one over their partials; they match the CPU, a NaN
/// anywhere in a run still wins the max, and the split covers every element exactly once.
#[test]
fn long_reductions_over_few_outputs_split_into_two_stages_and_match_the_cpu() {
    for (outputs, run_len) in [(1, 1), (3, 65_536), (5, 6_993), (128, 131_072), (100_000, 4)] {
        let (chunks, chunk_len) = reduce_cuda::reduce_split(outputs, run_len);
        assert!(chunks * chunk_len >= run_len && (chunks - 1) * chunk_len < run_len, "{outputs}×{run_len}: {chunks}×{chunk_len}");
        assert!(chunks == 1 || chunk_len >= 1024, "{outputs}×{run_len}: chunks of {chunk_len}");
    }
    assert_eq!(reduce_cuda::reduce_split(128, 131_072), (32, 4096));
    assert_eq!(reduce_cuda::reduce_split(100_000, 4).0, 1);
    let cases: [(&[usize], &[usize]); 2] = [(&[16, 3, 64, 64], &[0, 2, 3]), (&[7, 5, 999], &[0, 2])];
    for device in devices() {
        for (shape, axes) in cases {
            let n: usize = shape.iter().product();
            let mut data = values(n, -4.0, 4.0, 40 + n as u64);
            let contiguous = Layout::contiguous(shape);
            // the same logical shape over channels-last storage
            let mut order: Vec<usize> = (0..shape.len()).collect();
            order.rotate_left(1);
            let stored: Vec<usize> = order.iter().map(|&a| shape[a]).collect();
            let mut back = vec![0; shape.len()];
            for (i, &a) in order.iter().enumerate() {
                back[a] = i;
            }
            let strided = Layout::contiguous(&stored).permute(&back).unwrap();
            assert_eq!(strided.shape(), shape);
            let outputs = n / axes.iter().map(|&a| shape[a]).product::<usize>();
            assert!(reduce_cuda::reduce_split(outputs, n / outputs).0 > 1, "{shape:?} over {axes:?} is split");
            for with_nan in [false, true] {
                if with_nan {
                    data[n / 2 + 17] = f32::NAN;
                }
                let x = upload(&device, &data);
                for layout in [&contiguous, &strided] {
                    for kind in [ReduceKind::Sum, ReduceKind::Max] {
                        let expected = cpu_reduce(&data, layout, axes, kind);
                        assert!(!with_nan || expected.iter().any(|v| v.is_nan()));
                        let actual = download(&reduce_cuda::reduce(&x, layout, axes, kind).unwrap());
                        assert_close(&actual, &expected, 1e-5, &format!("{kind:?} over {axes:?} of {layout:?}, NaN {with_nan}"));
                    }
                }
            }
        }
    }
}

#[test]
fn softmax_rows_forward_and_backward_match_the_cpu() {
    for device in devices() {
        for (rows, row_len) in [(1, 1), (5, 7), (3, 300), (2, 1000)] {
            let n = rows * row_len;
            let x = values(n, -6.0, 6.0, 5 + n as u64);
            let dy = values(n, -1.0, 1.0, 6 + n as u64);
            for log in [false, true] {
                #[allow(clippy::type_complexity)]
                let (forward, backward): (fn(&[f32], usize) -> Vec<f32>, fn(&[f32], &[f32], usize) -> Vec<f32>) =
                    if log { (softmax::log_softmax_rows, softmax::log_softmax_backward_rows) } else { (softmax::softmax_rows, softmax::softmax_backward_rows) };
                let what = format!("{} {rows}×{row_len}", if log { "log_softmax" } else { "softmax" });
                let y_cpu = forward(&x, row_len);
                let y = softmax_cuda::softmax_rows(&upload(&device, &x), rows, row_len, log).unwrap();
                assert_close(&download(&y), &y_cpu, 1e-5, &what);
                let dx = softmax_cuda::softmax_backward_rows(&upload(&device, &y_cpu), &upload(&device, &dy), rows, row_len, log).unwrap();
                assert_close(&download(&dx), &backward(&y_cpu, &dy, row_len), 1e-5, &format!("{what} backward"));
            }
        }
    }
}

#[test]
fn gemm_matches_the_cpu_for_odd_sizes_strides_and_batches() {
    // (batch, m, n, k, A transposed, B transposed, accumulate)
    let cases = [
        (1, 1, 1, 1, false, false, false),
        (1, 7, 13, 5, false, false, false),
        (2, 65, 63, 17, true, false, true),
        (3, 64, 130, 33, false, true, false),
        (1, 129, 70, 100, true, true, true),
        (1, 5, 4, 0, false, false, false),
        // few tiles over a long k: split into depth ranges, added in a second launch
        (1, 20, 33, 1000, true, false, true),
        (2, 70, 9, 600, false, true, false),
    ];
    // one tile of 64 over k = 1000: 3 splits of 336; the 129×70 case is not split (k = 100)
    assert_eq!(matmul_cuda::gemm_split(1, 1000), (3, 336));
    assert_eq!(matmul_cuda::gemm_split(4, 600), (2, 304));
    assert_eq!(matmul_cuda::gemm_split(2, 100).0, 1);
    assert_eq!(matmul_cuda::gemm_split(300, 100_000).0, 1);
    for (blocks, k) in [(1, 1), (1, 257), (16, 2048), (7, 9999)] {
        let (splits, k_chunk) = matmul_cuda::gemm_split(blocks, k);
        assert!(splits * k_chunk >= k && (splits - 1) * k_chunk < k && k_chunk % 16 == 0, "{blocks} blocks, k = {k}: {splits}×{k_chunk}");
    }
    for device in devices() {
        for (case, &(batch, m, n, k, a_t, b_t, accumulate)) in cases.iter().enumerate() {
            let a_data = values(batch * m * k + 3, -1.0, 1.0, 20 + case as u64);
            let b_data = values(batch * k * n + 1, -1.0, 1.0, 30 + case as u64);
            let c_data = values(batch * m * n, -1.0, 1.0, 40 + case as u64);
            // A starts 3 elements in, B 1 element in; transposed operands are column-major.
            let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
            let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
            let mut expected = c_data.clone();
            for z in 0..batch {
                let a = MatRef { data: &a_data[3 + z * m * k..], row_stride: a_rs, col_stride: a_cs };
                let b = MatRef { data: &b_data[1 + z * k * n..], row_stride: b_rs, col_stride: b_cs };
                cpu_gemm(m, n, k, a, b, &mut expected[z * m * n..(z + 1) * m * n], n, accumulate);
            }
            let (a_buf, b_buf) = (upload(&device, &a_data), upload(&device, &b_data));
            let a = matmul_cuda::GpuMatrix { buffer: &a_buf, offset: 3, row_stride: a_rs, col_stride: a_cs, batch_stride: m * k };
            let b = matmul_cuda::GpuMatrix { buffer: &b_buf, offset: 1, row_stride: b_rs, col_stride: b_cs, batch_stride: k * n };
            // both kernels: 128×128 and 64×64 tiles
            for tile in [128, 64] {
                let c_buf = upload(&device, &c_data);
                let c = matmul_cuda::GpuMatrix { buffer: &c_buf, offset: 0, row_stride: n, col_stride: 1, batch_stride: m * n };
                launch_cuda::with_tile_size(tile, || matmul_cuda::gemm(batch, m, n, k, a, b, c, accumulate)).unwrap();
                assert_close(&download(&c_buf), &expected, 1e-5, &format!("gemm case {case} on {tile}-tiles: {:?}", cases[case]));
            }
        }
    }
}

/// A convolution's geometry with the output size derived as PyTorch does.
#[allow(clippy::too_many_arguments)]
fn geometry(n: usize, c_in: usize, h: usize, w: usize, c_out: usize, k: [usize; 2], stride: usize, padding: usize, dilation: usize) -> ConvGeometry {
    let out = |size: usize, k: usize| (size + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
    ConvGeometry {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k[0],
        kw: k[1],
        stride: [stride; 2],
        padding: [padding; 2],
        dilation: [dilation; 2],
        ho: out(h, k[0]),
        wo: out(w, k[1]),
    }
}

/// Random x, weight, bias and dy for a convolution (seeds `seed`..`seed + 3`).
fn conv_inputs(g: &ConvGeometry, seed: u64) -> [Vec<f32>; 4] {
    let sizes = [g.n * g.c_in * g.h * g.w, g.c_out * g.c_in * g.kh * g.kw, g.c_out, g.n * g.c_out * g.ho * g.wo];
    std::array::from_fn(|i| values(sizes[i], -1.0, 1.0, seed + i as u64))
}

/// The convolutions every conv test runs, each a case the kernels treat apart.
fn conv_cases() -> Vec<ConvGeometry> {
    vec![
        geometry(2, 3, 7, 9, 5, [3, 3], 1, 1, 1),   // the UNet's 3×3 "same" conv, odd sizes
        geometry(3, 4, 9, 8, 6, [3, 3], 2, 1, 1),   // its stride-2 downsample
        geometry(1, 2, 11, 10, 3, [3, 2], 1, 2, 2), // dilation, a non-square kernel
        geometry(2, 7, 5, 5, 9, [1, 1], 1, 0, 1),   // the 1×1 shortcut
        geometry(1, 3, 8, 8, 4, [4, 4], 2, 1, 1),   // a 4×4 stride-2 kernel
        geometry(4, 8, 33, 32, 3, [3, 3], 1, 1, 1), // n·ho·wo > 4096: a split backward-weight
        geometry(2, 70, 9, 8, 67, [3, 3], 1, 1, 1), // > 64 rows and columns: every part of a 128-tile
        geometry(1, 1, 1, 1, 1, [1, 1], 1, 0, 1),   // 1
        // the input gradient's sub-pixel classes: DDPM's downsample (33×33, no padding), stride 3
        // with a 4×4 kernel, stride 2 with dilation 2 (a class gets every tap or none), a 1×1
        // stride-2 kernel (three classes with no tap: zeros), a stride past the input's height
        geometry(2, 3, 9, 9, 4, [3, 3], 2, 0, 1),
        geometry(2, 2, 10, 9, 3, [4, 4], 3, 2, 1),
        geometry(1, 3, 10, 11, 4, [3, 3], 2, 1, 2),
        geometry(2, 5, 6, 7, 3, [1, 1], 2, 0, 1),
        geometry(1, 2, 1, 5, 3, [1, 3], 3, 0, 1),
    ]
}

#[test]
fn implicit_gemm_convolutions_match_the_cpu() {
    for device in devices() {
        for (case, g) in conv_cases().iter().enumerate() {
            let [x, w, bias, dy] = conv_inputs(g, 50 + 4 * case as u64);
            let (xb, wb, bb, dyb) = (upload(&device, &x), upload(&device, &w), upload(&device, &bias), upload(&device, &dy));

            let y = cpu_conv::conv2d_forward(&x, &w, Some(&bias), g);
            let dx = cpu_conv::conv2d_backward_input(&dy, &w, g);
            let dw = cpu_conv::conv2d_backward_weight(&x, &dy, g);
            // both kernels of each: 128×128 and 64×64 tiles
            for tile in [128, 64] {
                launch_cuda::with_tile_size(tile, || {
                    let what = |product: &str| format!("{product} on {tile}-tiles {g:?}");
                    assert_close(&download(&conv_cuda::conv2d_forward(&xb, &wb, Some(&bb), g).unwrap()), &y, 1e-5, &what("forward"));
                    assert_close(&download(&conv_cuda::conv2d_backward_input(&dyb, &wb, g).unwrap()), &dx, 1e-5, &what("backward input"));
                    assert_close(&download(&conv_cuda::conv2d_backward_weight(&xb, &dyb, g).unwrap()), &dw, 1e-5, &what("backward weight"));
                });
            }
        }
    }
}

#[test]
fn group_norm_forward_and_backward_match_the_cpu() {
    let cases = [
        GroupNormShape { n: 2, channels: 8, groups: 4, positions: 7 * 5 },
        GroupNormShape { n: 1, channels: 6, groups: 1, positions: 300 },
        GroupNormShape { n: 3, channels: 32, groups: 32, positions: 1 },
        GroupNormShape { n: 2, channels: 64, groups: 32, positions: 16 * 16 },
    ];
    for device in devices() {
        for (case, s) in cases.iter().enumerate() {
            let len = s.n * s.channels * s.positions;
            // A mean far from zero tests the two-pass variance.
            let x = values(len, 2.0, 5.0, 90 + case as u64);
            let (w, b) = (values(s.channels, 0.5, 1.5, 91 + case as u64), values(s.channels, -1.0, 1.0, 92 + case as u64));
            let dy = values(len, -1.0, 1.0, 93 + case as u64);
            let (y, mean, rstd) = cpu_norm::group_norm_forward(&x, &w, &b, s, 1e-5, false);
            let (xb, wb, bb) = (upload(&device, &x), upload(&device, &w), upload(&device, &b));
            let (gy, gmean, grstd) = norm_cuda::group_norm_forward(&xb, &wb, &bb, s, 1e-5, false).unwrap();
            let what = format!("group norm {s:?}");
            assert_close(&download(&gy), &y, 1e-5, &what);
            assert_close(&download(&gmean), &mean, 1e-5, &format!("{what} mean"));
            assert_close(&download(&grstd), &rstd, 1e-5, &format!("{what} rstd"));
            let (dx, dw, db) = cpu_norm::group_norm_backward(&x, &dy, &w, &b, &mean, &rstd, s, false);
            let (gdx, gdw, gdb) = norm_cuda::group_norm_backward(&xb, &upload(&device, &dy), &wb, &bb, &gmean, &grstd, s, false).unwrap();
            assert_close(&download(&gdx), &dx, 1e-5, &format!("{what} dx"));
            assert_close(&download(&gdw), &dw, 1e-5, &format!("{what} dweight"));
            assert_close(&download(&gdb), &db, 1e-5, &format!("{what} dbias"));

            // Fused with SiLU: against the CPU's fused kernel (itself checked against the two
            // ops and by finite differences in tests/ops_norm.rs).
            let (sy, smean, srstd) = cpu_norm::group_norm_forward(&x, &w, &b, s, 1e-5, true);
            let (gsy, _, _) = norm_cuda::group_norm_forward(&xb, &wb, &bb, s, 1e-5, true).unwrap();
            assert_close(&download(&gsy), &sy, 1e-5, &format!("{what} + silu"));
            let (dx, dw, db) = cpu_norm::group_norm_backward(&x, &dy, &w, &b, &smean, &srstd, s, true);
            let (gdx, gdw, gdb) = norm_cuda::group_norm_backward(&xb, &upload(&device, &dy), &wb, &bb, &gmean, &grstd, s, true).unwrap();
            assert_close(&download(&gdx), &dx, 1e-5, &format!("{what} + silu dx"));
            assert_close(&download(&gdw), &dw, 1e-5, &format!("{what} + silu dweight"));
            assert_close(&download(&gdb), &db, 1e-5, &format!("{what} + silu dbias"));
        }
    }
}

#[test]
fn layer_norm_forward_and_backward_match_the_cpu() {
    // (rows, cols): one element, rows shorter and longer than a warp, partial warps of rows in a
    // block, partial tiles of 32 columns, several and partial chunks of rows in dweight/dbias
    let cases = [(1, 1), (5, 7), (300, 33), (1, 1280), (5, 320), (8192, 7), (37, 1280), (300, 320), (70, 1)];
    for device in devices() {
        for (case, &(rows, cols)) in cases.iter().enumerate() {
            let seed = 200 + 10 * case as u64;
            // A mean far from zero tests the two-pass variance.
            let x = values(rows * cols, 2.0, 5.0, seed);
            let (w, b) = (values(cols, 0.5, 1.5, seed + 1), values(cols, -1.0, 1.0, seed + 2));
            let dy = values(rows * cols, -1.0, 1.0, seed + 3);
            let (y, mean, rstd) = cpu_norm::layer_norm_forward(&x, &w, &b, rows, cols, 1e-5);
            let (xb, wb, bb, dyb) = (upload(&device, &x), upload(&device, &w), upload(&device, &b), upload(&device, &dy));
            let (gy, gmean, grstd) = norm_cuda::layer_norm_forward(&xb, &wb, &bb, rows, cols, 1e-5).unwrap();
            let what = format!("layer norm {rows}×{cols}");
            assert_close(&download(&gy), &y, 1e-5, &what);
            assert_close(&download(&gmean), &mean, 1e-5, &format!("{what} mean"));
            assert_close(&download(&grstd), &rstd, 1e-5, &format!("{what} rstd"));
            let (dx, dw, db) = cpu_norm::layer_norm_backward(&x, &dy, &w, &mean, &rstd, rows, cols);
            let (gdx, gdw, gdb) = norm_cuda::layer_norm_backward(&xb, &dyb, &wb, &gmean, &grstd, rows, cols).unwrap();
            assert_close(&download(&gdx), &dx, 1e-5, &format!("{what} dx"));
            assert_close(&download(&gdw), &dw, 1e-5, &format!("{what} dweight"));
            assert_close(&download(&gdb), &db, 1e-5, &format!("{what} dbias"));
            // no atomics: the same bits again
            let (_, again_dw, again_db) = norm_cuda::layer_norm_backward(&xb, &dyb, &wb, &gmean, &grstd, rows, cols).unwrap();
            assert!(download(&again_dw) == download(&gdw) && download(&again_db) == download(&gdb), "{what}: dweight or dbias changed between runs");
        }
    }
}

#[test]
fn flash_attention_forward_and_backward_match_the_cpu() {
    let cases = [
        AttentionShape { bh: 2, sq: 64, sk: 64, d: 32, dv: 32, causal: false }, // the UNet's 8×8 attention
        AttentionShape { bh: 3, sq: 37, sk: 45, d: 17, dv: 9, causal: false },  // odd sizes, partial tiles
        AttentionShape { bh: 1, sq: 1, sk: 1, d: 1, dv: 1, causal: false },
        AttentionShape { bh: 1, sq: 5, sk: 100, d: 64, dv: 64, causal: false },
        AttentionShape { bh: 1, sq: 40, sk: 33, d: 128, dv: 96, causal: false }, // the larger head dims
        AttentionShape { bh: 2, sq: 37, sk: 45, d: 17, dv: 9, causal: true },    // causal, partial tiles
    ];
    for device in devices() {
        for (case, s) in cases.iter().enumerate() {
            let q = values(s.bh * s.sq * s.d, -2.0, 2.0, 100 + case as u64);
            let k = values(s.bh * s.sk * s.d, -2.0, 2.0, 101 + case as u64);
            let v = values(s.bh * s.sk * s.dv, -1.0, 1.0, 102 + case as u64);
            let d_out = values(s.bh * s.sq * s.dv, -1.0, 1.0, 103 + case as u64);
            let scale = 1.0 / (s.d as f32).sqrt();
            let (out, lse) = cpu_attention::attention_forward(&q, &k, &v, None, s, scale);
            let (qb, kb, vb) = (upload(&device, &q), upload(&device, &k), upload(&device, &v));
            let (dq, dk, dv) = cpu_attention::attention_backward(&q, &k, &v, None, &out, &lse, &d_out, s, scale);
            let (mut f32_results, mut tf32_out_difference) = (Vec::new(), 0.0f64);
            // f32 FMAs, then tensor cores in TF32 and with bf16 inputs (--precision tf32|bf16):
            // within the 2e-3 and 1e-2 of the f32 results, not equal to them. (With one
            // key, dq and dk vanish in exact arithmetic: dS = P·(dP − delta) with P = 1 and
            // dP = delta; rounded, they hold the rounding noise of dP, so they are compared in f32
            // only.)
            for (precision, tolerance) in [(Precision::F32, 1e-5), (Precision::Tf32, 2e-3), (Precision::Bf16, 1e-2)] {
                let results = with_precision(precision, || {
                    let (gout, glse) = attention_cuda::attention_forward(&qb, &kb, &vb, None, s, scale as f64).unwrap();
                    let d_out = upload(&device, &d_out);
                    let (gdq, gdk, gdv) = attention_cuda::attention_backward(&qb, &kb, &vb, None, &gout, &glse, &d_out, s, scale as f64).unwrap();
                    [gout, glse, gdq, gdk, gdv].map(|b| download(&b))
                });
                for (name, (result, expected)) in ["out", "lse", "dq", "dk", "dv"].iter().zip(results.iter().zip([&out, &lse, &dq, &dk, &dv])) {
                    let what = format!("{precision} attention {s:?}: {name}");
                    match precision {
                        Precision::F32 => assert_close(result, expected, tolerance, &what),
                        _ if s.sk == 1 && (*name == "dq" || *name == "dk") => {}
                        _ => assert_close(result, expected, tolerance, &what),
                    }
                }
                if precision == Precision::F32 {
                    f32_results = results.to_vec();
                } else {
                    // bf16 (8 significant bits) lands farther from f32 than TF32 (11): the bf16
                    // kernels ran, not the TF32 ones (with one key, out is v rounded, which both
                    // may round alike)
                    if precision == Precision::Bf16 && s.sk > 1 {
                        let (bf16_out, tf32_out) = (relative_difference(&results[0], &f32_results[0]), tf32_out_difference);
                        assert!(bf16_out > 2.0 * tf32_out, "bf16 attention {s:?}: out {bf16_out:e} from f32, TF32 {tf32_out:e}");
                    } else {
                        tf32_out_difference = relative_difference(&results[0], &f32_results[0]);
                    }
                    // every rounded kernel ran: out (forward), dq (dq kernel), dk and dv (dk/dv kernel)
                    for (index, name) in [(0, "out"), (2, "dq"), (3, "dk"), (4, "dv")] {
                        if s.sk == 1 && (name == "dq" || name == "dk") {
                            continue;
                        }
                        let rounded = relative_difference(&results[index], &f32_results[index]);
                        assert!(rounded > 1e-6, "{precision} attention {s:?}: {name} equals the f32 kernel's to {rounded:e}: were the products rounded?");
                    }
                }
            }
        }
    }
}

/// max |a − b| / max |b|.
fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs())).max(1e-30);
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

#[test]
fn kernel_arguments_are_checked_on_the_host() {
    let device = Emulator::new();
    let small = upload(&device, &[1.0, 2.0, 3.0]);
    let too_wide = Layout::contiguous(&[2, 2]);
    assert!(unary_cuda::unary_forward(&small, &too_wide, UnaryOp::Exp).is_err());
    let a = matmul_cuda::GpuMatrix { buffer: &small, offset: 0, row_stride: 2, col_stride: 1, batch_stride: 0 };
    assert!(matmul_cuda::gemm(1, 2, 2, 2, a, a, a, false).is_err());
}

fn to_half_bits(values: &[f32], bf16: bool) -> Vec<u16> {
    values.iter().map(|&v| if bf16 { half::bf16::from_f32(v).to_bits() } else { half::f16::from_f32(v).to_bits() }).collect()
}

fn from_half_bits(bits: &[u16], bf16: bool) -> Vec<f32> {
    bits.iter().map(|&b| if bf16 { half::bf16::from_bits(b).to_f32() } else { half::f16::from_bits(b).to_f32() }).collect()
}

/// `a [m, k] · b [k, n] (+ c)` in f64, rounded to f32.
fn reference_matmul(a: &[f32], b: &[f32], c: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
    (0..m * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            let sum: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            (sum + c.map_or(0.0, |c| c[e] as f64)) as f32
        })
        .collect()
}

fn tensor_core_kernel(name: &'static str) -> ember::tensor::cuda::Kernel {
    ember::tensor::cuda::Kernel { file: "gemm_f16.cu", name }
}

#[test]
fn mma_fragments_follow_the_ptx_layout() {
    use ember::tensor::cuda::{KernelArg, LaunchConfig};
    for device in devices() {
        for bf16 in [false, true] {
            let a = from_half_bits(&to_half_bits(&values(256, -1.0, 1.0, 110), bf16), bf16);
            let b = from_half_bits(&to_half_bits(&values(128, -1.0, 1.0, 111), bf16), bf16);
            let c = values(128, -1.0, 1.0, 112);
            let (ab, bb) =
                (DeviceBuffer::from_slice(&device, &to_half_bits(&a, bf16)).unwrap(), DeviceBuffer::from_slice(&device, &to_half_bits(&b, bf16)).unwrap());
            let (cb, d) = (upload(&device, &c), DeviceBuffer::new(&device, 128 * 4).unwrap());
            device.fill_bytes(d.ptr(), d.bytes(), 0xff).unwrap();
            let args = [ab.arg(), bb.arg(), cb.arg(), d.arg(), KernelArg::I32(bf16 as i32)];
            device.launch(tensor_core_kernel("mma_fragment_check"), &LaunchConfig::linear(1, 32), &args).unwrap();
            assert_close(&download(&d), &reference_matmul(&a, &b, Some(&c), 16, 8, 16), 1e-5, &format!("mma m16n8k16 (bf16 {bf16})"));
        }
    }
}

#[test]
fn ldmatrix_delivers_the_ptx_fragments() {
    use ember::tensor::cuda::LaunchConfig;
    let m: Vec<u16> = (0..256u16).map(|v| v * 7 + 1).collect(); // four 8×8 matrices, distinct values
    let at = |matrix: usize, row: usize, col: usize| m[matrix * 64 + row * 8 + col] as u32;
    let (mut direct, mut transposed) = (vec![0u32; 128], vec![0u32; 64]);
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for j in 0..4 {
            direct[lane * 4 + j] = at(j, g, 2 * t) | at(j, g, 2 * t + 1) << 16;
        }
        for j in 0..2 {
            transposed[lane * 2 + j] = at(j, 2 * t, g) | at(j, 2 * t + 1, g) << 16;
        }
    }
    for device in devices() {
        let source = DeviceBuffer::from_slice(&device, &m).unwrap();
        let (d, t) = (DeviceBuffer::new(&device, 128 * 4).unwrap(), DeviceBuffer::new(&device, 64 * 4).unwrap());
        device.launch(tensor_core_kernel("ldmatrix_check"), &LaunchConfig::linear(1, 32), &[source.arg(), d.arg(), t.arg()]).unwrap();
        assert_eq!(d.to_vec::<u32>().unwrap(), direct, "ldmatrix.x4");
        assert_eq!(t.to_vec::<u32>().unwrap(), transposed, "ldmatrix.x2.trans");
    }
}

/// f32 → TF32 as cvt.rna.tf32.f32 does it, computed from the value (not its bits): keep 11
/// significant bits (10 stored), the step being 2^(e − 10) for exponent e (subnormals at
/// e = −126), round half away from zero, overflow to infinity; NaN stays NaN.
fn tf32_reference(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    if x == 0.0 {
        return x;
    }
    let exponent = (x.abs() as f64).log2().floor().max(-126.0);
    let step = 2f64.powf(exponent - 10.0);
    let rounded = ((x.abs() as f64) / step + 0.5).floor() * step;
    let magnitude = if rounded > f32::MAX as f64 { f32::INFINITY } else { rounded as f32 };
    magnitude.copysign(x)
}

/// The TF32 tensor-core instruction (mma.m16n8k8) with fragments loaded by the PTX ISA's
/// formulas, and the f32 → TF32 rounding on ties, subnormals, the largest finite values,
/// infinities and NaN.
#[test]
fn tf32_mma_fragments_and_rounding_follow_the_ptx_isa() {
    use ember::tensor::cuda::LaunchConfig;
    let mut a = values(128, -1.0, 1.0, 140);
    let tie = f32::from_bits(0x3f80_1000); // 1 + 2^-11: halfway between two TF32 values
    let specials = [tie, -tie, f32::from_bits(0x3f80_0fff), f32::from_bits(0x3f80_1001), f32::MAX, -f32::MAX, 1e-40, -3e-39, 0.0, -0.0];
    a[..specials.len()].copy_from_slice(&specials);
    let b = values(64, -1.0, 1.0, 141);
    let c = values(128, -1.0, 1.0, 142);
    let (a_tf32, b_tf32): (Vec<f32>, Vec<f32>) = (a.iter().map(|&v| tf32_reference(v)).collect(), b.iter().map(|&v| tf32_reference(v)).collect());
    assert_eq!(tf32_reference(tie), f32::from_bits(0x3f80_2000));
    assert_eq!(tf32_reference(f32::MAX), f32::INFINITY);
    for device in devices() {
        let (ab, bb, cb) = (upload(&device, &a), upload(&device, &b), upload(&device, &c));
        let d = DeviceBuffer::new(&device, 128 * 4).unwrap();
        let (ta, tb) = (DeviceBuffer::new(&device, 128 * 4).unwrap(), DeviceBuffer::new(&device, 64 * 4).unwrap());
        for buffer in [&d, &ta, &tb] {
            device.fill_bytes(buffer.ptr(), buffer.bytes(), 0xff).unwrap();
        }
        let args = [ab.arg(), bb.arg(), cb.arg(), d.arg(), ta.arg(), tb.arg()];
        device.launch(tensor_core_kernel("mma_tf32_fragment_check"), &LaunchConfig::linear(1, 32), &args).unwrap();
        let bits = |buffer: &DeviceBuffer| buffer.to_vec::<u32>().unwrap();
        let want = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&ta), want(&a_tf32), "A rounded to TF32");
        assert_eq!(bits(&tb), want(&b_tf32), "B rounded to TF32");
        // the product of two TF32 values is exact in f32: only the summation order differs
        let finite: Vec<f32> = a_tf32.iter().map(|&v| if v.is_finite() { v } else { 0.0 }).collect();
        let (expected, actual) = (reference_matmul(&a_tf32, &b_tf32, Some(&c), 16, 8, 8), download(&d));
        for row in 0..16 {
            let has_infinity = a_tf32[row * 8..(row + 1) * 8].iter().any(|v| v.is_infinite());
            for col in 0..8 {
                let (e, x) = (expected[row * 8 + col], actual[row * 8 + col]);
                if has_infinity {
                    assert!(x.is_infinite() || x.is_nan(), "row {row} holds an infinity: {x}");
                } else {
                    let scale = finite.iter().map(|v| v.abs()).fold(1.0f32, f32::max);
                    assert!((x - e).abs() <= 1e-5 * scale, "mma tf32 ({row}, {col}): {x} against {e}");
                }
            }
        }
    }
    // the NaN rule, on the emulator (a GPU's NaN payload may differ)
    let nan = f32::from_bits(0x7f80_0001);
    let device = Emulator::new();
    let (ab, bb, cb) = (upload(&device, &[nan; 128]), upload(&device, &[1.0; 64]), upload(&device, &[0.0; 128]));
    let (d, ta, tb) = (DeviceBuffer::new(&device, 512).unwrap(), DeviceBuffer::new(&device, 512).unwrap(), DeviceBuffer::new(&device, 256).unwrap());
    device
        .launch(tensor_core_kernel("mma_tf32_fragment_check"), &LaunchConfig::linear(1, 32), &[ab.arg(), bb.arg(), cb.arg(), d.arg(), ta.arg(), tb.arg()])
        .unwrap();
    assert!(ta.to_vec::<u32>().unwrap().iter().all(|&t| f32::from_bits(t).is_nan()));
    assert!(download(&d).iter().all(|v| v.is_nan()));
}

#[test]
fn tensor_core_gemm_matches_the_cpu_for_f16_and_bf16() {
    // (m, n, k): whole tiles, odd sizes (scalar loads at the edges), k not a multiple of 8
    // (no cp.async), one element.
    let cases = [(64, 64, 32), (130, 70, 48), (33, 17, 21), (1, 1, 1)];
    for device in devices() {
        for bf16 in [false, true] {
            for (case, &(m, n, k)) in cases.iter().enumerate() {
                let a = from_half_bits(&to_half_bits(&values(m * k, -1.0, 1.0, 120 + case as u64), bf16), bf16);
                let b = from_half_bits(&to_half_bits(&values(k * n, -1.0, 1.0, 130 + case as u64), bf16), bf16);
                let ab = DeviceBuffer::from_slice(&device, &to_half_bits(&a, bf16)).unwrap();
                let bb = DeviceBuffer::from_slice(&device, &to_half_bits(&b, bf16)).unwrap();
                let c = kernels::gemm_f16(&ab, &bb, m, n, k, bf16).unwrap();
                // The products of 16-bit values are exact in f32: only the summation order differs.
                assert_close(&download(&c), &reference_matmul(&a, &b, None, m, n, k), 1e-5, &format!("gemm_f16 {m}×{n}×{k} (bf16 {bf16})"));
            }
        }
    }
}

/// Checks a tensor-core product against the same product of the rounded operands (`rounded`,
/// computed in f32 on the CPU: only the summation order may differ) and the exact f32 one
/// (`exact`: within `tolerance`, the 2e-3 for TF32 and 1e-2 for bf16), each element
/// relative to its own Σ|a||b| (`bound`), and that the rounding happened (the result is much
/// nearer `rounded` than `exact`).
fn assert_rounded_product(actual: &[f32], exact: &[f32], rounded: &[f32], bound: &[f32], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), exact.len(), "{what}: length");
    let (mut from_rounded, mut from_exact) = (0.0f64, 0.0f64);
    for i in 0..actual.len() {
        let (a, scale) = (actual[i] as f64, (bound[i] as f64).max(1e-30));
        assert!(a.is_finite(), "{what}: element {i} is {a}");
        from_rounded = from_rounded.max((a - rounded[i] as f64).abs() / scale);
        from_exact = from_exact.max((a - exact[i] as f64).abs() / scale);
    }
    assert!(from_rounded <= 2e-5, "{what}: {from_rounded:e} of Σ|a||b| from the product of the rounded operands");
    assert!(from_exact <= tolerance, "{what}: {from_exact:e} of Σ|a||b| from the f32 product");
    assert!(from_exact > 10.0 * from_rounded, "{what}: not rounded (f32 error {from_exact:e}, rounded error {from_rounded:e})");
}

/// The tensor-core tiles (ember_tile_gemm_tf32, ember_tile_gemm_bf16) behind matmul and the
/// three products of a convolution, when the thread's precision is TF32 or bf16: on both
/// tiles, with edges, the four storage orders, split depths, strides and padding; outputs
/// poisoned.
#[test]
fn tensor_core_products_round_like_the_hardware_and_stay_near_f32() {
    for (precision, tolerance) in [(Precision::Tf32, 2e-3), (Precision::Bf16, 1e-2)] {
        let round = |v: &[f32]| {
            v.iter().map(|&x| if precision == Precision::Tf32 { tf32_reference(x) } else { half::bf16::from_f32(x).to_f32() }).collect::<Vec<f32>>()
        };
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        // (batch, m, n, k, A transposed, B transposed): the four storage orders; the last splits k
        // (one 64-tile, k = 1000)
        let gemms = [
            (1, 7, 13, 5, false, false),
            (2, 65, 63, 17, true, false),
            (1, 33, 70, 40, false, true),
            (1, 129, 70, 100, true, true),
            (1, 20, 33, 1000, true, false),
        ];
        for device in devices() {
            for (case, &(batch, m, n, k, a_t, b_t)) in gemms.iter().enumerate() {
                let a_data = values(batch * m * k, -1.0, 1.0, 150 + case as u64);
                let b_data = values(batch * k * n, -1.0, 1.0, 160 + case as u64);
                let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
                let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
                let cpu = |a: &[f32], b: &[f32]| {
                    let mut c = vec![0.0f32; batch * m * n];
                    for z in 0..batch {
                        let a = MatRef { data: &a[z * m * k..], row_stride: a_rs, col_stride: a_cs };
                        let b = MatRef { data: &b[z * k * n..], row_stride: b_rs, col_stride: b_cs };
                        cpu_gemm(m, n, k, a, b, &mut c[z * m * n..(z + 1) * m * n], n, false);
                    }
                    c
                };
                let (exact, rounded, bound) = (cpu(&a_data, &b_data), cpu(&round(&a_data), &round(&b_data)), cpu(&abs(&a_data), &abs(&b_data)));
                let (a_buf, b_buf) = (upload(&device, &a_data), upload(&device, &b_data));
                let a = matmul_cuda::GpuMatrix { buffer: &a_buf, offset: 0, row_stride: a_rs, col_stride: a_cs, batch_stride: m * k };
                let b = matmul_cuda::GpuMatrix { buffer: &b_buf, offset: 0, row_stride: b_rs, col_stride: b_cs, batch_stride: k * n };
                for tile in [128, 64] {
                    let c_buf = DeviceBuffer::new(&device, batch * m * n * 4).unwrap();
                    let c = matmul_cuda::GpuMatrix { buffer: &c_buf, offset: 0, row_stride: n, col_stride: 1, batch_stride: m * n };
                    with_precision(precision, || launch_cuda::with_tile_size(tile, || matmul_cuda::gemm(batch, m, n, k, a, b, c, false))).unwrap();
                    assert_rounded_product(
                        &download(&c_buf),
                        &exact,
                        &rounded,
                        &bound,
                        tolerance,
                        &format!("{precision} gemm {:?} on {tile}-tiles", gemms[case]),
                    );
                }
            }
            for (case, g) in conv_cases().iter().enumerate() {
                let [x, w, bias, dy] = conv_inputs(g, 170 + 4 * case as u64);
                let (xb, wb, bb, dyb) = (upload(&device, &x), upload(&device, &w), upload(&device, &bias), upload(&device, &dy));
                let forward = |x: &[f32], w: &[f32], bias: &[f32]| cpu_conv::conv2d_forward(x, w, Some(bias), g);
                let input = |dy: &[f32], w: &[f32]| cpu_conv::conv2d_backward_input(dy, w, g);
                let weight = |x: &[f32], dy: &[f32]| cpu_conv::conv2d_backward_weight(x, dy, g);
                for tile in [128, 64] {
                    with_precision(precision, || {
                        launch_cuda::with_tile_size(tile, || {
                            let what = |product: &str| format!("{precision} {product} on {tile}-tiles {g:?}");
                            let y = download(&conv_cuda::conv2d_forward(&xb, &wb, Some(&bb), g).unwrap());
                            let bound = forward(&abs(&x), &abs(&w), &abs(&bias));
                            assert_rounded_product(&y, &forward(&x, &w, &bias), &forward(&round(&x), &round(&w), &bias), &bound, tolerance, &what("forward"));
                            let dx = download(&conv_cuda::conv2d_backward_input(&dyb, &wb, g).unwrap());
                            let bound = input(&abs(&dy), &abs(&w));
                            assert_rounded_product(&dx, &input(&dy, &w), &input(&round(&dy), &round(&w)), &bound, tolerance, &what("backward input"));
                            let dw = download(&conv_cuda::conv2d_backward_weight(&xb, &dyb, g).unwrap());
                            let bound = weight(&abs(&x), &abs(&dy));
                            assert_rounded_product(&dw, &weight(&x, &dy), &weight(&round(&x), &round(&dy)), &bound, tolerance, &what("backward weight"));
                        })
                    });
                }
            }
        }
    }
}

/// f32 → bf16 as the bf16 products round their inputs (ember_f32_to_bf16: cvt.rn.bf16.f32 on
/// a GPU), against the `half` crate's round to nearest even: ties both ways, the largest
/// finite values (to infinity), subnormals, zeros, infinities; NaN stays NaN.
#[test]
fn bf16_rounding_is_round_to_nearest_even() {
    use ember::tensor::cuda::{KernelArg, LaunchConfig};
    let mut inputs: Vec<f32> =
        [0x3f80_8000u32, 0x3f81_8000, 0xbf80_8000, 0xbf81_8000, 0x3f80_8001, 0x3f81_7fff, 0x7f7f_ffff, 0xff7f_ffff, 0x0000_8000, 0x0001_8000, 0x8000_0001]
            .iter()
            .map(|&b| f32::from_bits(b))
            .chain([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -3e-39])
            .collect();
    inputs.extend(values(100, -1e3, 1e3, 210));
    let expected: Vec<u16> = inputs.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
    assert_eq!(half::bf16::from_f32(f32::from_bits(0x3f80_8000)).to_bits(), 0x3f80, "a tie rounds to even (down)");
    assert_eq!(half::bf16::from_f32(f32::from_bits(0x3f81_8000)).to_bits(), 0x3f82, "a tie rounds to even (up)");
    for device in devices() {
        let (n, x) = (inputs.len(), upload(&device, &inputs));
        let bits = DeviceBuffer::new(&device, n * 2).unwrap();
        device
            .launch(
                tensor_core_kernel("bf16_round_check"),
                &LaunchConfig::linear(n.div_ceil(128) as u32, 128),
                &[x.arg(), bits.arg(), KernelArg::I32(n as i32)],
            )
            .unwrap();
        assert_eq!(bits.to_vec::<u16>().unwrap(), expected);
        let nan = upload(&device, &[f32::NAN, f32::from_bits(0x7f80_0001)]);
        device.launch(tensor_core_kernel("bf16_round_check"), &LaunchConfig::linear(1, 32), &[nan.arg(), bits.arg(), KernelArg::I32(2)]).unwrap();
        assert!(bits.to_vec::<u16>().unwrap()[..2].iter().all(|&b| half::bf16::from_bits(b).is_nan()), "NaN stays NaN");
    }
}

/// peak_mma_tf32 and peak_mma_bf16 (the tensor-core ceilings of benches/cuda_kernels.rs) run
/// all their chains: each lane's sum is exactly the one computed on the CPU from the
/// fragments' PTX layout (bf16: each register's two halves hold the TF32 register's value,
/// so A·B over k = 16 is twice the TF32 product).
#[test]
fn the_tensor_core_ceiling_kernels_run_every_mma_chain() {
    use ember::tensor::cuda::{Kernel, KernelArg, LaunchConfig};
    let a = |lane: usize, j: usize| ((lane + j) % 8) as f64 / 64.0;
    let b = |lane: usize, j: usize| ((lane + 2 * j) % 4) as f64 / 64.0;
    // lane 4g + t holds A's (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4) and B's (t, g), (t + 4, g)
    let (mut a_matrix, mut b_matrix) = ([[0.0f64; 8]; 16], [[0.0f64; 8]; 8]);
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for (j, (row, col)) in [(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)].into_iter().enumerate() {
            a_matrix[row][col] = a(lane, j);
        }
        b_matrix[t][g] = b(lane, 0);
        b_matrix[t + 4][g] = b(lane, 1);
    }
    let product = |row: usize, col: usize| (0..8).map(|k| a_matrix[row][k] * b_matrix[k][col]).sum::<f64>();
    let (chains, iterations) = (8, 3);
    let expected = |bf16: bool| -> Vec<f32> {
        (0..64)
            .map(|thread| {
                let (g, t) = (thread % 32 / 4, thread % 4);
                let step: f64 = [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)].iter().map(|&(r, c)| product(r, c)).sum();
                let step = if bf16 { 2.0 * step } else { step };
                (0..chains).map(|c| 4.0 * c as f64 / 16.0 + iterations as f64 * step).sum::<f64>() as f32
            })
            .collect()
    };
    for device in devices() {
        for (name, bf16) in [("peak_mma_tf32", false), ("peak_mma_bf16", true)] {
            let out = DeviceBuffer::new(&device, 64 * 4).unwrap();
            device.launch(Kernel { file: "peak.cu", name }, &LaunchConfig::linear(2, 32), &[out.arg(), KernelArg::I32(iterations)]).unwrap();
            assert_eq!(download(&out), expected(bf16), "{name}");
        }
    }
}
