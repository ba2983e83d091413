//! Neural-network helpers: dropout (identity when off, reproducible seeded masks, inverted
//! scaling, drop rate), mse_loss, cross_entropy, index_select / embedding (repeated indices accumulate their
//! gradients), and upsample_nearest2d — forward values against naive f64 references written
//! here, f32 runs on larger odd sizes, and f64 finite-difference gradient checks for every input,
//! including strided inputs. Every test runs on each device of the build (`cpu::…`, `cuda::…`;
//! f32 kernels on a CUDA device).

#[macro_use]
mod common;

use ember::tensor::DType;
use ember::tensor::rng::Rng;
use ember::tensor::testing::{random, relative_error};

// ---- naive references ---------------------------------------------------------------------------------

fn naive_mse(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for i in 0..a.len() {
        s += (a[i] - b[i]) * (a[i] - b[i]);
    }
    s / a.len() as f64
}

/// `−(1/n) Σᵢ (xᵢ[yᵢ] − ln Σⱼ exp(xᵢⱼ))`, with the row maximum taken out for stability.
fn naive_cross_entropy(logits: &[f64], classes: usize, targets: &[usize]) -> f64 {
    let mut total = 0.0;
    for (i, &target) in targets.iter().enumerate() {
        let row = &logits[i * classes..(i + 1) * classes];
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += log_sum - row[target];
    }
    total / targets.len() as f64
}

/// `out[.., k, ..] = x[.., indices[k], ..]` along `axis` of row-major `x` of `shape`.
fn naive_index_select(x: &[f64], shape: &[usize], axis: usize, indices: &[usize]) -> Vec<f64> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for &i in indices {
            for r in 0..inner {
                out.push(x[(o * shape[axis] + i) * inner + r]);
            }
        }
    }
    out
}

/// `out[n, c, i, j] = x[n, c, i / s, j / s]`.
fn naive_upsample(x: &[f64], shape: [usize; 4], s: usize) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let mut out = vec![0.0; n * c * h * s * w * s];
    for a in 0..n {
        for b in 0..c {
            for i in 0..h * s {
                for j in 0..w * s {
                    out[((a * c + b) * h * s + i) * w * s + j] = x[((a * c + b) * h + i / s) * w + j / s];
                }
            }
        }
    }
    out
}

