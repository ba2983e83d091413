//! CUDA kernel benchmarks: ember's own kernels (`kernels/*.cu`) against PyTorch (cuBLAS,
//! cuDNN, SDPA) on the same GPU in the same run, on the shapes of the UNet presets
//! (`ddpm-cifar10`, `labml`) at batch 128, in f32, or with `--precision tf32|bf16` the
//! products (GEMM, the three convolutions and attention's) on tensor cores in TF32 or with
//! bf16 inputs (`ember::tensor::precision`; ember's tensors stay f32 in memory).
//!
//! - The device's ceilings are measured first, with our own kernels (`kernels/peak.cu`): f32
//!   FMA throughput, TF32 and bf16 tensor-core throughput (mma.m16n8k8, mma.m16n8k16) and
//!   copy bandwidth. Every case is reported as TFLOP/s (GB/s for the memory-bound group norm)
//!   and as a percentage of the ceiling of the units it runs on: GEMM, the convolutions and
//!   attention of the TF32 or bf16 ceiling with `--precision tf32|bf16` and of the FMA
//!   ceiling in f32, group norm of the copy ceiling.
//! - ember's side calls the host functions of `ops::<op>::cuda` directly (no tensors, no
//!   autograd): after a warm-up, the median of several samples, each a batch of calls lasting
//!   about 5 ms, bracketed by `synchronize` and timed with `Instant`.
//! - PyTorch's side is `benches/torch_cuda_kernels.py` in a subprocess (`.venv/bin/python` if
//!   it has torch with CUDA, else `python3`), timed with CUDA events the same way. PyTorch's
//!   TF32 (`allow_tf32` for cuBLAS and cuDNN) follows `--precision`, and with bf16 its
//!   products' inputs are bf16 tensors (group norm stays f32, as under autocast), so both
//!   sides multiply alike (PyTorch then also reads and writes half the bytes, and cuBLAS may
//!   reduce in bf16: `allow_bf16_reduced_precision_reduction`; ember moves f32); `cudnn.benchmark` lets cuDNN pick its best algorithm.
//!
//! Run: `cargo bench --features cuda --bench cuda_kernels -- [--quick] [--only SUBSTRING]
//! [--runs N] [--precision f32|tf32|bf16]` (on a lent GPU: `bash scripts/gpu_check.sh`). Without a
//! GPU it prints `SKIPPED: no CUDA GPU (reason)` and exits 0; a kernel that fails on a GPU makes
//! it exit 1; an unknown `--precision` makes it exit 2.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use ember::tensor::Result;
use ember::tensor::cuda::driver::CudaDevice;
use ember::tensor::cuda::{DeviceBuffer, GpuBackend, Kernel, KernelArg, LaunchConfig};
use ember::tensor::ops::attention::AttentionShape;
use ember::tensor::ops::attention::cuda as attention_cuda;
use ember::tensor::ops::conv::ConvGeometry;
use ember::tensor::ops::conv::cuda as conv_cuda;
use ember::tensor::ops::matmul::cuda as matmul_cuda;
use ember::tensor::ops::norm::GroupNormShape;
use ember::tensor::ops::norm::cuda as norm_cuda;
use ember::tensor::precision::{Precision, set_precision};
use serde_json::{Value, json};

/// The batch of every case (the training batch).
const BATCH: usize = 128;
/// Groups of every group norm, and its eps (both presets).
const GROUPS: usize = 32;
const NORM_EPS: f64 = 1e-6;
/// Independent FMA chains per thread in `peak_fma_f32` (`PEAK_CHAINS` in kernels/peak.cu).
const PEAK_FMA_CHAINS: usize = 16;
/// Independent mma chains per warp in `peak_mma_tf32` and `peak_mma_bf16` (`PEAK_MMA_CHAINS`
/// in kernels/peak.cu).
const PEAK_MMA_CHAINS: usize = 8;
/// The flops of one mma.m16n8k8 (TF32) and one mma.m16n8k16 (bf16), which a whole warp
/// issues: 16·8·8 and 16·8·16 multiply-adds.
const MMA_TF32_FLOPS: usize = 2 * 16 * 8 * 8;
const MMA_BF16_FLOPS: usize = 2 * 16 * 8 * 16;
/// How long one timing sample lasts: enough calls that launch and synchronization costs
/// average out.
const SAMPLE_SECONDS: f64 = 5e-3;

