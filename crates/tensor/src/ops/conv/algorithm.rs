//! Which algorithm a convolution runs: every road of every pass, and every threshold that
//! picks one, in one place. [`choose`] is the table; the CPU kernels (`cpu/`) and the CUDA
//! host side (`cuda.rs`) match on its answer. With `EMBER_PROFILE=1` each convolution's
//! choice is counted and printed under the op profile ([`select`]).
//!
//! The thresholds come from in-process A/B timings on the 2-core AMD EPYC (Zen 4) machines
//! of benches/RESULTS.md (fourth and sixth sessions); each constant says what was measured.

use super::ConvGeometry;
use crate::Device;

/// The three passes of a convolution. (A transposed convolution's forward is an input
/// gradient, its backward a forward and a weight gradient.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    Forward,
    InputGradient,
    WeightGradient,
}

impl ConvPass {
    pub fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::InputGradient => "input gradient",
            ConvPass::WeightGradient => "weight gradient",
        }
    }
}

/// The convolution algorithms. The input gradient of a stride-1 convolution is itself a
/// stride-1 convolution of `dy` with the flipped kernel, so the forward roads serve it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// Winograd F(4×4, 3×3) (`cpu/winograd4.rs`): 36 GEMMs over the channels between
    /// transforms of 6×6 input tiles and 4×4 output tiles, 4× fewer multiplications than the
    /// direct product. Forward and input gradient.
    WinogradF4,
    /// Winograd F(2×2, 3×3) (`cpu/winograd.rs`): 16 GEMMs between transforms of 4×4 input
    /// tiles, 2.25× fewer multiplications; the weight gradient as its adjoint,
    /// `Gᵀ[Σ (A dY Aᵀ) ⊙ (Bᵀ d B)]G`.
    WinogradF2,
    /// One GEMM over the whole batch's im2col matrices side by side (`cpu/mod.rs`).
    BatchedIm2col,
    /// Stride 1 on the zero-padded image (`cpu/padded.rs`): each im2col row is a contiguous
    /// run of it, so the GEMM reads B in place; the weight gradient is dot products of runs.
    TapRuns,
    /// A strided forward as the stride-1 GEMM over the input's polyphase split
    /// (`cpu/padded.rs`).
    Polyphase,
    /// A 1×1, stride-1, unpadded convolution: the image is its own im2col matrix (`cpu/mod.rs`).
    Pointwise,
    /// im2col, one GEMM per image, col2im for the input gradient (`cpu/mod.rs`): any geometry.
    Im2col,
    /// CUDA: the implicit GEMM on the shared tile product (kernels/conv.cu), each im2col
    /// element computed while a tile loads.
    ImplicitGemm,
}

impl ConvAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::WinogradF4 => "winograd F(4x4,3x3)",
            ConvAlgorithm::WinogradF2 => "winograd F(2x2,3x3)",
            ConvAlgorithm::BatchedIm2col => "batched im2col",
            ConvAlgorithm::TapRuns => "tap runs (stride 1)",
            ConvAlgorithm::Polyphase => "polyphase (strided)",
            ConvAlgorithm::Pointwise => "pointwise (1x1)",
            ConvAlgorithm::Im2col => "im2col",
            ConvAlgorithm::ImplicitGemm => "implicit GEMM (CUDA)",
        }
    }
}

/// F(2×2, 3×3) needs this many channels each way: below it its transforms cost more than the
/// multiplications they save.
const WINOGRAD_MIN_CHANNELS: usize = 16;
/// F(2×2, 3×3)'s forward and input gradient from 8×8 outputs up: at 4×4 (a tile-row of two
/// tiles) it measured up to 2.3× slower than the tap-run road (fourth session). Its weight
/// gradient measured faster at every UNet size, so it has no such floor.
const WINOGRAD_FORWARD_MIN_SIZE: usize = 8;
/// F(4×4, 3×3) from 32×32 images and 128 channels each way: on the UNets' 16×16 levels (its
/// chunk's transformed tiles spill L2 at 256 channels) and on the tiny UNet's 32–96 channels
/// it measured no faster than F(2×2, 3×3); at ddpm-cifar10's 32×32 convolutions 15–30% faster
/// (sixth session).
const WINOGRAD4_MIN_SIZE: usize = 32;
const WINOGRAD4_MIN_CHANNELS: usize = 128;
/// The batched im2col roads up to this many output pixels in the whole batch: ddpm-cifar10's
/// 4×4 and 8×8 levels at B8 (128 and 512 pixels) measured 1.3–3.2× faster than Winograd for
/// the weight gradient, 1.15–1.4× (forward) and 1.4–1.8× (input gradient) faster than the
/// tap-run and polyphase roads; the tiny UNet's 8×8 level at B32 (2048 pixels) 1.6× slower
/// (sixth session).
const BATCHED_MAX_COLUMNS: usize = 512;

