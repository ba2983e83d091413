//! The host side of every kernel: argument checks, output buffers, grid and block sizes, the
//! launch. Written once against [`GpuBackend`], so a GPU and the emulator run the same code.
//! Each function names its kernel's `.cu` file; the math is documented there and in the CPU
//! kernel it must match.

use super::{ConvShape, DeviceBuffer, GpuBackend, Kernel, KernelArg, LaunchConfig, Strides};
use crate::cpu::attention::AttentionShape;
use crate::cpu::conv::ConvGeometry;
use crate::cpu::norm::GroupNormShape;
use crate::cpu::reduce::ReduceKind;
use crate::ops::binary::BinaryOp;
use crate::ops::unary::UnaryOp;
use crate::{Layout, Result, TensorError};
use std::sync::Arc;

/// Threads per block of the elementwise, reduction and softmax kernels.
const THREADS: u32 = 256;
/// Blocks of a grid-stride loop: enough to fill a GPU, few enough to start quickly.
const MAX_GRID_STRIDE_BLOCKS: usize = 4096;

const F32: usize = std::mem::size_of::<f32>();

fn kernel(file: &'static str, name: &'static str) -> Kernel {
    Kernel { file, name }
}

fn invalid(op: &'static str, msg: impl Into<String>) -> TensorError {
    TensorError::InvalidArgument { op, msg: msg.into() }
}

/// A grid-stride launch over `n` elements.
fn grid_stride(n: usize) -> LaunchConfig {
    LaunchConfig::linear(n.div_ceil(THREADS as usize).clamp(1, MAX_GRID_STRIDE_BLOCKS) as u32, THREADS)
}

fn to_i32(op: &'static str, what: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| invalid(op, format!("{what} = {value} does not fit a 32-bit int")))
}

/// The elements of `buffer` (as f32).
fn f32_len(buffer: &DeviceBuffer) -> usize {
    buffer.bytes() / F32
}

/// The pointer to element `offset` of `buffer`, after checking that every element of the view
/// `layout` lies inside it.
fn view_arg(op: &'static str, buffer: &DeviceBuffer, layout: &Layout) -> Result<(KernelArg, KernelArg)> {
    let numel = layout.numel();
    if numel > 0 {
        let last = layout.offset() + layout.shape().iter().zip(layout.strides()).map(|(&n, &s)| (n - 1) * s).sum::<usize>();
        if last >= f32_len(buffer) {
            return Err(invalid(op, format!("the view {layout:?} reaches past a buffer of {} elements", f32_len(buffer))));
        }
    }
    Ok((KernelArg::Ptr(buffer.ptr() + (layout.offset() * F32) as u64), KernelArg::Strides(Strides::of(layout)?)))
}

fn check_len(op: &'static str, what: &str, buffer: &DeviceBuffer, needed: usize) -> Result<()> {
    if f32_len(buffer) < needed {
        return Err(invalid(op, format!("{what} holds {} elements, {needed} needed", f32_len(buffer))));
    }
    Ok(())
}

fn output(backend: &Arc<dyn GpuBackend>, n: usize) -> Result<DeviceBuffer> {
    DeviceBuffer::new(backend, n * F32)
}

/// `y = op(x)` over the view `x_view` of `x`, contiguous out (kernels/elementwise.cu).
pub fn unary_forward(x: &DeviceBuffer, x_view: &Layout, op: UnaryOp) -> Result<DeviceBuffer> {
    let (x_arg, x_strides) = view_arg(op.name(), x, x_view)?;
    let n = x_view.numel();
    let y = output(x.backend(), n)?;
    if n > 0 {
        let (code, p, q) = op.code();
        let args = [x_arg, x_strides, y.arg(), KernelArg::I64(n as i64), KernelArg::I32(code), KernelArg::F32(p), KernelArg::F32(q)];
        x.backend().launch(kernel("elementwise.cu", "unary_forward_f32"), &grid_stride(n), &args)?;
    }
    Ok(y)
}

/// `dx = dy · op'(x)` from the contiguous `n`-element input `x` or output `y` (whichever
/// [`UnaryOp::derivative_needs`] names; the other may be `None`) (kernels/elementwise.cu).
pub fn unary_backward(op: UnaryOp, x: Option<&DeviceBuffer>, y: Option<&DeviceBuffer>, dy: &DeviceBuffer, n: usize) -> Result<DeviceBuffer> {
    let name = op.name();
    check_len(name, "dy", dy, n)?;
    for (what, buffer) in [("x", x), ("y", y)] {
        if let Some(buffer) = buffer {
            check_len(name, what, buffer, n)?;
        }
    }
    let dx = output(dy.backend(), n)?;
    if n > 0 {
        let (code, p, q) = op.code();
        let pointer = |b: Option<&DeviceBuffer>| KernelArg::Ptr(b.map_or(0, |b| b.ptr()));
        let args = [pointer(x), pointer(y), dy.arg(), dx.arg(), KernelArg::I64(n as i64), KernelArg::I32(code), KernelArg::F32(p), KernelArg::F32(q)];
        dy.backend().launch(kernel("elementwise.cu", "unary_backward_f32"), &grid_stride(n), &args)?;
    }
    Ok(dx)
}