/// What one case runs; the shapes follow the CPU kernels' conventions.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `C = A·B`, A `[m, k]` and B `[k, n]` row-major (torch.matmul).
    Matmul {
        m: usize,
        n: usize,
        k: usize,
    },
    /// `y = x·Wᵀ`, x `[m, k]` and W `[n, k]` as nn.Linear stores it (F.linear, no bias).
    Linear {
        m: usize,
        n: usize,
        k: usize,
    },
    ConvForward(ConvGeometry),
    ConvBackwardInput(ConvGeometry),
    ConvBackwardWeight(ConvGeometry),
    AttentionForward(AttentionShape),
    AttentionBackward(AttentionShape),
    GroupNormForward(GroupNormShape),
    GroupNormBackward(GroupNormShape),
}

/// The work of one call, for the throughput columns.
enum Work {
    /// Floating-point operations (an FMA is 2), against a FLOP/s ceiling ([`Op::ceiling`]).
    Flops(f64),
    /// Bytes that must cross memory at least once, against the copy ceiling ([`Op::ceiling`]).
    Bytes(f64),
}

struct Case {
    name: String,
    op: Op,
}

impl Op {
    /// The op family, for the closing summary.
    fn family(&self) -> &'static str {
        match self {
            Op::Matmul { .. } | Op::Linear { .. } => "gemm",
            Op::ConvForward(_) | Op::ConvBackwardInput(_) | Op::ConvBackwardWeight(_) => "conv",
            Op::AttentionForward(_) | Op::AttentionBackward(_) => "attention",
            Op::GroupNormForward(_) | Op::GroupNormBackward(_) => "group_norm",
        }
    }

    /// The ceiling that "% ceil" divides by, of the units the case runs on: the tensor cores
    /// for GEMM, the convolutions and attention in TF32 or bf16, the FMA units in f32, memory
    /// for group norm.
    fn ceiling(&self, ceilings: &Ceilings, precision: Precision) -> f64 {
        match (self, precision) {
            (Op::GroupNormForward(_) | Op::GroupNormBackward(_), _) => ceilings.copy,
            (_, Precision::F32) => ceilings.fma,
            (_, Precision::Tf32) => ceilings.mma_tf32,
            (_, Precision::Bf16) => ceilings.mma_bf16,
        }
    }

    fn work(&self) -> Work {
        let conv = |g: &ConvGeometry| 2.0 * (g.n * g.c_out * g.ho * g.wo * g.c_in * g.kh * g.kw) as f64;
        // Forward: q·kᵀ and p·v. Backward (as FlashAttention counts it, 2.5× the forward when
        // d = dv): q·kᵀ again, dv = pᵀ·do, dp = do·vᵀ, dq = ds·k, dk = dsᵀ·q.
        let attention = |s: &AttentionShape, d_terms: usize, dv_terms: usize| 2.0 * (s.bh * s.sq * s.sk * (d_terms * s.d + dv_terms * s.dv)) as f64;
        let elements = |s: &GroupNormShape| (s.n * s.channels * s.positions * 4) as f64;
        match self {
            Op::Matmul { m, n, k } | Op::Linear { m, n, k } => Work::Flops(2.0 * (m * n * k) as f64),
            Op::ConvForward(g) | Op::ConvBackwardInput(g) | Op::ConvBackwardWeight(g) => Work::Flops(conv(g)),
            Op::AttentionForward(s) => Work::Flops(attention(s, 1, 1)),
            Op::AttentionBackward(s) => Work::Flops(attention(s, 3, 2)),
            // x in, y out / x and dy in, dx out
            Op::GroupNormForward(s) => Work::Bytes(2.0 * elements(s)),
            Op::GroupNormBackward(s) => Work::Bytes(3.0 * elements(s)),
        }
    }

    /// What the PyTorch script needs to build the same case.
    fn torch_spec(&self, name: &str) -> Value {
        let conv = |op: &str, g: &ConvGeometry| {
            json!({"name": name, "op": op, "x": [g.n, g.c_in, g.h, g.w], "w": [g.c_out, g.c_in, g.kh, g.kw],
                   "stride": g.stride[0], "padding": g.padding[0]})
        };
        let attention = |op: &str, s: &AttentionShape| json!({"name": name, "op": op, "bh": s.bh, "sq": s.sq, "sk": s.sk, "d": s.d, "dv": s.dv});
        let norm = |op: &str, s: &GroupNormShape| json!({"name": name, "op": op, "x": [s.n, s.channels, s.positions], "groups": s.groups, "eps": NORM_EPS});
        match self {
            Op::Matmul { m, n, k } => json!({"name": name, "op": "matmul", "a": [m, k], "b": [k, n]}),
            Op::Linear { m, n, k } => json!({"name": name, "op": "linear", "x": [m, k], "w": [n, k]}),
            Op::ConvForward(g) => conv("conv2d_forward", g),
            Op::ConvBackwardInput(g) => conv("conv2d_backward_input", g),
            Op::ConvBackwardWeight(g) => conv("conv2d_backward_weight", g),
            Op::AttentionForward(s) => attention("attention_forward", s),
            Op::AttentionBackward(s) => attention("attention_backward", s),
            Op::GroupNormForward(s) => norm("group_norm_forward", s),
            Op::GroupNormBackward(s) => norm("group_norm_backward", s),
        }
    }

    /// Allocates the inputs (random) and returns the call to time. Outputs are allocated by
    /// each call, as the ops do; the device's caching allocator hands the same blocks back.
    fn prepare(&self, backend: &Arc<dyn GpuBackend>) -> Result<Box<dyn FnMut() -> Result<()>>> {
        let input = |n: usize, seed: u64| random(backend, n, seed);
        Ok(match *self {
            Op::Matmul { m, n, k } | Op::Linear { m, n, k } => {
                let (a, b, c) = (input(m * k, 1)?, input(k * n, 2)?, DeviceBuffer::new(backend, m * n * 4)?);
                // B is [k, n] row-major for matmul; for linear it is Wᵀ, W being [n, k] row-major.
                let (b_row, b_col) = if matches!(self, Op::Matmul { .. }) { (n, 1) } else { (1, k) };
                fn matrix(buffer: &DeviceBuffer, row_stride: usize, col_stride: usize) -> matmul_cuda::GpuMatrix<'_> {
                    matmul_cuda::GpuMatrix { buffer, offset: 0, row_stride, col_stride, batch_stride: 0 }
                }
                Box::new(move || matmul_cuda::gemm(1, m, n, k, matrix(&a, k, 1), matrix(&b, b_row, b_col), matrix(&c, n, 1), false))
            }
            Op::ConvForward(g) => {
                let (x, w) = (input(g.n * g.c_in * g.h * g.w, 3)?, input(g.c_out * g.c_in * g.kh * g.kw, 4)?);
                Box::new(move || conv_cuda::conv2d_forward(&x, &w, None, &g).map(drop))
            }
            Op::ConvBackwardInput(g) => {
                let (dy, w) = (input(g.n * g.c_out * g.ho * g.wo, 5)?, input(g.c_out * g.c_in * g.kh * g.kw, 4)?);
                Box::new(move || conv_cuda::conv2d_backward_input(&dy, &w, &g).map(drop))
            }
            Op::ConvBackwardWeight(g) => {
                let (x, dy) = (input(g.n * g.c_in * g.h * g.w, 3)?, input(g.n * g.c_out * g.ho * g.wo, 5)?);
                Box::new(move || conv_cuda::conv2d_backward_weight(&x, &dy, &g).map(drop))
            }
            Op::AttentionForward(s) => {
                let (q, k, v) = (input(s.bh * s.sq * s.d, 6)?, input(s.bh * s.sk * s.d, 7)?, input(s.bh * s.sk * s.dv, 8)?);
                let scale = 1.0 / (s.d as f64).sqrt();
                Box::new(move || attention_cuda::attention_forward(&q, &k, &v, None, &s, scale).map(drop))
            }
            Op::AttentionBackward(s) => {
                let (q, k, v) = (input(s.bh * s.sq * s.d, 6)?, input(s.bh * s.sk * s.d, 7)?, input(s.bh * s.sk * s.dv, 8)?);
                let d_out = input(s.bh * s.sq * s.dv, 9)?;
                let scale = 1.0 / (s.d as f64).sqrt();
                let (out, lse) = attention_cuda::attention_forward(&q, &k, &v, None, &s, scale)?;
                Box::new(move || attention_cuda::attention_backward(&q, &k, &v, None, &out, &lse, &d_out, &s, scale).map(drop))
            }
            Op::GroupNormForward(s) => {
                let (x, w, b) = (input(s.n * s.channels * s.positions, 10)?, input(s.channels, 11)?, input(s.channels, 12)?);
                Box::new(move || norm_cuda::group_norm_forward(&x, &w, &b, &s, NORM_EPS, false).map(drop))
            }
            Op::GroupNormBackward(s) => {
                let (x, dy) = (input(s.n * s.channels * s.positions, 10)?, input(s.n * s.channels * s.positions, 13)?);
                let (w, b) = (input(s.channels, 11)?, input(s.channels, 12)?);
                let (_, mean, rstd) = norm_cuda::group_norm_forward(&x, &w, &b, &s, NORM_EPS, false)?;
                Box::new(move || norm_cuda::group_norm_backward(&x, &dy, &w, &b, &mean, &rstd, &s, false).map(drop))
            }
        })
    }
}

