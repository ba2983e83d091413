//! Matrix multiply: 2-D, batched, broadcast batch axes, transposed and otherwise strided
//! operands, sizes 1 and odd; f64 and f32 forward against a naive triple loop in f64 on sizes
//! that exercise the packed, multi-block and threaded gemm paths; gradient checks in f64. Every
//! test runs on each device of the build (`cpu::…`, `cuda::…`; f32 kernels on a CUDA device).

#[macro_use]
mod common;

use common::*;
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Tensor};

/// `[..., m, k] · [..., k, n]` with broadcast batch axes, by a triple loop per batch element.
fn naive_matmul(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    assert_eq!(k, sb[rb - 2], "test bug: inner sizes");
    let (ba, bb) = (&sa[..ra - 2], &sb[..rb - 2]);
    let rank = ba.len().max(bb.len());
    let batch: Vec<usize> = (0..rank)
        .map(|i| {
            let x = if i + ba.len() >= rank { ba[i + ba.len() - rank] } else { 1 };
            let y = if i + bb.len() >= rank { bb[i + bb.len() - rank] } else { 1 };
            assert!(x == y || x == 1 || y == 1, "test bug: batch shapes");
            x.max(y)
        })
        .collect();
    let source = |index: &[usize], shape: &[usize]| {
        let lead = index.len() - shape.len();
        let i: Vec<usize> = shape.iter().enumerate().map(|(j, &s)| if s == 1 { 0 } else { index[lead + j] }).collect();
        ravel(&i, shape)
    };
    let mut out = Vec::with_capacity(numel(&batch) * m * n);
    for flat in 0..numel(&batch) {
        let index = unravel(flat, &batch);
        let (a0, b0) = (source(&index, ba) * m * k, source(&index, bb) * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for p in 0..k {
                    acc += a[a0 + i * k + p] * b[b0 + p * n + j];
                }
                out.push(acc);
            }
        }
    }
    let shape = batch.into_iter().chain([m, n]).collect();
    (out, shape)
}

