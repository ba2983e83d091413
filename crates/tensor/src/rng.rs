//! Counter-based random numbers (Philox4x32-10, Salmon et al., "Parallel random numbers: as
//! easy as 1, 2, 3", SC 2011).
//!
//! Element `i` of a draw is a pure function of (seed, block = offset + i/4, lane = i%4), so any
//! thread — or a CUDA thread later — can compute any element independently, and a stream is
//! reproducible from `(seed, offset)` alone (that pair is the whole RNG state in checkpoints).
//!
//! - uniform in [0, 1): `u = (x >> 8) · 2⁻²⁴` from one 32-bit lane `x` (exact in f32);
//! - normal: Box–Muller on lanes (0, 1) and (2, 3) of a block:
//!   `r = √(−2 ln(1 − u₀))`, `z₀ = r cos 2πu₁`, `z₁ = r sin 2πu₁`.

use rayon::prelude::*;

use crate::cuda::kernels::Draw;
use crate::error::Result;
use crate::storage::CpuStorage;
use crate::{DType, Layout, Tensor};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32 bijection with 10 rounds: four 32-bit outputs for a 128-bit counter.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0, hi1, lo1) = ((p0 >> 32) as u32, p0 as u32, (p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The four lanes of block `block` of the stream `seed`.
fn block(seed: u64, block: u64) -> [u32; 4] {
    philox4x32([block as u32, (block >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32])
}

/// Blocks `first..first + 8` of the stream `seed`: the same values as [`block`], eight at a
/// time with AVX2 where the build targets it.
fn eight_blocks(seed: u64, first: u64) -> [[u32; 4]; 8] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        // SAFETY: the build targets AVX2 (cfg above)
        unsafe { eight_blocks_avx2(seed, first) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    {
        std::array::from_fn(|i| block(seed, first.wrapping_add(i as u64)))
    }
}

/// Philox4x32-10 on eight blocks at once, each 32-bit word in a 64-bit lane (two vectors of four
/// blocks per word): `vpmuludq` multiplies the low halves of 64-bit lanes into full 64-bit
/// products, so `hi` is a shift and `lo` the product itself. The high halves of the lanes carry
/// garbage that never reaches a result: a word xored with garbage only ever feeds a multiply
/// (which reads the low half), and the outputs are truncated to 32 bits.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[target_feature(enable = "avx2")]
unsafe fn eight_blocks_avx2(seed: u64, first: u64) -> [[u32; 4]; 8] {
    use std::arch::x86_64::*;
    let counter = |i: u64| first.wrapping_add(i);
    // lanes hold blocks (4h .. 4h + 3) for half h
    let word = |h: u64, f: &dyn Fn(u64) -> u64| {
        _mm256_set_epi64x(f(counter(4 * h + 3)) as i64, f(counter(4 * h + 2)) as i64, f(counter(4 * h + 1)) as i64, f(counter(4 * h)) as i64)
    };
    let mut c0 = [word(0, &|b| b & 0xffff_ffff), word(1, &|b| b & 0xffff_ffff)];
    let mut c1 = [word(0, &|b| b >> 32), word(1, &|b| b >> 32)];
    let mut c2 = [_mm256_setzero_si256(); 2];
    let mut c3 = [_mm256_setzero_si256(); 2];
    let (m0, m1) = (_mm256_set1_epi64x(M0 as i64), _mm256_set1_epi64x(M1 as i64));
    let mut k0 = _mm256_set1_epi64x((seed & 0xffff_ffff) as i64);
    let mut k1 = _mm256_set1_epi64x((seed >> 32) as i64);
    let (w0, w1) = (_mm256_set1_epi64x(W0 as i64), _mm256_set1_epi64x(W1 as i64));
    for round in 0..10 {
        if round > 0 {
            // 32-bit adds: the key words wrap within their low halves
            k0 = _mm256_add_epi32(k0, w0);
            k1 = _mm256_add_epi32(k1, w1);
        }
        for h in 0..2 {
            let p0 = _mm256_mul_epu32(c0[h], m0);
            let p1 = _mm256_mul_epu32(c2[h], m1);
            c0[h] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64::<32>(p1), c1[h]), k0);
            c2[h] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64::<32>(p0), c3[h]), k1);
            c1[h] = p1;
            c3[h] = p0;
        }
    }
    // SAFETY: a 256-bit vector is four u64 lanes
    let lanes = |v: __m256i| -> [u64; 4] { unsafe { std::mem::transmute(v) } };
    std::array::from_fn(|i| {
        let (h, l) = (i / 4, i % 4);
        [lanes(c0[h])[l] as u32, lanes(c1[h])[l] as u32, lanes(c2[h])[l] as u32, lanes(c3[h])[l] as u32]
    })
}