/// A device buffer of `n` values in [-0.5, 0.5) (xorshift, seeded), as the tests draw them.
fn random(backend: &Arc<dyn GpuBackend>, n: usize, seed: u64) -> Result<DeviceBuffer> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 41) as f32 / (1u64 << 23) as f32 - 0.5
        })
        .collect();
    DeviceBuffer::from_slice(backend, &values)
}

/// A convolution of the UNet at batch 128 on a square `size`×`size` input.
fn conv(c_in: usize, c_out: usize, size: usize, kernel: usize, stride: usize, padding: usize) -> ConvGeometry {
    let out = (size + 2 * padding - kernel) / stride + 1;
    ConvGeometry {
        n: BATCH,
        c_in,
        h: size,
        w: size,
        c_out,
        kh: kernel,
        kw: kernel,
        stride: [stride, stride],
        padding: [padding, padding],
        dilation: [1, 1],
        ho: out,
        wo: out,
    }
}

/// Every case, in table order; `quick` keeps a few of each family.
fn cases(quick: bool) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: String, op: Op, in_quick: bool| {
        if in_quick || !quick {
            cases.push(Case { name, op });
        }
    };
    // GEMM: a large square, then the UNet's linear layers at batch 128.
    add("gemm_4096x4096x4096".into(), Op::Matmul { m: 4096, n: 4096, k: 4096 }, true);
    for (m, n, k, in_quick) in [
        (BATCH * 256, 256, 256, true), // ddpm-cifar10 attention q/k/v/out: 16×16 tokens, 256 channels
        (BATCH * 64, 128, 128, false), // labml attention projections: 8×8 tokens, 128 channels
        (BATCH, 512, 512, false),      // ddpm-cifar10 time embedding, second linear
        (BATCH, 256, 512, false),      // a resnet's time_emb_proj, 512 → 256
    ] {
        add(format!("linear_{m}x{n}x{k}"), Op::Linear { m, n, k }, in_quick);
    }
    // Convolutions: (c_in, c_out, input size, kernel, stride, padding). The stride-2
    // downsamples take the input padded on the right and bottom to 33×33, as DDPM's does.
    for (c_in, c_out, size, kernel, stride, padding, in_quick) in [
        (64, 64, 32, 3, 1, 1, false),   // labml level 0 (32×32)
        (128, 128, 32, 3, 1, 1, true),  // ddpm-cifar10 level 0
        (256, 128, 32, 3, 1, 1, false), // ddpm-cifar10 up path, level 0 (skip concatenated)
        (128, 256, 16, 3, 1, 1, false), // ddpm-cifar10 level 1, first conv (16×16)
        (256, 256, 16, 3, 1, 1, true),  // ddpm-cifar10 level 1
        (128, 128, 16, 3, 1, 1, false), // labml level 1
        (256, 256, 8, 3, 1, 1, false),  // ddpm-cifar10 level 2 (8×8)
        (128, 128, 8, 3, 1, 1, false),  // labml level 2
        (256, 256, 4, 3, 1, 1, true),   // level 3 and the mid block of both presets (4×4)
        (128, 128, 33, 3, 2, 0, true),  // ddpm-cifar10 downsample 32 → 16
        (64, 64, 33, 3, 2, 0, false),   // labml downsample 32 → 16
        (128, 256, 16, 1, 1, 0, true),  // ddpm-cifar10 1×1 shortcut 128 → 256
        (512, 256, 8, 1, 1, 0, false),  // ddpm-cifar10 up-path 1×1 shortcut 512 → 256
    ] {
        let g = conv(c_in, c_out, size, kernel, stride, padding);
        let shape = format!("conv{kernel}x{kernel}{}_c{c_in}_o{c_out}_{size}x{size}", if stride > 1 { "s2" } else { "" });
        add(format!("{shape}_fwd"), Op::ConvForward(g), in_quick);
        add(format!("{shape}_bwd_input"), Op::ConvBackwardInput(g), in_quick);
        add(format!("{shape}_bwd_weight"), Op::ConvBackwardWeight(g), in_quick);
    }
    // Attention: one head over all channels, pixels as tokens, so bh = batch.
    for (tokens, d, in_quick) in [
        (256, 256, true), // ddpm-cifar10 level 1 (16×16, 256 channels)
        (256, 128, true), // 16×16 with 128 channels
        (256, 64, false), // 16×16 with 64 channels
        (64, 128, false), // labml level 2 (8×8, 128 channels)
        (64, 256, true),  // 8×8 with 256 channels
        (16, 256, false), // labml level 3 and both mid blocks (4×4, 256 channels)
    ] {
        let s = AttentionShape { bh: BATCH, sq: tokens, sk: tokens, d, dv: d, causal: false };
        add(format!("attention_s{tokens}_d{d}_fwd"), Op::AttentionForward(s), in_quick);
        add(format!("attention_s{tokens}_d{d}_bwd"), Op::AttentionBackward(s), in_quick);
    }
    // Group norm on the resnets' activations: (channels, size).
    for (channels, size, in_quick) in [
        (128, 32, true),  // ddpm-cifar10 level 0
        (64, 32, false),  // labml level 0
        (256, 16, true),  // ddpm-cifar10 level 1
        (128, 16, false), // labml level 1
        (256, 8, false),  // ddpm-cifar10 level 2
        (256, 4, false),  // level 3 and the mid blocks
    ] {
        let s = GroupNormShape { n: BATCH, channels, groups: GROUPS, positions: size * size };
        add(format!("group_norm_c{channels}_{size}x{size}_fwd"), Op::GroupNormForward(s), in_quick);
        add(format!("group_norm_c{channels}_{size}x{size}_bwd"), Op::GroupNormBackward(s), in_quick);
    }
    cases
}