per_device! {
// ---- dropout ------------------------------------------------------------------------------------------

fn dropout_when_not_training_is_the_identity_sharing_storage(dev) {
    let x = dev.put(&random(&[7, 33], -1.0, 1.0, 1));
    for p in [0.0, 0.3, 0.9] {
        let mut rng = Rng::new(5);
        let y = x.dropout(p, false, &mut rng).unwrap();
        assert!(y.shares_storage_with(&x), "p {p}: evaluation-mode dropout should not copy");
        assert_eq!(y.shape(), x.shape());
        assert_eq!(y.to_vec_f64(), x.to_vec_f64());
        assert_eq!(rng, Rng::new(5), "evaluation-mode dropout should not consume random numbers");
    }
}

fn dropout_with_p_zero_is_the_identity_in_training(dev) {
    let x = dev.put(&random(&[5, 9], -1.0, 1.0, 2));
    let y = x.dropout(0.0, true, &mut Rng::new(3)).unwrap();
    assert_eq!(y.to_vec_f64(), x.to_vec_f64());
    assert!(y.shares_storage_with(&x));
}

fn dropout_zeroes_or_scales_each_element_by_one_over_keep_probability(dev) {
    let x = random(&[33, 65], 0.5, 1.5, 4); // never zero, so a zero output means dropped
    for dtype in [DType::F64, DType::F32] {
        for p in [0.1, 0.5, 0.75] {
            let xd = dev.put(&x.to_dtype(dtype).unwrap());
            let y = xd.dropout(p, true, &mut Rng::new(11)).unwrap();
            assert_eq!(y.dtype(), dev.dtype(dtype));
            assert_eq!(y.shape(), x.shape());
            let (xs, ys) = (xd.to_vec_f64(), y.to_vec_f64());
            // the reference is the input as the device holds it, so the dtype it runs in picks the
            // tolerance
            let tolerance = if dev.dtype(dtype) == DType::F64 { 1e-15 } else { 3e-7 }; // f32: two roundings (scale, product)
            let mut dropped = 0;
            for (a, b) in xs.iter().zip(&ys) {
                if *b == 0.0 {
                    dropped += 1;
                } else {
                    let expected = a / (1.0 - p);
                    assert!((b - expected).abs() <= tolerance * expected.abs(), "p {p}: kept {a} became {b}, want {expected}");
                }
            }
            assert!(dropped > 0 && dropped < xs.len(), "p {p}: {dropped} of {} dropped", xs.len());
        }
    }
}

fn dropout_mask_is_reproducible_from_the_seed_and_fresh_on_each_draw(dev) {
    let host = random(&[9, 31], 0.5, 1.5, 5);
    let x = dev.put(&host);
    let a = x.dropout(0.4, true, &mut Rng::new(42)).unwrap().to_vec_f64();
    let b = x.dropout(0.4, true, &mut Rng::new(42)).unwrap().to_vec_f64();
    assert_eq!(a, b, "same seed, same mask");
    let c = x.dropout(0.4, true, &mut Rng::new(43)).unwrap().to_vec_f64();
    assert_ne!(a, c, "another seed, another mask");
    // one stream, two draws: the rng advances, so the second mask differs from the first
    let mut rng = Rng::new(42);
    let first = x.dropout(0.4, true, &mut rng).unwrap().to_vec_f64();
    assert_ne!(rng, Rng::new(42), "the stream should advance");
    let second = x.dropout(0.4, true, &mut rng).unwrap().to_vec_f64();
    assert_eq!(first, a);
    assert_ne!(first, second);
    // the same mask whatever the dtype
    let in_f32 = dev.put(&host.to_dtype(DType::F32).unwrap()).dropout(0.4, true, &mut Rng::new(42)).unwrap().to_vec_f64();
    let zeros = |v: &[f64]| v.iter().map(|&e| e == 0.0).collect::<Vec<_>>();
    assert_eq!(zeros(&in_f32), zeros(&a));
}

fn dropout_drops_a_fraction_close_to_p_of_100k_elements(dev) {
    let x = dev.put(&random(&[100_000], 0.5, 1.5, 6));
    for (i, p) in [0.1, 0.3, 0.5, 0.9].into_iter().enumerate() {
        let y = x.dropout(p, true, &mut Rng::new(100 + i as u64)).unwrap().to_vec_f64();
        let fraction = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        // the binomial standard deviation is at most √(0.25/1e5) ≈ 0.0016
        assert!((fraction - p).abs() < 0.01, "p {p}: dropped fraction {fraction}");
        // inverted dropout keeps the mean
        let (mean_x, mean_y) = (x.to_vec_f64().iter().sum::<f64>() / 1e5, y.iter().sum::<f64>() / 1e5);
        assert!((mean_y - mean_x).abs() < 0.05 * mean_x, "p {p}: mean {mean_y} vs {mean_x}");
    }
}

fn dropout_rejects_probabilities_outside_zero_to_one(dev) {
    let x = dev.put(&random(&[4], -1.0, 1.0, 7));
    for p in [1.0, 1.5, -0.1, f64::NAN] {
        assert!(x.dropout(p, true, &mut Rng::new(1)).is_err(), "p {p} should be rejected");
    }
}

fn dropout_gradcheck_with_a_fixed_mask(dev) {
    // the closure builds a fresh Rng each time, so every evaluation draws the same mask
    let x = random(&[3, 7, 5], -1.0, 1.0, 8);
    dev.assert_gradcheck("dropout p 0.3", |t| t[0].dropout(0.3, true, &mut Rng::new(77)), std::slice::from_ref(&x));
    dev.assert_gradcheck("dropout p 0.7", |t| t[0].dropout(0.7, true, &mut Rng::new(78)), std::slice::from_ref(&x));
    dev.assert_gradcheck("dropout of a transpose", |t| t[0].transpose(0, 2)?.dropout(0.5, true, &mut Rng::new(79)), std::slice::from_ref(&x));
    dev.assert_gradcheck("dropout off", |t| t[0].dropout(0.5, false, &mut Rng::new(80)), &[x]);
}

fn dropout_gradient_is_the_mask(dev) {
    let x = dev.put(&random(&[4, 33], -1.0, 1.0, 9)).variable();
    let y = x.dropout(0.25, true, &mut Rng::new(12)).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let g = grads.get(&x).unwrap().to_vec_f64();
    for (gv, yv) in g.iter().zip(y.to_vec_f64()) {
        let want = if yv == 0.0 { 0.0 } else { 1.0 / 0.75 };
        assert!((gv - want).abs() < dev.tolerance(1e-15), "gradient {gv}, want {want}");
    }
}

// ---- mse_loss -------------------------------------------------------------------------------------------

fn mse_loss_matches_reference_in_f64_and_f32(dev) {
    for (shape, seed) in [(vec![1], 10), (vec![7], 11), (vec![3, 5, 7], 12), (vec![33, 65], 13), (vec![2, 3, 17, 19], 14)] {
        let (a, b) = (random(&shape, -2.0, 2.0, seed), random(&shape, -2.0, 2.0, seed + 100));
        let expected = naive_mse(&a.to_vec_f64(), &b.to_vec_f64());
        let loss = dev.put(&a).mse_loss(&dev.put(&b)).unwrap();
        assert_eq!(loss.numel(), 1);
        assert!(loss.shape().is_empty(), "mse_loss should be a scalar, got {:?}", loss.shape());
        assert!((loss.item().unwrap() - expected).abs() < dev.tolerance(1e-14) * expected, "{shape:?}");
        let loss32 = dev.put(&a.to_dtype(DType::F32).unwrap()).mse_loss(&dev.put(&b.to_dtype(DType::F32).unwrap())).unwrap();
        assert_eq!(loss32.dtype(), DType::F32);
        assert!((loss32.item().unwrap() - expected).abs() < dev.tolerance(1e-5) * expected, "{shape:?} f32");
    }
}

fn mse_loss_of_equal_tensors_is_zero_and_rejects_shape_mismatch(dev) {
    let a = dev.put(&random(&[4, 5], -1.0, 1.0, 15));
    assert_eq!(a.mse_loss(&a).unwrap().item().unwrap(), 0.0);
    assert!(a.mse_loss(&dev.put(&random(&[5, 4], -1.0, 1.0, 16))).is_err());
    assert!(a.mse_loss(&dev.put(&random(&[1, 5], -1.0, 1.0, 16))).is_err(), "mse_loss must not broadcast");
}

fn mse_loss_of_strided_views_matches_reference(dev) {
    let a = dev.put(&random(&[5, 7], -2.0, 2.0, 17)).transpose(0, 1).unwrap();
    let b = dev.put(&random(&[7, 9], -2.0, 2.0, 18)).narrow(1, 2, 5).unwrap();
    let expected = naive_mse(&a.to_vec_f64(), &b.to_vec_f64());
    assert!((a.mse_loss(&b).unwrap().item().unwrap() - expected).abs() < dev.tolerance(1e-14) * expected);
}

fn mse_loss_gradcheck_prediction_and_target(dev) {
    let a = random(&[3, 7], -2.0, 2.0, 19);
    let b = random(&[3, 7], -2.0, 2.0, 20);
    dev.assert_gradcheck("mse_loss", |t| t[0].mse_loss(&t[1]), &[a.clone(), b.clone()]);
    dev.assert_gradcheck("mse_loss strided", |t| t[0].transpose(0, 1)?.mse_loss(&t[1].transpose(0, 1)?), &[a, b.clone()]);
    let c = random(&[1], -2.0, 2.0, 21);
    let d = random(&[1], -2.0, 2.0, 22);
    dev.assert_gradcheck("mse_loss one element", |t| t[0].mse_loss(&t[1]), &[c, d]);
}

// ---- cross_entropy -----------------------------------------------------------------------------------

fn cross_entropy_matches_reference_in_f64_and_f32(dev) {
    for (n, classes, seed) in [(1, 1, 23), (1, 10, 24), (7, 3, 25), (33, 10, 26)] {
        // large logits too: a naive exp would overflow in f32 at ±90
        let logits = random(&[n, classes], -90.0, 90.0, seed);
        let targets: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % classes).collect();
        let values = logits.to_vec_f64();
        let expected = naive_cross_entropy(&values, classes, &targets);
        let loss = dev.put(&logits).cross_entropy(&targets).unwrap();
        assert!(loss.shape().is_empty(), "a scalar, got {:?}", loss.shape());
        assert!((loss.item().unwrap() - expected).abs() <= dev.tolerance(1e-12) * expected.abs().max(1.0), "{n}x{classes}");
        let loss32 = dev.put(&logits.to_dtype(DType::F32).unwrap()).cross_entropy(&targets).unwrap();
        assert!((loss32.item().unwrap() - expected).abs() <= 1e-4 * expected.abs().max(1.0), "{n}x{classes} f32: {} vs {expected}", loss32.item().unwrap());
    }
}