/// `out = a op b` over two views of the output's shape (broadcast axes with stride 0),
/// contiguous out (kernels/elementwise.cu).
pub fn binary(op: BinaryOp, a: &DeviceBuffer, a_view: &Layout, b: &DeviceBuffer, b_view: &Layout) -> Result<DeviceBuffer> {
    if a_view.shape() != b_view.shape() {
        return Err(TensorError::ShapeMismatch { op: op.name(), lhs: a_view.shape().to_vec(), rhs: b_view.shape().to_vec() });
    }
    let (a_arg, a_strides) = view_arg(op.name(), a, a_view)?;
    let (b_arg, b_strides) = view_arg(op.name(), b, b_view)?;
    let n = a_view.numel();
    let out = output(a.backend(), n)?;
    if n > 0 {
        let args = [a_arg, a_strides, b_arg, b_strides, out.arg(), KernelArg::I64(n as i64), KernelArg::I32(op.code())];
        a.backend().launch(kernel("elementwise.cu", "binary_f32"), &grid_stride(n), &args)?;
    }
    Ok(out)
}

/// Copies the view `x_view` of `x` into the view `y_view` of `y` (same shapes; the
/// destination view must not overlap itself) (kernels/elementwise.cu).
pub fn copy(x: &DeviceBuffer, x_view: &Layout, y: &DeviceBuffer, y_view: &Layout) -> Result<()> {
    if x_view.shape() != y_view.shape() {
        return Err(TensorError::ShapeMismatch { op: "copy", lhs: x_view.shape().to_vec(), rhs: y_view.shape().to_vec() });
    }
    let (x_arg, x_strides) = view_arg("copy", x, x_view)?;
    let (y_arg, y_strides) = view_arg("copy", y, y_view)?;
    let n = x_view.numel();
    if n > 0 {
        x.backend().launch(kernel("elementwise.cu", "copy_f32"), &grid_stride(n), &[x_arg, x_strides, y_arg, y_strides, KernelArg::I64(n as i64)])?;
    }
    Ok(())
}

/// The view `x_view` of `x`, made contiguous.
pub fn gather(x: &DeviceBuffer, x_view: &Layout) -> Result<DeviceBuffer> {
    let y = output(x.backend(), x_view.numel())?;
    copy(x, x_view, &y, &Layout::contiguous(x_view.shape()))?;
    Ok(y)
}

/// A new buffer of `n` elements, each `value` (kernels/elementwise.cu).
pub fn full(backend: &Arc<dyn GpuBackend>, n: usize, value: f32) -> Result<DeviceBuffer> {
    let y = output(backend, n)?;
    if n > 0 {
        backend.launch(kernel("elementwise.cu", "fill_f32"), &grid_stride(n), &[y.arg(), KernelArg::F32(value), KernelArg::I64(n as i64)])?;
    }
    Ok(y)
}

/// Sum or max of the view over `axes`: one value per combination of the kept axes, in their
/// row-major order, as [`crate::cpu::reduce::reduce`] (kernels/reduce.cu).
pub fn reduce(x: &DeviceBuffer, x_view: &Layout, axes: &[usize], kind: ReduceKind) -> Result<DeviceBuffer> {
    let op = match kind {
        ReduceKind::Sum => "sum",
        ReduceKind::Max => "max",
    };
    let (x_arg, _) = view_arg(op, x, x_view)?;
    let (shape, strides) = (x_view.shape(), x_view.strides());
    let kept: Vec<usize> = (0..x_view.rank()).filter(|a| !axes.contains(a)).collect();
    let pick = |list: &[usize], from: &[usize]| -> Vec<usize> { list.iter().map(|&a| from[a]).collect() };
    let kept_view = Strides::new(&pick(&kept, shape), &pick(&kept, strides))?;
    let run_view = Strides::new(&pick(axes, shape), &pick(axes, strides))?;
    let outputs: usize = kept.iter().map(|&a| shape[a]).product();
    let run_len: usize = axes.iter().map(|&a| shape[a]).product();
    let y = output(x.backend(), outputs)?;
    if outputs > 0 {
        let warps_per_block = (THREADS / 32) as usize;
        let config = LaunchConfig::linear(outputs.div_ceil(warps_per_block) as u32, THREADS);
        let args = [
            x_arg,
            KernelArg::Strides(kept_view),
            KernelArg::Strides(run_view),
            y.arg(),
            KernelArg::I64(outputs as i64),
            KernelArg::I64(run_len as i64),
            KernelArg::I32(matches!(kind, ReduceKind::Max) as i32),
        ];
        x.backend().launch(kernel("reduce.cu", "reduce_f32"), &config, &args)?;
    }
    Ok(y)
}

/// Softmax (or with `log`, log-softmax) of each row of a contiguous `rows × row_len` matrix
/// (kernels/softmax.cu).
pub fn softmax_rows(x: &DeviceBuffer, rows: usize, row_len: usize, log: bool) -> Result<DeviceBuffer> {
    check_len("softmax", "x", x, rows * row_len)?;
    let y = output(x.backend(), rows * row_len)?;
    if rows * row_len > 0 {
        let args = [x.arg(), y.arg(), KernelArg::I32(to_i32("softmax", "row length", row_len)?), KernelArg::I32(log as i32)];
        x.backend().launch(kernel("softmax.cu", "softmax_rows_f32"), &LaunchConfig::linear(rows as u32, THREADS), &args)?;
    }
    Ok(y)
}