/// `EMBER_NO_WINOGRAD=1` turns F(2×2, 3×3) off, `EMBER_NO_WINOGRAD4=1` F(4×4, 3×3) (for
/// comparisons).
fn switched_on(variable: &'static str, cell: &'static std::sync::OnceLock<bool>) -> bool {
    *cell.get_or_init(|| std::env::var_os(variable).is_none())
}
fn winograd_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    switched_on("EMBER_NO_WINOGRAD", &ON)
}
fn winograd4_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    switched_on("EMBER_NO_WINOGRAD4", &ON)
}

/// A stride-1 convolution whose output is the whole sliding range (`ho = h + 2p − d(k − 1)`;
/// a transposed convolution's output padding can make `g` one row or column taller than that,
/// and those take the im2col road): the tap-run road's condition.
pub fn is_full_stride_1(g: &ConvGeometry) -> bool {
    let full = |size: usize, pad: usize, k: usize, d: usize| (size + 2 * pad).checked_sub(d * (k - 1));
    g.stride == [1, 1] && full(g.h, g.padding[0], g.kh, g.dilation[0]) == Some(g.ho) && full(g.w, g.padding[1], g.kw, g.dilation[1]) == Some(g.wo)
}

/// Whether the input gradient of `g` is a stride-1 convolution of `dy` (with the flipped
/// kernel): `g` is a full stride-1 convolution with padding at most `d(k − 1)` and not 1×1.
pub fn input_gradient_is_stride_1(g: &ConvGeometry) -> bool {
    is_full_stride_1(g) && g.padding[0] <= g.dilation[0] * (g.kh - 1) && g.padding[1] <= g.dilation[1] * (g.kw - 1) && !g.is_pointwise()
}

/// The polyphase road's condition: a stride above 1, no dilation.
pub fn polyphase_applies(g: &ConvGeometry) -> bool {
    g.stride != [1, 1] && g.dilation == [1, 1]
}

/// Whether F(2×2, 3×3) can run `g`: a 3×3 kernel, stride 1, no dilation, padding at most 2
/// (so that the input gradient is a convolution too), the full sliding range, even sizes,
/// and enough channels both ways.
pub fn winograd_applies(g: &ConvGeometry) -> bool {
    let even = |v: usize| v >= 2 && v.is_multiple_of(2);
    g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.padding[0] <= 2
        && g.padding[1] <= 2
        && is_full_stride_1(g)
        && even(g.ho)
        && even(g.wo)
        && even(g.h)
        && even(g.w)
        && g.c_in >= WINOGRAD_MIN_CHANNELS
        && g.c_out >= WINOGRAD_MIN_CHANNELS
}

/// Whether F(4×4, 3×3) runs the forward and input gradient of `g`: where F(2×2, 3×3)
/// applies, with input and output sizes multiples of 4 and at least [`WINOGRAD4_MIN_SIZE`],
/// both channel counts at least [`WINOGRAD4_MIN_CHANNELS`] (the input gradient's convolution
/// has the input's sizes for its outputs, so both count), unless switched off.
pub fn winograd4_pays(g: &ConvGeometry) -> bool {
    let fits = |size: usize| size.is_multiple_of(4) && size >= WINOGRAD4_MIN_SIZE;
    winograd_applies(g) && fits(g.ho) && fits(g.wo) && fits(g.h) && fits(g.w) && g.c_in.min(g.c_out) >= WINOGRAD4_MIN_CHANNELS && winograd4_enabled()
}

/// Whether F(2×2, 3×3) runs the forward and input gradient of `g`.
fn winograd_pays_forward(g: &ConvGeometry) -> bool {
    winograd_applies(g) && g.wo >= WINOGRAD_FORWARD_MIN_SIZE && g.w >= WINOGRAD_FORWARD_MIN_SIZE && winograd_enabled()
}

/// Whether the batched im2col roads run `g`.
fn batched_pays(g: &ConvGeometry) -> bool {
    g.n * g.ho * g.wo <= BATCHED_MAX_COLUMNS && !g.is_pointwise()
}

/// The algorithm of one pass of `g` on `device`: the table.
pub fn choose(g: &ConvGeometry, pass: ConvPass, device: Device) -> ConvAlgorithm {
    use ConvAlgorithm::*;
    if let Device::Cuda(_) = device {
        return ImplicitGemm;
    }
    let direct = if g.is_pointwise() { Pointwise } else { Im2col };
    match pass {
        ConvPass::Forward if winograd4_pays(g) => WinogradF4,
        ConvPass::Forward if winograd_pays_forward(g) => WinogradF2,
        ConvPass::Forward if batched_pays(g) => BatchedIm2col,
        ConvPass::Forward if is_full_stride_1(g) && !g.is_pointwise() => TapRuns,
        ConvPass::Forward if polyphase_applies(g) => Polyphase,
        ConvPass::Forward => direct,
        ConvPass::InputGradient if input_gradient_is_stride_1(g) && winograd4_pays(g) => WinogradF4,
        ConvPass::InputGradient if input_gradient_is_stride_1(g) && winograd_pays_forward(g) => WinogradF2,
        ConvPass::InputGradient if batched_pays(g) => BatchedIm2col,
        ConvPass::InputGradient if input_gradient_is_stride_1(g) => TapRuns,
        ConvPass::InputGradient => direct,
        ConvPass::WeightGradient if batched_pays(g) => BatchedIm2col,
        ConvPass::WeightGradient if winograd_applies(g) && winograd_enabled() => WinogradF2,
        ConvPass::WeightGradient if is_full_stride_1(g) && !g.is_pointwise() => TapRuns,
        ConvPass::WeightGradient => direct,
    }
}

