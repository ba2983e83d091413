//! Shared primitives of the kernels' host side (each op's own is in `ops/<op>/cuda.rs`):
//! argument checks, output buffers, grid sizes, and the tile choice of the products built on
//! `ember_tile_gemm` (kernels/ember_cuda.h): GEMM and the implicit-GEMM convolutions. Written
//! once against [`GpuBackend`], so a GPU and the emulator run the same code.

use super::{DeviceBuffer, GpuBackend, Kernel, KernelArg, LaunchConfig, Strides};
use crate::precision::Precision;
use crate::{Layout, Result, TensorError};
use std::sync::Arc;

/// Threads per block of the elementwise, reduction and softmax kernels.
pub(crate) const THREADS: u32 = 256;
/// Blocks of a grid-stride loop: enough to fill a GPU, few enough to start quickly.
pub(crate) const MAX_GRID_STRIDE_BLOCKS: usize = 4096;

pub(crate) const F32: usize = std::mem::size_of::<f32>();

pub(crate) fn kernel(file: &'static str, name: &'static str) -> Kernel {
    Kernel { file, name }
}

pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> TensorError {
    TensorError::InvalidArgument { op, msg: msg.into() }
}

/// A grid-stride launch over `n` elements.
pub(crate) fn grid_stride(n: usize) -> LaunchConfig {
    LaunchConfig::linear(n.div_ceil(THREADS as usize).clamp(1, MAX_GRID_STRIDE_BLOCKS) as u32, THREADS)
}

pub(crate) fn to_i32(op: &'static str, what: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| invalid(op, format!("{what} = {value} does not fit a 32-bit int")))
}

/// The elements of `buffer` (as f32).
pub(crate) fn f32_len(buffer: &DeviceBuffer) -> usize {
    buffer.bytes() / F32
}

/// The pointer to element `offset` of `buffer`, after checking that every element of the view
/// `layout` lies inside it.
pub(crate) fn view_arg(op: &'static str, buffer: &DeviceBuffer, layout: &Layout) -> Result<(KernelArg, KernelArg)> {
    let numel = layout.numel();
    if numel > 0 {
        let last = layout.offset() + layout.shape().iter().zip(layout.strides()).map(|(&n, &s)| (n - 1) * s).sum::<usize>();
        if last >= f32_len(buffer) {
            return Err(invalid(op, format!("the view {layout:?} reaches past a buffer of {} elements", f32_len(buffer))));
        }
    }
    Ok((KernelArg::Ptr(buffer.ptr() + (layout.offset() * F32) as u64), KernelArg::Strides(Strides::of(layout)?)))
}

pub(crate) fn check_len(op: &'static str, what: &str, buffer: &DeviceBuffer, needed: usize) -> Result<()> {
    if f32_len(buffer) < needed {
        return Err(invalid(op, format!("{what} holds {} elements, {needed} needed", f32_len(buffer))));
    }
    Ok(())
}

pub(crate) fn output(backend: &Arc<dyn GpuBackend>, n: usize) -> Result<DeviceBuffer> {
    DeviceBuffer::new(backend, n * F32)
}

/// The output tile of the kernels built on `ember_tile_gemm`, `ember_tile_gemm_tf32` and
/// `ember_tile_gemm_bf16` (kernels/ember_cuda.h): GEMM and the implicit-GEMM convolutions.
/// Each has a `_t128` and a `_t64` kernel in each precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Tile {
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
    pub(crate) fn for_output(m: usize, n: usize, batches: usize) -> Tile {
        if let Some(tile) = FORCED_TILE.with(|forced| forced.get()) {
            return tile;
        }
        let large_tiles = m.div_ceil(128) * n.div_ceil(128) * batches;
        if m >= 128 && n >= 128 && large_tiles >= 132 { Tile::Large } else { Tile::Small }
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Tile::Large => 128,
            Tile::Small => 64,
        }
    }

    /// Of a product's six kernels `[f32_t128, f32_t64, tf32_t128, tf32_t64, bf16_t128,
    /// bf16_t64]`, the one for this tile in `precision` (use [`tiled_kernel!`]).
    pub(crate) fn pick(self, precision: Precision, kernels: [&'static str; 6]) -> &'static str {
        let arithmetic = match precision {
            Precision::F32 => 0,
            Precision::Tf32 => 2,
            Precision::Bf16 => 4,
        };
        kernels[arithmetic + usize::from(self == Tile::Small)]
    }
}

/// The kernel of the tiled product `$base` of `$file` (its six kernels made by
/// `EMBER_TILED_KERNELS` in kernels/ember_cuda.h) for `$tile` in this thread's precision
/// ([`crate::precision`]).
macro_rules! tiled_kernel {
    ($file:literal, $base:literal, $tile:expr) => {
        $crate::cuda::launch::kernel(
            $file,
            $tile.pick(
                $crate::precision::precision(),
                [
                    concat!($base, "_f32_t128"),
                    concat!($base, "_f32_t64"),
                    concat!($base, "_tf32_t128"),
                    concat!($base, "_tf32_t64"),
                    concat!($base, "_bf16_t128"),
                    concat!($base, "_bf16_t64"),
                ],
            ),
        )
    };
}
pub(crate) use tiled_kernel;

/// The launch of a tiled product: `batches` outputs of `m × n` (blockIdx.z the batch or the
/// split), and the tile it uses.
pub(crate) fn tile_grid(op: &'static str, m: usize, n: usize, batches: usize) -> Result<(LaunchConfig, Tile)> {
    let tile = Tile::for_output(m, n, batches);
    let size = tile.size();
    let grid = [n.div_ceil(size), m.div_ceil(size), batches];
    if grid[0] > i32::MAX as usize || grid[1] > 65535 || grid[2] > 65535 {
        return Err(invalid(op, format!("{batches} output(s) of {m}×{n} exceed CUDA's grid")));
    }
    Ok((LaunchConfig { grid: grid.map(|g| g as u32), block: [256, 1, 1], shared_bytes: 0 }, tile))
}