/// Seconds per call of `run`, `calls` calls bracketed by `synchronize`.
fn sample(backend: &dyn GpuBackend, calls: usize, run: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    backend.synchronize()?;
    let start = Instant::now();
    for _ in 0..calls {
        run()?;
    }
    backend.synchronize()?;
    Ok(start.elapsed().as_secs_f64() / calls as f64)
}

/// The median seconds per call of `run` over `runs` samples, after a warm-up (the first call
/// also compiles the kernel file with NVRTC) and one discarded sample.
fn median_seconds(backend: &dyn GpuBackend, runs: usize, run: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    sample(backend, 1, run)?;
    let once = sample(backend, 1, run)?;
    let calls = ((SAMPLE_SECONDS / once.max(1e-7)).ceil() as usize).clamp(1, 1000);
    sample(backend, calls, run)?;
    let mut samples = (0..runs.max(1)).map(|_| sample(backend, calls, run)).collect::<Result<Vec<f64>>>()?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// The device's ceilings, measured with kernels/peak.cu.
struct Ceilings {
    /// f32 FMA FLOP/s (`peak_fma_f32`).
    fma: f64,
    /// TF32 tensor-core FLOP/s, mma.m16n8k8 (`peak_mma_tf32`).
    mma_tf32: f64,
    /// bf16 tensor-core FLOP/s, mma.m16n8k16 (`peak_mma_bf16`).
    mma_bf16: f64,
    /// Copy bandwidth, bytes read plus bytes written per second (`peak_copy_f32`).
    copy: f64,
}

fn measure_ceilings(backend: &Arc<dyn GpuBackend>, runs: usize) -> Result<Ceilings> {
    // FMA: 65536 blocks of 256 threads (dozens of waves on any GPU, so the last, partial wave
    // costs little), 1024 iterations of PEAK_FMA_CHAINS FMAs each.
    let (blocks, threads, iterations) = (65536usize, 256usize, 1024usize);
    let out = DeviceBuffer::new(backend, blocks * threads * 4)?;
    let fma = Kernel { file: "peak.cu", name: "peak_fma_f32" };
    let seconds = median_seconds(&**backend, runs, &mut || {
        let args = [out.arg(), KernelArg::I32(iterations as i32)];
        backend.launch(fma, &LaunchConfig::linear(blocks as u32, threads as u32), &args)
    })?;
    let fma = (2 * PEAK_FMA_CHAINS * iterations * blocks * threads) as f64 / seconds;
    drop(out);

    // mma: 16384 blocks of 256 threads (8 warps each; 15 to 30 waves on an H100 or H200, as
    // 8 or 4 blocks fit an SM), 256 iterations of PEAK_MMA_CHAINS mmas per warp: 5.5e11
    // flops in TF32 (twice in bf16), about 1 ms a launch, batched to 5 ms samples as every
    // case is.
    let (blocks, threads, iterations) = (16384usize, 256usize, 256usize);
    let out = DeviceBuffer::new(backend, blocks * threads * 4)?;
    let mma_ceiling = |name: &'static str, flops_per_mma: usize| -> Result<f64> {
        let seconds = median_seconds(&**backend, runs, &mut || {
            let args = [out.arg(), KernelArg::I32(iterations as i32)];
            backend.launch(Kernel { file: "peak.cu", name }, &LaunchConfig::linear(blocks as u32, threads as u32), &args)
        })?;
        Ok((flops_per_mma * PEAK_MMA_CHAINS * iterations * blocks * threads / 32) as f64 / seconds)
    };
    let (mma_tf32, mma_bf16) = (mma_ceiling("peak_mma_tf32", MMA_TF32_FLOPS)?, mma_ceiling("peak_mma_bf16", MMA_BF16_FLOPS)?);
    drop(out);

    // Copy: 1 GiB to 1 GiB, far past any L2 cache; the bytes read plus the bytes written.
    let n = 1usize << 28;
    let (x, y) = (DeviceBuffer::new(backend, n * 4)?, DeviceBuffer::new(backend, n * 4)?);
    backend.fill_bytes(x.ptr(), n * 4, 0x3c)?;
    let copy = Kernel { file: "peak.cu", name: "peak_copy_f32" };
    let seconds = median_seconds(&**backend, runs, &mut || {
        let args = [x.arg(), y.arg(), KernelArg::I64(n as i64)];
        backend.launch(copy, &LaunchConfig::linear(n.div_ceil(256).min(65536) as u32, 256), &args)
    })?;
    Ok(Ceilings { fma, mma_tf32, mma_bf16, copy: (2 * n * 4) as f64 / seconds })
}