fn cross_entropy_rejects_bad_targets_and_shapes(dev) {
    let logits = dev.put(&random(&[3, 4], -1.0, 1.0, 27));
    assert!(logits.cross_entropy(&[0, 1]).is_err(), "fewer targets than rows");
    let error = logits.cross_entropy(&[0, 4, 1]).unwrap_err().to_string();
    assert!(error.contains("target 1 is class 4") && error.contains("4 classes"), "{error}");
    assert!(dev.put(&random(&[12], -1.0, 1.0, 28)).cross_entropy(&[0; 12]).is_err(), "rank 1 logits");
}

fn cross_entropy_gradcheck(dev) {
    let logits = random(&[5, 4], -3.0, 3.0, 29);
    dev.assert_gradcheck("cross_entropy", |t| t[0].cross_entropy(&[3, 0, 0, 2, 1]), std::slice::from_ref(&logits));
    dev.assert_gradcheck("cross_entropy of a transposed view", |t| t[0].transpose(0, 1)?.cross_entropy(&[1, 0, 3, 2]), &[random(&[4, 4], -3.0, 3.0, 31)]);
    // the gradient is (softmax − one_hot)/n
    let x = dev.put(&logits).variable();
    let grads = x.cross_entropy(&[3, 0, 0, 2, 1]).unwrap().backward().unwrap();
    let g = grads.get(&x).unwrap().to_vec_f64();
    let values = logits.to_vec_f64();
    for (i, target) in [3, 0, 0, 2, 1].into_iter().enumerate() {
        let row = &values[i * 4..i * 4 + 4];
        let total: f64 = row.iter().map(|v| v.exp()).sum();
        for j in 0..4 {
            let want = (row[j].exp() / total - if j == target { 1.0 } else { 0.0 }) / 5.0;
            assert!((g[i * 4 + j] - want).abs() < dev.tolerance(1e-12), "row {i} class {j}: {} vs {want}", g[i * 4 + j]);
        }
    }
}