/// A uniform in [0, 1) from one 32-bit lane (24 bits, exact in f32).
fn unit_uniform(x: u32) -> f64 {
    (x >> 8) as f64 * (1.0 / (1u64 << 24) as f64)
}

/// A seeded random stream. `offset` counts the Philox blocks used so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    pub seed: u64,
    pub offset: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { seed, offset: 0 }
    }

    /// Takes the next `n` values' worth of blocks and returns the first block index.
    fn advance(&mut self, n: usize) -> u64 {
        let first = self.offset;
        self.offset += n.div_ceil(4) as u64;
        first
    }

    /// Fills `out` block by block: `fill(lanes, chunk)` writes up to four values from the
    /// four 32-bit lanes of one Philox block (blocks in parallel).
    fn fill_by_block(&mut self, n: usize, fill: impl Fn([u32; 4], &mut [f64]) + Sync) -> Vec<f64> {
        let (seed, first) = (self.seed, self.advance(n));
        let mut out = vec![0.0; n];
        out.par_chunks_mut(4).with_min_len(1024).enumerate().for_each(|(b, chunk)| fill(block(seed, first + b as u64), chunk));
        out
    }

    /// `n` uniforms in [0, 1), as f64 values of 24-bit resolution.
    pub fn uniform_values(&mut self, n: usize) -> Vec<f64> {
        self.fill_by_block(n, |lanes, chunk| {
            for (value, &lane) in chunk.iter_mut().zip(&lanes) {
                *value = unit_uniform(lane);
            }
        })
    }

    /// `n` mask values (`scale` where the uniform is at least `p`, else 0) written straight
    /// into a cached buffer: the values of `uniform_values` compared in f64 as above, without
    /// the f64 arrays.
    fn dropout_mask<T: crate::FloatElem>(&mut self, n: usize, p: f64, scale: f64) -> Vec<T> {
        self.dropout_values(n, p, scale, |_, mask| mask)
    }

    /// `x ⊙ mask` for the mask [`Rng::dropout_mask`] would draw, in one pass (no mask array).
    pub(crate) fn dropout_apply<T: crate::FloatElem>(&mut self, x: &[T], p: f64, scale: f64) -> Vec<T> {
        self.dropout_values(x.len(), p, scale, |i, mask| x[i] * mask)
    }

    /// `value(i, mask_i)` for `i < n`, the mask drawn from this stream (which advances).
    fn dropout_values<T: crate::FloatElem>(&mut self, n: usize, p: f64, scale: f64, value: impl Fn(usize, T) -> T + Sync) -> Vec<T> {
        let (seed, first) = (self.seed, self.advance(n));
        let (keep, drop) = (T::from_f64(scale), T::zero());
        // unit_uniform(x) ≥ p  ⇔  (x >> 8) ≥ p·2²⁴  ⇔  (x >> 8) ≥ ⌈p·2²⁴⌉ (p·2²⁴ is exact)
        let threshold = (p * (1u64 << 24) as f64).ceil() as u32;
        let mut out = crate::cpu::pool::for_overwrite::<T>(n);
        out.par_chunks_mut(32).with_min_len(256).enumerate().for_each(|(b, chunk)| {
            let blocks = eight_blocks(seed, first + 8 * b as u64);
            for (k, (out, &lane)) in chunk.iter_mut().zip(blocks.as_flattened()).enumerate() {
                *out = value(32 * b + k, if lane >> 8 >= threshold { keep } else { drop });
            }
        });
        out
    }

    /// `n` standard normals.
    pub fn normal_values(&mut self, n: usize) -> Vec<f64> {
        self.fill_by_block(n, |lanes, chunk| {
            for (pair, values) in chunk.chunks_mut(2).enumerate() {
                let (u0, u1) = (unit_uniform(lanes[2 * pair]), unit_uniform(lanes[2 * pair + 1]));
                let r = (-2.0 * (1.0 - u0).ln()).sqrt();
                let (sin, cos) = (2.0 * std::f64::consts::PI * u1).sin_cos();
                values[0] = r * cos;
                if let Some(second) = values.get_mut(1) {
                    *second = r * sin;
                }
            }
        })
    }
}