/// The backward of [`softmax_rows`] from its output `y` and the gradient `dy` (kernels/softmax.cu).
pub fn softmax_backward_rows(y: &DeviceBuffer, dy: &DeviceBuffer, rows: usize, row_len: usize, log: bool) -> Result<DeviceBuffer> {
    check_len("softmax_backward", "y", y, rows * row_len)?;
    check_len("softmax_backward", "dy", dy, rows * row_len)?;
    let dx = output(y.backend(), rows * row_len)?;
    if rows * row_len > 0 {
        let args = [y.arg(), dy.arg(), dx.arg(), KernelArg::I32(to_i32("softmax_backward", "row length", row_len)?), KernelArg::I32(log as i32)];
        y.backend().launch(kernel("softmax.cu", "softmax_backward_rows_f32"), &LaunchConfig::linear(rows as u32, THREADS), &args)?;
    }
    Ok(dx)
}

/// One operand of [`gemm`]: matrix z's element (i, j) is element
/// `offset + z·batch_stride + i·row_stride + j·col_stride` of the buffer.
#[derive(Clone, Copy, Debug)]
pub struct GpuMatrix<'a> {
    pub buffer: &'a DeviceBuffer,
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

impl GpuMatrix<'_> {
    /// Checks that a `batch` of `rows × cols` matrices lies inside the buffer.
    fn check(&self, what: &str, batch: usize, rows: usize, cols: usize) -> Result<()> {
        if batch == 0 || rows == 0 || cols == 0 {
            return Ok(());
        }
        let last = self.offset + (batch - 1) * self.batch_stride + (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        check_len("gemm", what, self.buffer, last + 1)
    }

    fn pointer(&self) -> KernelArg {
        KernelArg::Ptr(self.buffer.ptr() + (self.offset * F32) as u64)
    }
}

/// `C[z] (+)= A[z] · B[z]` for `batch` matrices, A `m×k`, B `k×n`, C `m×n` with unit column
/// stride (kernels/gemm.cu; the CPU kernel is [`crate::cpu::gemm::gemm`]). Without
/// `accumulate`, C's previous contents are ignored.
#[allow(clippy::too_many_arguments)]
pub fn gemm(batch: usize, m: usize, n: usize, k: usize, a: GpuMatrix, b: GpuMatrix, c: GpuMatrix, accumulate: bool) -> Result<()> {
    a.check("A", batch, m, k)?;
    b.check("B", batch, k, n)?;
    c.check("C", batch, m, n)?;
    if c.col_stride != 1 && n > 1 {
        return Err(invalid("gemm", "C must have unit column stride"));
    }
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    let (config, tile) = tile_grid("gemm", m, n, batch)?;
    let long = |v: usize| KernelArg::I64(v as i64);
    let args = [
        a.pointer(),
        b.pointer(),
        c.pointer(),
        KernelArg::I32(to_i32("gemm", "m", m)?),
        KernelArg::I32(to_i32("gemm", "n", n)?),
        KernelArg::I32(to_i32("gemm", "k", k)?),
        long(a.row_stride),
        long(a.col_stride),
        long(a.batch_stride),
        long(b.row_stride),
        long(b.col_stride),
        long(b.batch_stride),
        long(c.row_stride),
        long(c.batch_stride),
        KernelArg::I32(accumulate as i32),
    ];
    c.buffer.backend().launch(kernel("gemm.cu", tile.pick("gemm_f32_t128", "gemm_f32_t64")), &config, &args)
}

/// The output tile of the kernels built on `ember_tile_gemm` (kernels/ember_cuda.h): GEMM and
/// the implicit-GEMM convolutions. Each has a `_t128` and a `_t64` kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tile {
    /// 128×128 outputs per block of 256 threads (8×8 each).
    Large,
    /// 64×64 outputs per block of 256 threads (4×4 each): four times the blocks, for outputs
    /// with few tiles or under 128 rows or columns.
    Small,
}