// ---- index_select / embedding -------------------------------------------------------------------------

fn index_select_matches_reference_along_axes_0_1_and_last_with_repeats(dev) {
    let x = random(&[5, 7, 3], -1.0, 1.0, 30);
    let cases: [(isize, usize, Vec<usize>); 5] =
        [(0, 0, vec![4, 0, 4, 2, 4]), (1, 1, vec![6, 6, 0, 3, 1, 0, 5]), (-1, 2, vec![2, 0, 2, 2]), (2, 2, vec![1]), (-3, 0, vec![0, 1, 2, 3, 4, 3, 2, 1, 0])];
    for dtype in [DType::F64, DType::F32] {
        let xd = dev.put(&x.to_dtype(dtype).unwrap());
        for (axis, axis_index, indices) in &cases {
            let y = xd.index_select(*axis, indices).unwrap();
            let mut shape = x.shape().to_vec();
            shape[*axis_index] = indices.len();
            assert_eq!(y.shape(), shape, "axis {axis}");
            assert_eq!(y.dtype(), dev.dtype(dtype));
            assert_eq!(y.to_vec_f64(), naive_index_select(&xd.to_vec_f64(), x.shape(), *axis_index, indices), "axis {axis} {indices:?}");
        }
    }
}

fn index_select_of_a_strided_view_matches_reference(dev) {
    let x = dev.put(&random(&[4, 6, 5], -1.0, 1.0, 31)).permute(&[2, 0, 1]).unwrap(); // [5, 4, 6]
    let indices = [3, 3, 0, 5, 1];
    let y = x.index_select(-1, &indices).unwrap();
    assert_eq!(y.to_vec_f64(), naive_index_select(&x.to_vec_f64(), x.shape(), 2, &indices));
    let y = x.index_select(1, &[2, 2]).unwrap();
    assert_eq!(y.to_vec_f64(), naive_index_select(&x.to_vec_f64(), x.shape(), 1, &[2, 2]));
}