/// A draw of the stream on a CUDA device (kernels/rng.cu), advancing `rng` as a CPU draw does.
fn draw_on_gpu(shape: &[usize], ordinal: usize, draw: Draw, rng: &mut Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let (seed, first) = (rng.seed, rng.advance(n));
    let buffer = crate::cuda::kernels::philox_fill(&crate::cuda::device(ordinal)?, n, seed, first, draw)?;
    Ok(crate::dispatch::device::device_tensor(buffer, crate::Device::Cuda(ordinal), shape))
}

fn tensor_from_values(values: Vec<f64>, shape: &[usize], dtype: DType) -> Tensor {
    let storage = CpuStorage::from_f64(values.into_iter(), dtype);
    Tensor::from_storage(crate::storage::Storage::Cpu(storage), Layout::contiguous(shape))
}

impl Tensor {
    /// Uniform values in [low, high).
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN bounds are refused too
    pub fn rand_uniform(shape: &[usize], low: f64, high: f64, dtype: DType, rng: &mut Rng) -> Result<Tensor> {
        if !(low < high) {
            return crate::error::invalid("rand_uniform", format!("empty range [{low}, {high})"));
        }
        let n = shape.iter().product();
        let values = rng.uniform_values(n).into_iter().map(|u| low + (high - low) * u).collect();
        Ok(tensor_from_values(values, shape, dtype))
    }

    /// Uniform values in [low, high) drawn on `device` (f32 on a CUDA device): the same
    /// stream, and the same values to f32 rounding, as [`Tensor::rand_uniform`] on the CPU.
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN bounds are refused too
    pub fn rand_uniform_on(shape: &[usize], low: f64, high: f64, dtype: DType, device: crate::Device, rng: &mut Rng) -> Result<Tensor> {
        match device {
            crate::Device::Cuda(ordinal) if dtype == DType::F32 => {
                if !(low < high) {
                    return crate::error::invalid("rand_uniform", format!("empty range [{low}, {high})"));
                }
                draw_on_gpu(shape, ordinal, Draw::Uniform { low, high }, rng)
            }
            _ => Tensor::rand_uniform(shape, low, high, dtype, rng)?.to_device(device),
        }
    }

    /// Normal values drawn on `device`, as [`Tensor::rand_uniform_on`].
    pub fn randn_on(shape: &[usize], mean: f64, std: f64, dtype: DType, device: crate::Device, rng: &mut Rng) -> Result<Tensor> {
        match device {
            crate::Device::Cuda(ordinal) if dtype == DType::F32 => draw_on_gpu(shape, ordinal, Draw::Normal { mean, std }, rng),
            _ => Tensor::randn(shape, mean, std, dtype, rng).to_device(device),
        }
    }

    /// The inverted-dropout mask on `device`: `1/(1 − p)` where the uniform draw is ≥ `p`,
    /// else 0. The same mask on every device for the same stream.
    pub fn dropout_mask_on(shape: &[usize], p: f64, dtype: DType, device: crate::Device, rng: &mut Rng) -> Result<Tensor> {
        let scale = 1.0 / (1.0 - p);
        match device {
            crate::Device::Cuda(ordinal) if dtype == DType::F32 => draw_on_gpu(shape, ordinal, Draw::DropoutMask { p, scale }, rng),
            _ => {
                let n: usize = shape.iter().product();
                let mask = match dtype {
                    DType::F32 => crate::dispatch::host::wrap(rng.dropout_mask::<f32>(n, p, scale)),
                    DType::F64 => crate::dispatch::host::wrap(rng.dropout_mask::<f64>(n, p, scale)),
                    _ => {
                        let mask = rng.uniform_values(n).into_iter().map(|u| if u >= p { scale } else { 0.0 }).collect();
                        return tensor_from_values(mask, shape, dtype).to_device(device);
                    }
                };
                crate::dispatch::host::host_tensor(mask, shape).to_device(device)
            }
        }
    }