thread_local! {
    /// The tile every product on this thread uses, whatever its size ([`with_tile_size`]).
    static FORCED_TILE: std::cell::Cell<Option<Tile>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every GEMM and convolution this thread launches on tiles of `size` (128 or
/// 64) whatever the output's size, so that tests check both kernels of each product on small
/// inputs.
#[doc(hidden)]
pub fn with_tile_size<R>(size: usize, f: impl FnOnce() -> R) -> R {
    let tile = match size {
        128 => Tile::Large,
        64 => Tile::Small,
        _ => panic!("tiles are 128 or 64, not {size}"),
    };
    let previous = FORCED_TILE.with(|forced| forced.replace(Some(tile)));
    let result = f();
    FORCED_TILE.with(|forced| forced.set(previous));
    result
}

impl Tile {
    /// Large tiles when the output (`batches` of `m × n`) fills them (128 rows and columns at
    /// least) and has enough of them to keep a large GPU busy: an H100 or H200 has 132
    /// multiprocessors, each running one such block (their ~160 registers a thread allow one).
    fn for_output(m: usize, n: usize, batches: usize) -> Tile {
        if let Some(tile) = FORCED_TILE.with(|forced| forced.get()) {
            return tile;
        }
        let large_tiles = m.div_ceil(128) * n.div_ceil(128) * batches;
        if m >= 128 && n >= 128 && large_tiles >= 132 { Tile::Large } else { Tile::Small }
    }

    fn size(self) -> usize {
        match self {
            Tile::Large => 128,
            Tile::Small => 64,
        }
    }

    fn pick(self, large: &'static str, small: &'static str) -> &'static str {
        match self {
            Tile::Large => large,
            Tile::Small => small,
        }
    }
}

/// The launch of a tiled product: `batches` outputs of `m × n` (blockIdx.z the batch or the
/// split), and the tile it uses.
fn tile_grid(op: &'static str, m: usize, n: usize, batches: usize) -> Result<(LaunchConfig, Tile)> {
    let tile = Tile::for_output(m, n, batches);
    let size = tile.size();
    let grid = [n.div_ceil(size), m.div_ceil(size), batches];
    if grid[0] > i32::MAX as usize || grid[1] > 65535 || grid[2] > 65535 {
        return Err(invalid(op, format!("{batches} output(s) of {m}×{n} exceed CUDA's grid")));
    }
    Ok((LaunchConfig { grid: grid.map(|g| g as u32), block: [256, 1, 1], shared_bytes: 0 }, tile))
}

fn conv_shape(op: &'static str, g: &ConvGeometry) -> Result<ConvShape> {
    let int = |what: &str, v: usize| to_i32(op, what, v);
    // Every index the kernels compute fits an int when the largest tensor's element count does.
    let largest = [g.n * g.c_in * g.h * g.w, g.n * g.c_out * g.ho * g.wo, g.c_out * g.c_in * g.kh * g.kw].into_iter().max().unwrap_or(0);
    int("elements of a tensor", largest)?;
    Ok(ConvShape {
        n: int("n", g.n)?,
        c_in: int("c_in", g.c_in)?,
        h: int("h", g.h)?,
        w: int("w", g.w)?,
        c_out: int("c_out", g.c_out)?,
        kh: int("kh", g.kh)?,
        kw: int("kw", g.kw)?,
        stride_h: int("stride", g.stride[0])?,
        stride_w: int("stride", g.stride[1])?,
        pad_h: int("padding", g.padding[0])?,
        pad_w: int("padding", g.padding[1])?,
        dilation_h: int("dilation", g.dilation[0])?,
        dilation_w: int("dilation", g.dilation[1])?,
        ho: int("ho", g.ho)?,
        wo: int("wo", g.wo)?,
    })
}

/// `y = conv2d(x, w) (+ bias)`, x `[n, c_in, h, w]` and w `[c_out, c_in, kh, kw]` contiguous
/// (kernels/conv.cu; CPU: [`crate::cpu::conv::conv2d_forward`]).
pub fn conv2d_forward(x: &DeviceBuffer, w: &DeviceBuffer, bias: Option<&DeviceBuffer>, g: &ConvGeometry) -> Result<DeviceBuffer> {
    let op = "conv2d";
    let shape = conv_shape(op, g)?;
    check_len(op, "x", x, g.n * g.c_in * g.h * g.w)?;
    check_len(op, "weight", w, g.c_out * g.c_in * g.kh * g.kw)?;
    if let Some(bias) = bias {
        check_len(op, "bias", bias, g.c_out)?;
    }
    let y = output(x.backend(), g.n * g.c_out * g.ho * g.wo)?;
    let (config, tile) = tile_grid(op, g.c_out, g.n * g.ho * g.wo, 1)?;
    let bias = KernelArg::Ptr(bias.map_or(0, |b| b.ptr()));
    x.backend().launch(kernel("conv.cu", tile.pick("conv2d_forward_f32_t128", "conv2d_forward_f32_t64")), &config, &[x.arg(), w.arg(), bias, y.arg(), KernelArg::Conv(shape)])?;
    Ok(y)
}

/// dx of `conv2d(x, w)` given dy `[n, c_out, ho, wo]` (kernels/conv.cu; CPU:
/// [`crate::cpu::conv::conv2d_backward_input`]).
pub fn conv2d_backward_input(dy: &DeviceBuffer, w: &DeviceBuffer, g: &ConvGeometry) -> Result<DeviceBuffer> {
    let op = "conv2d_backward_input";
    let shape = conv_shape(op, g)?;
    check_len(op, "dy", dy, g.n * g.c_out * g.ho * g.wo)?;
    check_len(op, "weight", w, g.c_out * g.c_in * g.kh * g.kw)?;
    let dx = output(dy.backend(), g.n * g.c_in * g.h * g.w)?;
    let (config, tile) = tile_grid(op, g.c_in, g.n * g.h * g.w, 1)?;
    let name = tile.pick("conv2d_backward_input_f32_t128", "conv2d_backward_input_f32_t64");
    dy.backend().launch(kernel("conv.cu", name), &config, &[dy.arg(), w.arg(), dx.arg(), KernelArg::Conv(shape)])?;
    Ok(dx)
}

/// dW of `conv2d(x, w)` given x and dy (kernels/conv.cu; CPU:
/// [`crate::cpu::conv::conv2d_backward_weight`]). The long reduction over n·ho·wo is split
/// across blocks; the partial sums are added by [`reduce`], so the result is the same on
/// every run.
pub fn conv2d_backward_weight(x: &DeviceBuffer, dy: &DeviceBuffer, g: &ConvGeometry) -> Result<DeviceBuffer> {
    let op = "conv2d_backward_weight";
    let shape = conv_shape(op, g)?;
    check_len(op, "x", x, g.n * g.c_in * g.h * g.w)?;
    check_len(op, "dy", dy, g.n * g.c_out * g.ho * g.wo)?;
    let (m, n, k) = (g.c_out, g.c_in * g.kh * g.kw, g.n * g.ho * g.wo);
    // Enough splits for two waves of 128-tiles on a 132-multiprocessor GPU (the output alone
    // has few tiles: 36 for 256 × 2304), each at least 256 deep and at most 4096, at most 64
    // splits, in whole 8-deep panels.
    let tiles = m.div_ceil(128) * n.div_ceil(128);
    let splits = 264usize.div_ceil(tiles).min(k / 256).max(k.div_ceil(4096)).clamp(1, 64);
    let split_len = k.div_ceil(splits).div_ceil(8) * 8;
    let splits = k.div_ceil(split_len).max(1);
    let partial = output(x.backend(), splits * m * n)?;
    let (config, tile) = tile_grid(op, m, n, splits)?;
    let args = [x.arg(), dy.arg(), partial.arg(), KernelArg::Conv(shape), KernelArg::I32(to_i32(op, "split length", split_len)?)];
    let name = tile.pick("conv2d_backward_weight_f32_t128", "conv2d_backward_weight_f32_t64");
    x.backend().launch(kernel("conv.cu", name), &config, &args)?;
    if splits == 1 {
        return Ok(partial);
    }
    reduce(&partial, &Layout::contiguous(&[splits, m * n]), &[0], ReduceKind::Sum)
}

/// Group norm forward: `(y, mean, rstd)`, the statistics one per (sample, group), as
/// [`crate::cpu::norm::group_norm_forward`], followed by SiLU when `silu` (kernels/norm.cu).
/// x is `[n, channels, positions]` contiguous; w and b have `channels` elements.
pub fn group_norm_forward(
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    b: &DeviceBuffer,
    s: &GroupNormShape,
    eps: f64,
    silu: bool,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "group_norm";
    let len = s.n * s.channels * s.positions;
    check_len(op, "x", x, len)?;
    check_len(op, "weight", w, s.channels)?;
    check_len(op, "bias", b, s.channels)?;
    let blocks = s.n * s.groups;
    let (y, mean, rstd) = (output(x.backend(), len)?, output(x.backend(), blocks)?, output(x.backend(), blocks)?);
    let args = [
        x.arg(),
        w.arg(),
        b.arg(),
        y.arg(),
        mean.arg(),
        rstd.arg(),
        KernelArg::I32(to_i32(op, "channels", s.channels)?),
        KernelArg::I32(to_i32(op, "groups", s.groups)?),
        KernelArg::I32(to_i32(op, "positions", s.positions)?),
        KernelArg::F32(eps as f32),
        KernelArg::I32(silu as i32),
    ];
    x.backend().launch(kernel("norm.cu", "group_norm_forward_f32"), &LaunchConfig::linear(blocks as u32, THREADS), &args)?;
    Ok((y, mean, rstd))
}

/// Group norm backward: `(dx, dweight, dbias)`, as [`crate::cpu::norm::group_norm_backward`],
/// through the fused SiLU when `silu` (kernels/norm.cu; the per-sample sums are added over
/// the samples by [`reduce`]).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    w: &DeviceBuffer,
    b: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    s: &GroupNormShape,
    silu: bool,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "group_norm_backward";
    let len = s.n * s.channels * s.positions;
    check_len(op, "x", x, len)?;
    check_len(op, "dy", dy, len)?;
    check_len(op, "weight", w, s.channels)?;
    check_len(op, "bias", b, s.channels)?;
    check_len(op, "mean", mean, s.n * s.groups)?;
    check_len(op, "rstd", rstd, s.n * s.groups)?;
    let (dx, sums) = (output(x.backend(), len)?, output(x.backend(), s.n * s.channels * 2)?);
    let args = [
        x.arg(),
        dy.arg(),
        w.arg(),
        b.arg(),
        mean.arg(),
        rstd.arg(),
        dx.arg(),
        sums.arg(),
        KernelArg::I32(to_i32(op, "channels", s.channels)?),
        KernelArg::I32(to_i32(op, "groups", s.groups)?),
        KernelArg::I32(to_i32(op, "positions", s.positions)?),
        KernelArg::I32(silu as i32),
    ];
    let blocks = (s.n * s.groups) as u32;
    x.backend().launch(kernel("norm.cu", "group_norm_backward_f32"), &LaunchConfig::linear(blocks, THREADS), &args)?;
    // [n, channels, 2] summed over n: (dweight, dbias) interleaved per channel.
    let totals = reduce(&sums, &Layout::contiguous(&[s.n, s.channels, 2]), &[0], ReduceKind::Sum)?;
    let pick = |k: usize| gather(&totals, &Layout::new(vec![s.channels], vec![2], k));
    Ok((dx, pick(0)?, pick(1)?))
}

