//! The host side of matmul's CUDA kernel (kernels/matmul.cu, the tile GEMM of
//! kernels/ember_cuda.h).

use super::{MatmulKernels, MatmulShape};
use crate::cuda::launch::{F32, check_len, grid_stride, invalid, kernel, output, tile_grid, tiled_kernel, to_i32};
use crate::cuda::{DeviceBuffer, KernelArg};
use crate::dispatch::Cuda;
use crate::dispatch::device::{device_tensor, with_device_buffers};
use crate::layout::Layout;
use crate::{Result, Tensor};

impl MatmulKernels for Cuda {
    /// One batched GEMM launch when the batch offsets of both operands are evenly spaced
    /// (contiguous or broadcast batches), else one per matrix.
    fn batched_matmul(&self, a: &Tensor, la: &Layout, b: &Tensor, lb: &Layout, MatmulShape { m, n, k }: MatmulShape, out_shape: &[usize]) -> Result<Tensor> {
        let rank = la.rank();
        let batch_layout = |l: &Layout| Layout::new(l.shape()[..rank - 2].to_vec(), l.strides()[..rank - 2].to_vec(), l.offset());
        let (a_offsets, b_offsets) = (batch_layout(la).offsets(), batch_layout(lb).offsets());
        let batch = a_offsets.len();
        // The common step between consecutive offsets, if there is one.
        let step = |offsets: &[usize]| -> Option<usize> {
            let first = offsets.windows(2).next().map_or(0, |w| w[1].wrapping_sub(w[0]));
            offsets.windows(2).all(|w| w[1].wrapping_sub(w[0]) == first && w[1] >= w[0]).then_some(first)
        };
        let (sa, sb) = (la.strides(), lb.strides());
        let out = with_device_buffers("matmul", [a, b], |[a_buffer, b_buffer]| {
            let out = DeviceBuffer::new(a_buffer.backend(), batch * m * n * std::mem::size_of::<f32>())?;
            let matrix =
                |buffer, offset, rows: usize, cols: usize, batch_stride| GpuMatrix { buffer, offset, row_stride: rows, col_stride: cols, batch_stride };
            match (step(&a_offsets), step(&b_offsets)) {
                (Some(a_step), Some(b_step)) => gemm(
                    batch,
                    m,
                    n,
                    k,
                    matrix(a_buffer, a_offsets[0], sa[rank - 2], sa[rank - 1], a_step),
                    matrix(b_buffer, b_offsets[0], sb[rank - 2], sb[rank - 1], b_step),
                    matrix(&out, 0, n, 1, m * n),
                    false,
                )?,
                _ => {
                    for i in 0..batch {
                        gemm(
                            1,
                            m,
                            n,
                            k,
                            matrix(a_buffer, a_offsets[i], sa[rank - 2], sa[rank - 1], 0),
                            matrix(b_buffer, b_offsets[i], sb[rank - 2], sb[rank - 1], 0),
                            matrix(&out, i * m * n, n, 1, 0),
                            false,
                        )?;
                    }
                }
            }
            Ok(out)
        })?;
        Ok(device_tensor(out, a.device(), out_shape))
    }
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

/// Blocks a GEMM should give a GPU at least (two waves of an H100's 132 SMs, about).
const TARGET_BLOCKS: usize = 256;
/// The shortest depth range worth a split of its own.
const MIN_SPLIT_DEPTH: usize = 256;
/// The deepest panel of the tiles (EMBER_TF32_DEPTH in kernels/ember_cuda.h; the f32 tile's
/// is 8): splits end on whole panels of either.
const TILE_DEPTH: usize = 16;

/// How a GEMM whose output gives `blocks` tiles splits its depth `k`: `(splits, k_chunk)`. One
/// split when the tiles alone fill a GPU or k is short; else as many ranges of at least
/// [`MIN_SPLIT_DEPTH`] (a multiple of the tile depth) as bring the blocks to the target. A
/// function of the shapes only: results are deterministic.
pub fn gemm_split(blocks: usize, k: usize) -> (usize, usize) {
    let wanted = TARGET_BLOCKS.div_ceil(blocks.max(1)).min(k / MIN_SPLIT_DEPTH).max(1);
    let k_chunk = k.div_ceil(wanted).next_multiple_of(TILE_DEPTH).max(TILE_DEPTH);
    (k.div_ceil(k_chunk).max(1), k_chunk)
}

/// `C[z] (+)= A[z] · B[z]` for `batch` matrices, A `m×k`, B `k×n`, C `m×n` with unit column
/// stride (kernels/matmul.cu; the CPU kernel is the shared GEMM of `cpu/gemm.rs`). Without
/// `accumulate`, C's previous contents are ignored. Few output tiles over a long k split k
/// ([`gemm_split`]): each range into a partial buffer, then one launch adds them into C.
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
    let (mut config, tile) = tile_grid("gemm", m, n, batch)?;
    let (splits, k_chunk) = gemm_split(config.grid.iter().map(|&g| g as usize).product(), k);
    let backend = c.buffer.backend();
    let partials = if splits > 1 { Some(output(backend, batch * splits * m * n)?) } else { None };
    // the tiles write C, or with splits their slices of the partials ([matrix][split][m][n])
    let (target, row_stride, batch_stride, add) = match &partials {
        Some(p) => (KernelArg::Ptr(p.ptr()), n, m * n, false),
        None => (c.pointer(), c.row_stride, c.batch_stride, accumulate),
    };
    config.grid[2] = u32::try_from(batch * splits)
        .ok()
        .filter(|&z| z <= 65535)
        .ok_or_else(|| invalid("gemm", format!("{batch} matrices × {splits} splits exceed CUDA's grid")))?;
    let long = |v: usize| KernelArg::I64(v as i64);
    let args = [
        a.pointer(),
        b.pointer(),
        target,
        KernelArg::I32(to_i32("gemm", "m", m)?),
        KernelArg::I32(to_i32("gemm", "n", n)?),
        KernelArg::I32(to_i32("gemm", "k", k)?),
        long(a.row_stride),
        long(a.col_stride),
        long(a.batch_stride),
        long(b.row_stride),
        long(b.col_stride),
        long(b.batch_stride),
        long(row_stride),
        long(batch_stride),
        KernelArg::I32(add as i32),
        KernelArg::I32(splits as i32),
        KernelArg::I32(to_i32("gemm", "k chunk", k_chunk)?),
    ];
    // read each operand along its contiguous axis: A transposed when its rows are (m > 1), B
    // when its depth is (n > 1)
    let (a_transposed, b_transposed) = (m > 1 && a.row_stride == 1 && a.col_stride != 1, n > 1 && b.row_stride == 1 && b.col_stride != 1);
    let name = match (a_transposed, b_transposed) {
        (false, false) => tiled_kernel!("matmul.cu", "gemm_nn", tile),
        (true, false) => tiled_kernel!("matmul.cu", "gemm_tn", tile),
        (false, true) => tiled_kernel!("matmul.cu", "gemm_nt", tile),
        (true, true) => tiled_kernel!("matmul.cu", "gemm_tt", tile),
    };
    backend.launch(name, &config, &args)?;
    if let Some(p) = partials {
        let args = [
            p.arg(),
            c.pointer(),
            KernelArg::I32(m as i32),
            KernelArg::I32(n as i32),
            long(batch),
            KernelArg::I32(splits as i32),
            long(c.row_stride),
            long(c.batch_stride),
            KernelArg::I32(accumulate as i32),
        ];
        backend.launch(kernel("matmul.cu", "gemm_sum_splits_f32"), &grid_stride(batch * m * n), &args)?;
    }
    Ok(())
}