/// PyTorch's side: the header (versions, device) and the median seconds per case, or why
/// there are none.
struct TorchTimings {
    header: Value,
    seconds: BTreeMap<String, f64>,
}

/// The first Python that imports torch with CUDA available: `.venv/bin/python`, then `python3`.
fn find_python(root: &str) -> std::result::Result<String, String> {
    let mut reasons = Vec::new();
    let venv = format!("{root}/.venv/bin/python");
    let candidates = if std::path::Path::new(&venv).exists() { vec![venv, "python3".into()] } else { vec!["python3".into()] };
    for python in candidates {
        let check = "import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'";
        match Command::new(&python).args(["-c", check]).output() {
            Ok(out) if out.status.success() => return Ok(python),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                reasons.push(format!("{python}: {}", stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("failed")));
            }
            Err(e) => reasons.push(format!("{python}: {e}")),
        }
    }
    Err(reasons.join("; "))
}

/// Runs benches/torch_cuda_kernels.py on the cases; `Err` says why there are no timings.
fn torch_timings(root: &str, cases: &[Case], runs: usize, precision: Precision) -> std::result::Result<TorchTimings, String> {
    let python = find_python(root)?;
    let request = json!({
        "runs": runs,
        "sample_seconds": SAMPLE_SECONDS,
        "precision": precision.name(),
        "cases": cases.iter().map(|c| c.op.torch_spec(&c.name)).collect::<Vec<_>>(),
    });
    let mut child = Command::new(&python)
        .arg(format!("{root}/benches/torch_cuda_kernels.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{python}: {e}"))?;
    child.stdin.take().ok_or("no stdin")?.write_all(request.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let mut timings = TorchTimings { header: Value::Null, seconds: BTreeMap::new() };
    // One JSON object per line, printed as each case finishes.
    for line in BufReader::new(child.stdout.take().ok_or("no stdout")?).lines().map_while(|l| l.ok()) {
        let Ok(value) = serde_json::from_str::<Value>(&line) else { continue };
        match (value["name"].as_str(), value["seconds"].as_f64()) {
            (Some(name), Some(seconds)) => {
                timings.seconds.insert(name.to_string(), seconds);
            }
            (Some(name), None) => eprintln!("PyTorch {name}: {}", value["error"]),
            (None, _) => timings.header = value,
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() && timings.seconds.is_empty() {
        return Err(format!("{python} benches/torch_cuda_kernels.py failed ({status})"));
    }
    Ok(timings)
}

/// Geometric mean.
fn geometric_mean(values: &[f64]) -> f64 {
    (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    let value_of = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned());
    let quick = args.iter().any(|a| a == "--quick");
    let only = value_of("--only");
    let runs: usize = value_of("--runs").and_then(|r| r.parse().ok()).unwrap_or(if quick { 3 } else { 10 });
    let precision: Precision = value_of("--precision").map_or(Ok(Precision::F32), |p| p.parse()).unwrap_or_else(|e| {
        eprintln!("--precision: {e}");
        std::process::exit(2)
    });
    // every ember call below runs on this thread, in this precision
    let _precision = set_precision(precision);

    let device = match CudaDevice::shared(0) {
        Ok(device) => device,
        Err(e) => {
            println!("SKIPPED: no CUDA GPU ({e})");
            return;
        }
    };
    let backend: Arc<dyn GpuBackend> = device.clone();
    println!("device: {}", backend.describe());
    let ceilings = match measure_ceilings(&backend, runs) {
        Ok(ceilings) => ceilings,
        Err(e) => {
            println!("FAILED: measuring the ceilings with kernels/peak.cu: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "measured ceilings: f32 FMA {:.1} TFLOP/s (peak_fma_f32), tensor cores {:.1} TFLOP/s in TF32 (peak_mma_tf32, mma.m16n8k8) and {:.1} in bf16 (peak_mma_bf16, mma.m16n8k16), memory {:.0} GB/s (peak_copy_f32, 1 GiB → 1 GiB)",
        ceilings.fma / 1e12,
        ceilings.mma_tf32 / 1e12,
        ceilings.mma_bf16 / 1e12,
        ceilings.copy / 1e9
    );

    let cases: Vec<Case> = cases(quick).into_iter().filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o))).collect();
    let mut ember: BTreeMap<String, std::result::Result<f64, String>> = BTreeMap::new();
    for case in &cases {
        let result = case.op.prepare(&backend).and_then(|mut run| median_seconds(&*backend, runs, &mut *run));
        match &result {
            Ok(seconds) => eprintln!("ember {:<40} {:>10.3} ms", case.name, seconds * 1e3),
            Err(e) => eprintln!("ember {:<40} FAILED: {e}", case.name),
        }
        ember.insert(case.name.clone(), result.map_err(|e| e.to_string()));
        // Give the inputs back to the driver: the next case's sizes differ, and PyTorch
        // needs the memory after us.
        let _ = device.empty_cache();
    }

    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let torch = torch_timings(&root, &cases, runs, precision);
    match &torch {
        Ok(t) => {
            let field = |key: &str| t.header[key].as_str().map_or_else(|| t.header[key].to_string(), str::to_string);
            // as the script found its flags after setting them from the request
            let tf32 = match t.header["tf32"].as_bool() {
                Some(true) => "TF32 on",
                Some(false) => "TF32 off",
                None => "TF32 not reported",
            };
            let tf32 = if precision == Precision::Bf16 { format!("{tf32}, products' inputs in bf16") } else { tf32.to_string() };
            println!(
                "PyTorch {} (CUDA {}, cuDNN {}) on {}, same machine, same run; {tf32}, cudnn.benchmark on",
                field("torch"),
                field("cuda"),
                field("cudnn"),
                field("device")
            )
        }
        Err(reason) => println!("(PyTorch columns skipped: {reason})"),
    }
    let (arithmetic, product_ceiling) = match precision {
        Precision::F32 => ("f32", "f32 FMA"),
        Precision::Tf32 => ("tf32 products (gemm, conv, attention)", "TF32 tensor-core"),
        Precision::Bf16 => ("bf16 products (gemm, conv, attention; f32 in memory)", "bf16 tensor-core"),
    };
    println!("{arithmetic}, batch {BATCH}; attention: 1 head, bh = {BATCH}; group norm: {GROUPS} groups; median of {runs} sample(s) of ≥ 5 ms");
    println!("% ceil: gemm, conv and attention of the {product_ceiling} ceiling, group norm of the memory ceiling");
    println!("{:<38} {:>10} {:>14} {:>8} {:>10} {:>12}", "case", "ember ms", "throughput", "% ceil", "torch ms", "ember/torch");
    let mut failed = false;
    // Per family, PyTorch's time over ember's (ember's throughput relative to PyTorch's).
    let mut relative: BTreeMap<&str, Vec<(f64, &str)>> = BTreeMap::new();
    for case in &cases {
        let torch_seconds = torch.as_ref().ok().and_then(|t| t.seconds.get(&case.name).copied());
        let torch_ms = torch_seconds.map_or("-".to_string(), |t| format!("{:.3}", t * 1e3));
        let seconds = match &ember[&case.name] {
            Ok(seconds) => *seconds,
            Err(e) => {
                failed = true;
                println!("{:<38} FAILED: {e}", case.name);
                continue;
            }
        };
        let (throughput, per_second) = match case.op.work() {
            Work::Flops(f) => (format!("{:.1} TFLOP/s", f / seconds / 1e12), f / seconds),
            Work::Bytes(b) => (format!("{:.0} GB/s", b / seconds / 1e9), b / seconds),
        };
        let percent = 100.0 * per_second / case.op.ceiling(&ceilings, precision);
        let ratio = torch_seconds.map_or("-".to_string(), |t| format!("{:.2}x", seconds / t));
        if let Some(t) = torch_seconds {
            relative.entry(case.op.family()).or_default().push((t / seconds, &case.name));
        }
        println!("{:<38} {:>10.3} {:>14} {:>7.1}% {:>10} {:>12}", case.name, seconds * 1e3, throughput, percent, torch_ms, ratio);
    }

    // The targets: conv ≥ 70% of cuDNN's throughput, attention ≥ 70% of SDPA's.
    println!("\nember's throughput relative to PyTorch's (PyTorch ms / ember ms):");
    for (family, against, target) in [("gemm", "cuBLAS", None), ("conv", "cuDNN", Some(0.7)), ("attention", "SDPA", Some(0.7)), ("group_norm", "PyTorch", None)]
    {
        let Some(values) = relative.get(family) else {
            if cases.iter().any(|c| c.op.family() == family) {
                println!("  {family:<11} no PyTorch timings");
            }
            continue;
        };
        let ratios: Vec<f64> = values.iter().map(|(r, _)| *r).collect();
        let (lowest, lowest_name) = values.iter().min_by(|a, b| a.0.total_cmp(&b.0)).map(|(r, n)| (*r, *n)).unwrap();
        let mut line =
            format!("  {family:<11} vs {against:<7} geometric mean {:.0}%, lowest {:.0}% ({lowest_name})", 100.0 * geometric_mean(&ratios), 100.0 * lowest);
        if let Some(target) = target {
            let met = ratios.iter().filter(|&&r| r >= target).count();
            line += &format!("; target ≥ {:.0}%: met by {met} of {}", 100.0 * target, ratios.len());
        }
        println!("{line}");
    }
    if failed {
        println!("FAILED: some ember kernels failed (see above)");
        std::process::exit(1);
    }
}