fn index_select_rejects_out_of_range_indices_and_axes(dev) {
    let x = dev.put(&random(&[3, 4], -1.0, 1.0, 32));
    assert!(x.index_select(0, &[0, 3]).is_err());
    assert!(x.index_select(1, &[4]).is_err());
    assert!(x.index_select(2, &[0]).is_err());
    assert!(x.index_select(-3, &[0]).is_err());
}

fn index_select_gradient_accumulates_over_repeated_indices(dev) {
    let x = dev.put(&random(&[4, 3], -1.0, 1.0, 33)).variable();
    let indices = [2, 0, 2, 2, 3];
    let y = x.index_select(0, &indices).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let g = grads.get(&x).unwrap().to_vec_f64();
    // row i's gradient is the number of times it was selected; row 1 was never selected
    let counts = [1.0, 0.0, 3.0, 1.0];
    for (row, &count) in counts.iter().enumerate() {
        for col in 0..3 {
            assert_eq!(g[row * 3 + col], count, "row {row}");
        }
    }
}

fn index_select_gradcheck_along_axes_0_1_and_last_with_repeats(dev) {
    let x = random(&[4, 5, 3], -1.0, 1.0, 34);
    dev.assert_gradcheck("index_select axis 0", |t| t[0].index_select(0, &[3, 1, 3, 3, 0]), std::slice::from_ref(&x));
    dev.assert_gradcheck("index_select axis 1", |t| t[0].index_select(1, &[4, 4, 0, 2, 0, 4, 1]), std::slice::from_ref(&x));
    dev.assert_gradcheck("index_select axis -1", |t| t[0].index_select(-1, &[2, 2, 0]), std::slice::from_ref(&x));
    dev.assert_gradcheck("index_select of a permute", |t| t[0].permute(&[2, 0, 1])?.index_select(1, &[1, 1, 3]), std::slice::from_ref(&x));
    // the non-contiguous output of a downstream transpose feeds the backward
    dev.assert_gradcheck("index_select then transpose", |t| t[0].index_select(1, &[0, 0, 3])?.transpose(0, 2), &[x]);
}

fn embedding_looks_up_rows_with_repeats_and_gradchecks(dev) {
    let table = random(&[7, 5], -1.0, 1.0, 35);
    let ids = [6, 0, 3, 3, 6, 1, 6];
    let y = dev.put(&table).embedding(&ids).unwrap();
    assert_eq!(y.shape(), [7, 5]);
    assert_eq!(y.to_vec_f64(), naive_index_select(&dev.put(&table).to_vec_f64(), table.shape(), 0, &ids));
    let y32 = dev.put(&table.to_dtype(DType::F32).unwrap()).embedding(&ids).unwrap();
    assert_eq!(y32.to_vec_f64(), naive_index_select(&table.to_dtype(DType::F32).unwrap().to_vec_f64(), table.shape(), 0, &ids));
    dev.assert_gradcheck("embedding", |t| t[0].embedding(&ids), std::slice::from_ref(&table));
    dev.assert_gradcheck("embedding single id", |t| t[0].embedding(&[4]), std::slice::from_ref(&table));
    assert!(dev.put(&table).embedding(&[7]).is_err(), "id past the vocabulary");
    assert!(dev.put(&random(&[2, 3, 4], -1.0, 1.0, 36)).embedding(&[0]).is_err(), "the table must be rank 2");
}

// ---- upsample_nearest2d -------------------------------------------------------------------------------