#[track_caller]
fn assert_values(actual: &Tensor, expected: &[f64], shape: &[usize], tolerance: f64, what: &str) {
    assert_eq!(actual.shape(), shape, "{what}: shape");
    let values = actual.to_vec_f64();
    assert!(values.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let err = relative_error(&values, expected);
    assert!(err < tolerance, "{what}: relative error {err:.3e} >= {tolerance:.1e}");
}

/// Checks `a · b` (contiguous) on `dev` against the naive product and, when small, gradchecks both.
fn check(dev: TestDevice, sa: &[usize], sb: &[usize], seed: u64) {
    let a = random(sa, -1.0, 1.0, seed);
    let b = random(sb, -1.0, 1.0, seed + 1);
    let (expected, shape) = naive_matmul(&a.to_vec_f64(), sa, &b.to_vec_f64(), sb);
    let what = format!("{sa:?} x {sb:?}");
    assert_values(&dev.put(&a).matmul(&dev.put(&b)).unwrap(), &expected, &shape, dev.tolerance(1e-12), &what);
    assert!(a.numel() + b.numel() <= 200, "test bug: gradcheck input too big");
    dev.assert_gradcheck(&what, |t| t[0].matmul(&t[1]), &[a, b]);
}

per_device! {
fn matmul_2d_matches_naive_product_on_sizes_1_and_odd_and_gradient_checks(dev) {
    let shapes: [(&[usize], &[usize]); 7] =
        [(&[1, 1], &[1, 1]), (&[1, 7], &[7, 1]), (&[7, 1], &[1, 5]), (&[1, 9], &[9, 7]), (&[5, 7], &[7, 4]), (&[3, 17], &[17, 5]), (&[13, 3], &[3, 1])];
    for (i, (sa, sb)) in shapes.into_iter().enumerate() {
        check(dev, sa, sb, 10 * i as u64);
    }
}

fn matmul_batched_matches_naive_product_and_gradient_checks(dev) {
    check(dev, &[3, 5, 7], &[3, 7, 4], 100);
    check(dev, &[2, 2, 3, 5], &[2, 2, 5, 3], 102);
    check(dev, &[1, 1, 7], &[1, 7, 1], 104);
}

fn matmul_broadcasts_batch_axes_in_both_operands_and_gradient_checks(dev) {
    check(dev, &[2, 1, 5, 7], &[3, 7, 4], 200);
    check(dev, &[3, 7, 4], &[2, 1, 4, 5], 202);
    check(dev, &[5, 7], &[3, 7, 4], 204);
    check(dev, &[2, 3, 3, 7], &[7, 4], 206);
    check(dev, &[1, 5, 7], &[3, 7, 4], 208);
    check(dev, &[3, 1, 2, 5], &[1, 4, 5, 2], 210);
}

fn matmul_of_transposed_and_strided_operands_matches_naive_product_and_gradient_checks(dev) {
    // aᵀ and bᵀ: column-major operands
    let a = random(&[7, 5], -1.0, 1.0, 300); // aᵀ: [5,7]
    let b = random(&[4, 7], -1.0, 1.0, 301); // bᵀ: [7,4]
    let (at, bt) = (naive_permute(&a.to_vec_f64(), &[7, 5], &[1, 0]), naive_permute(&b.to_vec_f64(), &[4, 7], &[1, 0]));
    let (expected, shape) = naive_matmul(&at, &[5, 7], &bt, &[7, 4]);
    let (ad, bd) = (dev.put(&a), dev.put(&b));
    let out = ad.transpose(0, 1).unwrap().matmul(&bd.transpose(0, 1).unwrap()).unwrap();
    assert_values(&out, &expected, &shape, dev.tolerance(1e-12), "aᵀ bᵀ");
    dev.assert_gradcheck("aᵀ bᵀ", |t| t[0].transpose(0, 1)?.matmul(&t[1].transpose(0, 1)?), &[a.clone(), b.clone()]);
    let c = random(&[5, 7], -1.0, 1.0, 302);
    let (expected, shape) = naive_matmul(&c.to_vec_f64(), &[5, 7], &bt, &[7, 4]);
    assert_values(&dev.put(&c).matmul(&bd.transpose(0, 1).unwrap()).unwrap(), &expected, &shape, dev.tolerance(1e-12), "a bᵀ");
    dev.assert_gradcheck("a bᵀ", |t| t[0].matmul(&t[1].transpose(0, 1)?), &[c, b]);

    // permuted batch axis: [5,3,7] -> [3,5,7] (batch stride is not the matrix size)
    let a = random(&[5, 3, 7], -1.0, 1.0, 303);
    let b = random(&[3, 4, 7], -1.0, 1.0, 304); // -> transpose(-1,-2): [3,7,4]
    let av = naive_permute(&a.to_vec_f64(), &[5, 3, 7], &[1, 0, 2]);
    let bv = naive_permute(&b.to_vec_f64(), &[3, 4, 7], &[0, 2, 1]);
    let (expected, shape) = naive_matmul(&av, &[3, 5, 7], &bv, &[3, 7, 4]);
    let out = dev.put(&a).permute(&[1, 0, 2]).unwrap().matmul(&dev.put(&b).transpose(-1, -2).unwrap()).unwrap();
    assert_values(&out, &expected, &shape, dev.tolerance(1e-12), "permuted batch");
    dev.assert_gradcheck("permuted batch", |t| t[0].permute(&[1, 0, 2])?.matmul(&t[1].transpose(-1, -2)?), &[a, b]);

    // narrowed operands (row stride larger than the row) and an expanded one (row stride 0)
    let a = random(&[5, 11], -1.0, 1.0, 305); // narrow(1, 3, 7) -> [5,7]
    let b = random(&[1, 4], -1.0, 1.0, 306); // expand -> [7,4]: every row the same
    let av = {
        let v = a.to_vec_f64();
        (0..5).flat_map(|i| v[i * 11 + 3..i * 11 + 10].to_vec()).collect::<Vec<_>>()
    };
    let bv: Vec<f64> = (0..7).flat_map(|_| b.to_vec_f64()).collect();
    let (expected, shape) = naive_matmul(&av, &[5, 7], &bv, &[7, 4]);
    let out = dev.put(&a).narrow(1, 3, 7).unwrap().matmul(&dev.put(&b).expand(&[7, 4]).unwrap()).unwrap();
    assert_values(&out, &expected, &shape, dev.tolerance(1e-12), "narrowed x expanded");
    dev.assert_gradcheck("narrowed x expanded", |t| t[0].narrow(1, 3, 7)?.matmul(&t[1].expand(&[7, 4])?), &[a, b]);
}

/// Big odd sizes: the gemm's K blocks (> 256), row blocks (> 96), edge micro-tiles (n not a
/// multiple of the SIMD width), and the threaded path, in f64 and f32, contiguous and transposed.
fn matmul_large_odd_sizes_match_naive_f64_product_in_f64_and_f32_with_contiguous_and_transposed_operands(dev) {
    for (m, k, n) in [(97, 300, 65), (33, 7, 129), (33, 129, 7), (200, 70, 150), (1, 513, 33)] {
        let a = random(&[m, k], -1.0, 1.0, 400 + m as u64);
        let b = random(&[k, n], -1.0, 1.0, 500 + n as u64);
        for dtype in [DType::F64, DType::F32] {
            let tolerance = dev.tolerance(if dtype == DType::F64 { 1e-12 } else { 1e-5 });
            let (a, b) = (dev.put(&a.to_dtype(dtype).unwrap()), dev.put(&b.to_dtype(dtype).unwrap()));
            // the reference uses the (possibly f32-rounded) input values, in f64
            let (av, bv) = (a.to_vec_f64(), b.to_vec_f64());
            let (expected, shape) = naive_matmul(&av, &[m, k], &bv, &[k, n]);
            let out = a.matmul(&b).unwrap();
            assert_eq!(out.dtype(), dev.dtype(dtype));
            assert_values(&out, &expected, &shape, tolerance, &format!("{m}x{k}x{n} {dtype:?}"));
            // the same product through transposed (column-major) operands
            let at = a.transpose(0, 1).unwrap().contiguous().unwrap().transpose(0, 1).unwrap();
            let bt = b.transpose(0, 1).unwrap().contiguous().unwrap().transpose(0, 1).unwrap();
            assert!(!at.is_contiguous() || m == 1);
            let out = at.matmul(&bt).unwrap();
            assert_values(&out, &expected, &shape, tolerance, &format!("{m}x{k}x{n} {dtype:?} transposed operands"));
        }
    }
}

fn matmul_large_batched_broadcast_f32_matches_naive_f64_product(dev) {
    let a = dev.put(&random(&[2, 1, 33, 129], -1.0, 1.0, 600).to_dtype(DType::F32).unwrap());
    let b = dev.put(&random(&[3, 129, 7], -1.0, 1.0, 601).to_dtype(DType::F32).unwrap());
    let (expected, shape) = naive_matmul(&a.to_vec_f64(), &[2, 1, 33, 129], &b.to_vec_f64(), &[3, 129, 7]);
    assert_eq!(shape, vec![2, 3, 33, 7]);
    assert_values(&a.matmul(&b).unwrap(), &expected, &shape, dev.tolerance(1e-5), "[2,1,33,129] x [3,129,7] f32");
}

fn matmul_with_empty_inner_dimension_gives_zeros(dev) {
    let a = dev.put(&Tensor::zeros(&[3, 0], DType::F64));
    let b = dev.put(&Tensor::zeros(&[0, 4], DType::F64));
    let out = a.matmul(&b).unwrap();
    assert_eq!(out.shape(), &[3, 4]);
    assert_eq!(out.to_vec_f64(), vec![0.0; 12]);
}
}