/// Rows of q (and keys) per attention tile (kernels/attention.cu).
const ATTENTION_TILE: usize = 32;

/// The attention kernels' launch: `tiles` row tiles × `bh`, 256 threads, `floats` of dynamic
/// shared memory.
fn attention_launch(op: &'static str, tiles: usize, bh: usize, floats: usize) -> Result<LaunchConfig> {
    if bh > 65535 {
        return Err(invalid(op, format!("{bh} (batch × heads) slices exceed CUDA's grid")));
    }
    Ok(LaunchConfig { grid: [tiles as u32, bh as u32, 1], block: [256, 1, 1], shared_bytes: (floats * F32) as u32 })
}

fn attention_sizes(op: &'static str, s: &AttentionShape, scale: f64) -> Result<[KernelArg; 5]> {
    Ok([
        KernelArg::I32(to_i32(op, "sq", s.sq)?),
        KernelArg::I32(to_i32(op, "sk", s.sk)?),
        KernelArg::I32(to_i32(op, "d", s.d)?),
        KernelArg::I32(to_i32(op, "dv", s.dv)?),
        KernelArg::F32(scale as f32),
    ])
}

/// `(out, lse)` of `softmax(scale·q·kᵀ)·v`, q `[bh, sq, d]`, k `[bh, sk, d]`, v `[bh, sk, dv]`
/// contiguous, as [`crate::cpu::attention::attention_forward`] (kernels/attention.cu).
pub fn attention_forward(q: &DeviceBuffer, k: &DeviceBuffer, v: &DeviceBuffer, s: &AttentionShape, scale: f64) -> Result<(DeviceBuffer, DeviceBuffer)> {
    let op = "scaled_dot_product_attention";
    check_len(op, "q", q, s.bh * s.sq * s.d)?;
    check_len(op, "k", k, s.bh * s.sk * s.d)?;
    check_len(op, "v", v, s.bh * s.sk * s.dv)?;
    let (out, lse) = (output(q.backend(), s.bh * s.sq * s.dv)?, output(q.backend(), s.bh * s.sq)?);
    let t = ATTENTION_TILE;
    let floats = 2 * t * (s.d + 1) + 2 * t * s.dv + t * (t + 1) + 3 * t;
    let config = attention_launch(op, s.sq.div_ceil(t), s.bh, floats)?;
    let mut args = vec![q.arg(), k.arg(), v.arg(), out.arg(), lse.arg()];
    args.extend(attention_sizes(op, s, scale)?);
    q.backend().launch(kernel("attention.cu", "attention_forward_f32"), &config, &args)?;
    Ok((out, lse))
}