/// [`choose`], counted in the op profile when `EMBER_PROFILE` is set (the kernels call this).
pub fn select(g: &ConvGeometry, pass: ConvPass, device: Device) -> ConvAlgorithm {
    let algorithm = choose(g, pass, device);
    crate::profile::count_choice("conv2d", pass.name(), algorithm.name(), || {
        format!("{}x{}x{}x{} -> {} k{}x{} s{} p{}", g.n, g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.stride[0], g.padding[0])
    });
    algorithm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square convolution with PyTorch's output size.
    fn conv(n: usize, c_in: usize, c_out: usize, size: usize, k: usize, stride: usize, padding: usize) -> ConvGeometry {
        let out = (size + 2 * padding - k) / stride + 1;
        ConvGeometry { n, c_in, h: size, w: size, c_out, kh: k, kw: k, stride: [stride; 2], padding: [padding; 2], dilation: [1, 1], ho: out, wo: out }
    }

    #[test]
    fn the_table_picks_the_measured_road_for_the_unets_convolutions() {
        use ConvAlgorithm::*;
        use ConvPass::*;
        let cpu = |g: &ConvGeometry, pass| choose(g, pass, Device::Cpu);
        // ddpm-cifar10 at B8: 128 channels at 32×32 (F(4×4)), 256 at 16×16 (F(2×2)), 256 at
        // 4×4 (128 pixels in the batch: batched im2col), the 1×1 shortcut, the stride-2
        // downsample, the 3-channel first conv (too few channels for Winograd)
        let (c32, c16, c4) = (conv(8, 128, 128, 32, 3, 1, 1), conv(8, 256, 256, 16, 3, 1, 1), conv(8, 256, 256, 4, 3, 1, 1));
        assert_eq!([cpu(&c32, Forward), cpu(&c32, InputGradient), cpu(&c32, WeightGradient)], [WinogradF4, WinogradF4, WinogradF2]);
        assert_eq!([cpu(&c16, Forward), cpu(&c16, InputGradient), cpu(&c16, WeightGradient)], [WinogradF2, WinogradF2, WinogradF2]);
        assert_eq!([cpu(&c4, Forward), cpu(&c4, InputGradient), cpu(&c4, WeightGradient)], [BatchedIm2col; 3]);
        let shortcut = conv(8, 128, 256, 16, 1, 1, 0);
        assert_eq!([cpu(&shortcut, Forward), cpu(&shortcut, InputGradient), cpu(&shortcut, WeightGradient)], [Pointwise; 3]);
        let downsample = conv(8, 128, 128, 32, 3, 2, 1);
        assert_eq!([cpu(&downsample, Forward), cpu(&downsample, InputGradient), cpu(&downsample, WeightGradient)], [Polyphase, Im2col, Im2col]);
        let first = conv(8, 3, 128, 32, 3, 1, 1);
        assert_eq!([cpu(&first, Forward), cpu(&first, InputGradient), cpu(&first, WeightGradient)], [TapRuns; 3]);
        // a CUDA device has one road for every pass
        for g in [&c32, &c4, &shortcut, &downsample] {
            for pass in [Forward, InputGradient, WeightGradient] {
                assert_eq!(choose(g, pass, Device::Cuda(0)), ImplicitGemm);
            }
        }
    }

    #[test]
    fn the_stride_1_roads_need_the_full_sliding_range() {
        // a transposed convolution's output padding makes the output one row taller than the
        // sliding range: no tap-run road, no Winograd (16 images: too many pixels for the
        // batched road)
        let mut g = conv(16, 16, 16, 8, 3, 1, 1);
        assert!(is_full_stride_1(&g) && winograd_applies(&g));
        g.ho += 1;
        assert!(!is_full_stride_1(&g) && !winograd_applies(&g) && !input_gradient_is_stride_1(&g));
        assert_eq!(choose(&g, ConvPass::Forward, Device::Cpu), ConvAlgorithm::Im2col);
        // padding beyond d(k − 1): the input gradient is no stride-1 convolution
        let wide = conv(2, 4, 4, 8, 3, 1, 3);
        assert!(is_full_stride_1(&wide) && !input_gradient_is_stride_1(&wide));
    }
}