    /// Normal values with the given mean and standard deviation.
    pub fn randn(shape: &[usize], mean: f64, std: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let n = shape.iter().product();
        let values = rng.normal_values(n).into_iter().map(|z| mean + std * z).collect();
        tensor_from_values(values, shape, dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_blocks_at_once_equal_the_blocks_one_by_one() {
        for (seed, first) in [(0, 0), (7, (1 << 32) - 3), (u64::MAX, u64::MAX - 20), (0x1234_5678_9abc_def0, 99)] {
            let together = eight_blocks(seed, first);
            for (i, lanes) in together.iter().enumerate() {
                assert_eq!(*lanes, block(seed, first + i as u64), "seed {seed} block {}", first + i as u64);
            }
        }
    }

    #[test]
    fn the_dropout_mask_keeps_exactly_the_uniforms_at_least_p() {
        // 0.5 and 2⁻²⁴·k are thresholds hit exactly by some draws
        for p in [0.1, 0.5, 3.0 / (1u64 << 24) as f64, 0.999] {
            let n = 10_001; // not a whole number of 8-block chunks
            let uniforms = Rng { seed: 5, offset: 3 }.uniform_values(n);
            let mut rng = Rng { seed: 5, offset: 3 };
            let mask = rng.dropout_mask::<f32>(n, p, 2.0);
            assert_eq!(rng.offset, 3 + n.div_ceil(4) as u64);
            let expected: Vec<f32> = uniforms.iter().map(|&u| if u >= p { 2.0 } else { 0.0 }).collect();
            assert_eq!(mask, expected, "p = {p}");
        }
    }

    #[test]
    fn dropout_applied_in_one_pass_equals_the_input_times_the_mask() {
        let x: Vec<f64> = (0..1001).map(|i| if i == 7 { f64::NAN } else { (i as f64 * 0.7).sin() }).collect();
        let mask = Rng { seed: 9, offset: 4 }.dropout_mask::<f64>(x.len(), 0.3, 1.0 / 0.7);
        let mut rng = Rng { seed: 9, offset: 4 };
        let applied = rng.dropout_apply(&x, 0.3, 1.0 / 0.7);
        assert_eq!(rng.offset, 4 + 1001usize.div_ceil(4) as u64);
        for (i, ((&a, &x), &m)) in applied.iter().zip(&x).zip(&mask).enumerate() {
            assert!(a.to_bits() == (x * m).to_bits(), "element {i}: {a} vs {x} * {m}");
        }
    }

    #[test]
    fn philox_matches_the_random123_known_answer() {
        // Known-answer vectors from Random123's kat_vectors for philox4x32_10.
        assert_eq!(philox4x32([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32([0xffffffff; 4], [0xffffffff; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    }

    #[test]
    fn streams_are_reproducible_and_split_consistently() {
        let whole = Rng::new(7).normal_values(10);
        let mut rng = Rng::new(7);
        let first = rng.normal_values(4);
        let second = rng.normal_values(6);
        assert_eq!(whole[..4], first[..]);
        assert_ne!(whole[4..], second[..4]); // a draw starts on a fresh block
        assert_eq!(Rng::new(7).normal_values(10), whole);
    }

    #[test]
    fn normal_values_have_the_right_moments() {
        let z = Rng::new(1).normal_values(200_000);
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        let u = Rng::new(2).uniform_values(100_000);
        assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
        assert!((u.iter().sum::<f64>() / u.len() as f64 - 0.5).abs() < 0.01);
    }
}