/// `(dq, dk, dv)` of attention from the forward's inputs, output, lse and `d_out`, as
/// [`crate::cpu::attention::attention_backward`] (kernels/attention.cu).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &DeviceBuffer,
    k: &DeviceBuffer,
    v: &DeviceBuffer,
    out: &DeviceBuffer,
    lse: &DeviceBuffer,
    d_out: &DeviceBuffer,
    s: &AttentionShape,
    scale: f64,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    let op = "scaled_dot_product_attention_backward";
    check_len(op, "q", q, s.bh * s.sq * s.d)?;
    check_len(op, "k", k, s.bh * s.sk * s.d)?;
    check_len(op, "v", v, s.bh * s.sk * s.dv)?;
    check_len(op, "out", out, s.bh * s.sq * s.dv)?;
    check_len(op, "d_out", d_out, s.bh * s.sq * s.dv)?;
    check_len(op, "lse", lse, s.bh * s.sq)?;
    let backend = q.backend();
    let rows = s.bh * s.sq;
    let delta = output(backend, rows)?;
    let warps_per_block = (THREADS / 32) as usize;
    let delta_args = [out.arg(), d_out.arg(), delta.arg(), KernelArg::I64(rows as i64), KernelArg::I32(to_i32(op, "dv", s.dv)?)];
    backend.launch(kernel("attention.cu", "attention_delta_f32"), &LaunchConfig::linear(rows.div_ceil(warps_per_block) as u32, THREADS), &delta_args)?;

    let (dq, dk, dv) = (output(backend, s.bh * s.sq * s.d)?, output(backend, s.bh * s.sk * s.d)?, output(backend, s.bh * s.sk * s.dv)?);
    let t = ATTENTION_TILE;
    let tiles = 2 * t * (s.d + 1) + 2 * t * (s.dv + 1);
    let dkdv_floats = tiles + t * s.d + t * s.dv + 2 * t * (t + 1) + 2 * t;
    let mut args = vec![q.arg(), k.arg(), v.arg(), lse.arg(), delta.arg(), d_out.arg(), dk.arg(), dv.arg()];
    args.extend(attention_sizes(op, s, scale)?);
    backend.launch(kernel("attention.cu", "attention_backward_dkdv_f32"), &attention_launch(op, s.sk.div_ceil(t), s.bh, dkdv_floats)?, &args)?;
    let dq_floats = tiles + t * s.d + t * (t + 1) + 2 * t;
    let mut args = vec![q.arg(), k.arg(), v.arg(), lse.arg(), delta.arg(), d_out.arg(), dq.arg()];
    args.extend(attention_sizes(op, s, scale)?);
    backend.launch(kernel("attention.cu", "attention_backward_dq_f32"), &attention_launch(op, s.sq.div_ceil(t), s.bh, dq_floats)?, &args)?;
    Ok((dq, dk, dv))
}