fn upsample_nearest2d_matches_reference_for_scales_1_2_3(dev) {
    let x = random(&[2, 3, 5, 7], -1.0, 1.0, 40);
    for dtype in [DType::F64, DType::F32] {
        let xd = dev.put(&x.to_dtype(dtype).unwrap());
        for s in [1, 2, 3] {
            let y = xd.upsample_nearest2d(s).unwrap();
            assert_eq!(y.shape(), [2, 3, 5 * s, 7 * s]);
            assert_eq!(y.dtype(), dev.dtype(dtype));
            assert_eq!(y.to_vec_f64(), naive_upsample(&xd.to_vec_f64(), [2, 3, 5, 7], s), "scale {s}");
        }
    }
    let x = dev.put(&random(&[1, 1, 1, 1], -1.0, 1.0, 41));
    assert_eq!(x.upsample_nearest2d(3).unwrap().to_vec_f64(), vec![x.item().unwrap(); 9]);
    assert!(x.upsample_nearest2d(0).is_err());
    assert!(dev.put(&random(&[3, 4, 5], -1.0, 1.0, 42)).upsample_nearest2d(2).is_err(), "needs rank 4");
}

fn upsample_nearest2d_of_a_strided_view_matches_reference(dev) {
    let x = dev.put(&random(&[2, 5, 3, 4], -1.0, 1.0, 43)).permute(&[0, 2, 1, 3]).unwrap(); // [2, 3, 5, 4]
    assert!(!x.is_contiguous());
    let y = x.upsample_nearest2d(2).unwrap();
    assert_eq!(y.to_vec_f64(), naive_upsample(&x.to_vec_f64(), [2, 3, 5, 4], 2));
    let narrowed = dev.put(&random(&[1, 3, 7, 9], -1.0, 1.0, 44)).narrow(3, 1, 7).unwrap();
    let y = narrowed.upsample_nearest2d(3).unwrap();
    assert_eq!(y.to_vec_f64(), naive_upsample(&narrowed.to_vec_f64(), [1, 3, 7, 7], 3));
}

fn upsample_nearest2d_gradcheck_scales_2_and_3(dev) {
    let x = random(&[2, 3, 3, 5], -1.0, 1.0, 45);
    dev.assert_gradcheck("upsample ×2", |t| t[0].upsample_nearest2d(2), std::slice::from_ref(&x));
    dev.assert_gradcheck("upsample ×3", |t| t[0].upsample_nearest2d(3), std::slice::from_ref(&x));
    dev.assert_gradcheck("upsample ×2 of a permute", |t| t[0].permute(&[0, 2, 1, 3])?.upsample_nearest2d(2), std::slice::from_ref(&x));
    dev.assert_gradcheck("upsample ×3 of a narrow", |t| t[0].narrow(3, 1, 3)?.upsample_nearest2d(3), &[x]);
}

fn upsample_nearest2d_gradient_sums_each_block(dev) {
    let x = dev.put(&random(&[1, 2, 3, 4], -1.0, 1.0, 46)).variable();
    let y = x.upsample_nearest2d(3).unwrap();
    let r = random(y.shape(), -1.0, 1.0, 47);
    let grads = y.mul(&dev.put(&r)).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(&x).unwrap().to_vec_f64();
    let rv = r.to_vec_f64();
    for c in 0..2 {
        for i in 0..3 {
            for j in 0..4 {
                let mut want = 0.0;
                for di in 0..3 {
                    for dj in 0..3 {
                        want += rv[(c * 9 + 3 * i + di) * 12 + 3 * j + dj];
                    }
                }
                let got = g[(c * 3 + i) * 4 + j];
                assert!((got - want).abs() < dev.tolerance(1e-14), "block ({c},{i},{j}): {got} vs {want}");
            }
        }
    }
}

fn upsample_nearest2d_f32_on_a_larger_odd_shape_matches_reference(dev) {
    let x = dev.put(&random(&[3, 33, 17, 19], -1.0, 1.0, 48).to_dtype(DType::F32).unwrap());
    let y = x.upsample_nearest2d(2).unwrap();
    assert_eq!(y.shape(), [3, 33, 34, 38]);
    let err = relative_error(&y.to_vec_f64(), &naive_upsample(&x.to_vec_f64(), [3, 33, 17, 19], 2));
    assert_eq!(err, 0.0);
}
}