/// The f32 constants of one Adam step (computed once on the host, as the CPU rule does).
#[derive(Clone, Copy, Debug)]
pub struct AdamConstants {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// `1 − lr·weight_decay` (AdamW).
    pub decay: f32,
    /// `lr / (1 − β1^t)`.
    pub step_size: f32,
    /// `1 / √(1 − β2^t)`.
    pub inv_bc2: f32,
    pub decoupled: bool,
}

/// One Adam(W) step in place on the `n` elements of param, grad and the two moments
/// (kernels/optim.cu).
pub fn adam_update(param: &DeviceBuffer, grad: &DeviceBuffer, m: &DeviceBuffer, v: &DeviceBuffer, n: usize, c: &AdamConstants) -> Result<()> {
    let op = "adam";
    for (what, buffer) in [("param", param), ("grad", grad), ("exp_avg", m), ("exp_avg_sq", v)] {
        check_len(op, what, buffer, n)?;
    }
    if n == 0 {
        return Ok(());
    }
    let args = [
        param.arg(),
        grad.arg(),
        m.arg(),
        v.arg(),
        KernelArg::I64(n as i64),
        KernelArg::F32(c.beta1),
        KernelArg::F32(c.beta2),
        KernelArg::F32(c.eps),
        KernelArg::F32(c.weight_decay),
        KernelArg::F32(c.decay),
        KernelArg::F32(c.step_size),
        KernelArg::F32(c.inv_bc2),
        KernelArg::I32(c.decoupled as i32),
    ];
    param.backend().launch(kernel("optim.cu", "adam_f32"), &grid_stride(n), &args)
}

/// `C = A·B` on tensor cores: A `[m, k]` and B `[k, n]` row-major f16 (or, with `bf16`,
/// bf16) bits, C `[m, n]` f32, accumulated in f32 (kernels/gemm_f16.cu).
pub fn gemm_f16(a: &DeviceBuffer, b: &DeviceBuffer, m: usize, n: usize, k: usize, bf16: bool) -> Result<DeviceBuffer> {
    let op = "gemm_f16";
    let half = std::mem::size_of::<u16>();
    if a.bytes() < m * k * half || b.bytes() < k * n * half {
        return Err(invalid(op, format!("A holds {} and B {} bytes; a {m}×{k} by {k}×{n} product needs {} and {}", a.bytes(), b.bytes(), m * k * half, k * n * half)));
    }
    let c = output(a.backend(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(c);
    }
    let grid = [n.div_ceil(64), m.div_ceil(64), 1];
    if grid[1] > 65535 {
        return Err(invalid(op, format!("{m} rows exceed CUDA's grid")));
    }
    let config = LaunchConfig { grid: grid.map(|g| g as u32), block: [128, 1, 1], shared_bytes: 0 };
    let args = [
        a.arg(),
        b.arg(),
        c.arg(),
        KernelArg::I32(to_i32(op, "m", m)?),
        KernelArg::I32(to_i32(op, "n", n)?),
        KernelArg::I32(to_i32(op, "k", k)?),
        KernelArg::I32(bf16 as i32),
    ];
    a.backend().launch(kernel("gemm_f16.cu", "gemm_f16_f32"), &config, &args)?;
    Ok(c)
}

/// What a Philox draw produces from each uniform `u` (kernels/rng.cu).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Draw {
    Uniform { low: f64, high: f64 },
    Normal { mean: f64, std: f64 },
    /// `scale` where `u ≥ p`, else 0.
    DropoutMask { p: f64, scale: f64 },
}

/// `n` values of the Philox stream `seed` from block `first` on, as the CPU's
/// [`crate::rng::Rng`] draws them (kernels/rng.cu).
pub fn philox_fill(backend: &Arc<dyn GpuBackend>, n: usize, seed: u64, first: u64, draw: Draw) -> Result<DeviceBuffer> {
    let out = output(backend, n)?;
    if n > 0 {
        let (name, a, b) = match draw {
            Draw::Uniform { low, high } => ("philox_uniform_f32", low, high),
            Draw::Normal { mean, std } => ("philox_normal_f32", mean, std),
            Draw::DropoutMask { p, scale } => ("philox_dropout_mask_f32", p, scale),
        };
        let args = [out.arg(), KernelArg::I64(n as i64), KernelArg::I64(seed as i64), KernelArg::I64(first as i64), KernelArg::F64(a), KernelArg::F64(b)];
        backend.launch(kernel("rng.cu", name), &grid_stride(n.div_ceil(4)), &args)?;
    }
    Ok(out)
}

/// `ema ← decay·ema + (1 − decay)·param` in place over `n` elements (kernels/optim.cu).
pub fn ema_update(ema: &DeviceBuffer, param: &DeviceBuffer, n: usize, decay: f64) -> Result<()> {
    check_len("ema", "ema", ema, n)?;
    check_len("ema", "param", param, n)?;
    if n > 0 {
        let args = [ema.arg(), param.arg(), KernelArg::F32(decay as f32), KernelArg::F32((1.0 - decay) as f32), KernelArg::I64(n as i64)];
        ema.backend().launch(kernel("optim.cu", "ema_f32"), &grid_stride(n), &args)?;
    }
    Ok(())
}

/// The f32 constants of an SGD step (kernels/optim.cu).
#[derive(Clone, Copy, Debug)]
pub struct SgdConstants {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub first_step: bool,
}

/// One SGD step in place on `n` elements; `buffer` is the momentum buffer (None without
/// momentum) (kernels/optim.cu).
pub fn sgd_update(param: &DeviceBuffer, grad: &DeviceBuffer, buffer: Option<&DeviceBuffer>, n: usize, c: &SgdConstants) -> Result<()> {
    check_len("sgd", "param", param, n)?;
    check_len("sgd", "grad", grad, n)?;
    if let Some(buffer) = buffer {
        check_len("sgd", "momentum buffer", buffer, n)?;
    }
    if n == 0 {
        return Ok(());
    }
    let args = [
        param.arg(),
        grad.arg(),
        KernelArg::Ptr(buffer.map_or(0, |b| b.ptr())),
        KernelArg::I64(n as i64),
        KernelArg::F32(c.lr),
        KernelArg::F32(c.momentum),
        KernelArg::F32(c.dampening),
        KernelArg::F32(c.weight_decay),
        KernelArg::I32(c.nesterov as i32),
        KernelArg::I32(c.first_step as i32),
    ];
    param.backend().launch(kernel("optim.cu", "sgd_f32"), &grid_stride(n), &args)
}

/// `out[o, i, r] = x[o, indices[i], r]` for x `[outer, axis_len, inner]` contiguous, or with
/// `adjoint`, `dx[o, a, r] = Σ_{indices[i] = a} g[o, i, r]` (kernels/elementwise.cu).
pub fn index_rows(x: &DeviceBuffer, indices: &[usize], outer: usize, axis_len: usize, inner: usize, adjoint: bool) -> Result<DeviceBuffer> {
    let op = if adjoint { "index_select_backward" } else { "index_select" };
    let count = indices.len();
    let (input_len, output_len) = if adjoint { (outer * count * inner, outer * axis_len * inner) } else { (outer * axis_len * inner, outer * count * inner) };
    check_len(op, "input", x, input_len)?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= axis_len) {
        return Err(invalid(op, format!("index {bad} is out of range for an axis of size {axis_len}")));
    }
    let out = output(x.backend(), output_len)?;
    if output_len == 0 {
        return Ok(out);
    }
    let index_values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let index_buffer = DeviceBuffer::from_slice(x.backend(), if index_values.is_empty() { &[0i64][..] } else { &index_values })?;
    let name = if adjoint { "index_add_f32" } else { "index_select_f32" };
    let long = |v: usize| KernelArg::I64(v as i64);
    let args = [x.arg(), index_buffer.arg(), out.arg(), long(outer), long(axis_len), long(inner), long(count)];
    x.backend().launch(kernel("elementwise.cu", name), &grid_stride(output_len), &args)?;
    Ok(out)
}

/// Nearest upsampling by `scale` of `planes` contiguous `h × w` planes, or with `adjoint`,
/// its backward: each input element gets the sum of its `scale × scale` block of the
/// gradient (kernels/upsample.cu).
pub fn upsample_nearest2d(x: &DeviceBuffer, planes: usize, h: usize, w: usize, scale: usize, adjoint: bool) -> Result<DeviceBuffer> {
    let op = if adjoint { "upsample_nearest2d_backward" } else { "upsample_nearest2d" };
    let (small, large) = (planes * h * w, planes * h * w * scale * scale);
    let (input_len, output_len) = if adjoint { (large, small) } else { (small, large) };
    check_len(op, "input", x, input_len)?;
    let out = output(x.backend(), output_len)?;
    if output_len > 0 {
        let name = if adjoint { "upsample_nearest2d_backward_f32" } else { "upsample_nearest2d_f32" };
        let args = [
            x.arg(),
            out.arg(),
            KernelArg::I64(planes as i64),
            KernelArg::I32(to_i32(op, "h", h)?),
            KernelArg::I32(to_i32(op, "w", w)?),
            KernelArg::I32(to_i32(op, "scale", scale)?),
        ];
        x.backend().launch(kernel("upsample.cu", name), &grid_stride(output_len), &args)?;
    }
    Ok(out)
}
