//! The autograd engine's contract: gradients of reused tensors add up, Gradients accumulate and
//! scale, no_grad records nothing (per thread, restored afterwards), detach cuts the graph,
//! only reached variables get gradients, deep graphs neither overflow nor leak, global-norm
//! clipping matches its formula, and gradients flow across f32 <-> f64 conversions.

use std::sync::Mutex;

use ember::tensor::testing::{assert_gradcheck, random, relative_error};
use ember::tensor::{DType, Gradients, Tensor, TensorError, is_grad_enabled, no_grad};

/// Serialises the tests that allocate a lot, so that the memory-flatness test measures only
/// itself (tests in one binary run on parallel threads).
static MEMORY_HEAVY: Mutex<()> = Mutex::new(());

#[track_caller]
fn assert_values(actual: &Tensor, expected: &[f64], tolerance: f64, what: &str) {
    let values = actual.to_vec_f64();
    assert_eq!(values.len(), expected.len(), "{what}: length");
    let err = relative_error(&values, expected);
    assert!(err < tolerance, "{what}: relative error {err:.3e}\n got {values:?}\nwant {expected:?}");
}

#[test]
fn gradient_of_a_tensor_used_twice_is_the_sum_of_both_uses() {
    // y = x*x + x  =>  dy/dx = 2x + 1
    let x = random(&[7, 3], -2.0, 2.0, 1).variable();
    let y = x.mul(&x).unwrap().add(&x).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let expected: Vec<f64> = x.to_vec_f64().iter().map(|v| 2.0 * v + 1.0).collect();
    assert_values(grads.get(&x).unwrap(), &expected, 1e-15, "d(x*x + x)/dx");
    // three uses through different paths: y = exp(x) + sin(x)*x  =>  exp(x) + cos(x)*x + sin(x)
    let y = x.exp().unwrap().add(&x.sin().unwrap().mul(&x).unwrap()).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let expected: Vec<f64> = x.to_vec_f64().iter().map(|v| v.exp() + v.cos() * v + v.sin()).collect();
    assert_values(grads.get(&x).unwrap(), &expected, 1e-14, "d(exp x + x sin x)/dx");
    // a diamond through views: (xᵀ)ᵀ + x reshaped and back
    assert_gradcheck("diamond", |t| t[0].transpose(0, 1)?.transpose(0, 1)?.add(&t[0].reshape(&[21])?.reshape(&[7, 3])?), &[x.detach()]);
}

#[test]
fn backward_frees_the_graph_and_retaining_it_allows_a_second_pass_with_the_same_result() {
    let x = random(&[5], -2.0, 2.0, 2).variable();
    let loss = x.sqr().unwrap().mul_scalar(1.5).unwrap().sum_all().unwrap();
    let one = loss.ones_like().unwrap();
    let first = loss.backward_retaining_graph(&one).unwrap().get(&x).unwrap().to_vec_f64();
    let second = loss.backward().unwrap().get(&x).unwrap().to_vec_f64();
    assert_eq!(first, second);
    // the plain pass freed the graph: a third pass is a clear error, not a wrong gradient
    let err = loss.backward().unwrap_err();
    assert!(matches!(&err, TensorError::Autograd { msg } if msg.contains("freed by an earlier backward pass")), "{err}");
    let expected: Vec<f64> = x.to_vec_f64().iter().map(|v| 3.0 * v).collect();
    assert_values(&Tensor::from_f64(&first, &[5], DType::F64).unwrap(), &expected, 1e-15, "d(1.5 x²)/dx");
}

#[test]
fn backward_with_an_upstream_gradient_scales_the_result() {
    let x = random(&[2, 3], -2.0, 2.0, 3).variable();
    let y = x.mul_scalar(2.0).unwrap();
    let upstream = random(&[2, 3], -1.0, 1.0, 4);
    let grads = y.backward_with(&upstream).unwrap();
    let expected: Vec<f64> = upstream.to_vec_f64().iter().map(|g| 2.0 * g).collect();
    assert_values(grads.get(&x).unwrap(), &expected, 1e-15, "backward_with");
}

#[test]
fn accumulating_two_backward_passes_equals_twice_one_pass_and_scale_averages_back() {
    let x = random(&[4, 3], -2.0, 2.0, 5).variable();
    let w = random(&[3], -1.0, 1.0, 6).variable();
    let loss = x.mul(&w).unwrap().sin().unwrap().sum_all().unwrap();
    let one = loss.ones_like().unwrap();
    let once = loss.backward_retaining_graph(&one).unwrap();
    let mut total = loss.backward_retaining_graph(&one).unwrap();
    total.accumulate(loss.backward().unwrap()).unwrap();
    assert_eq!(total.len(), 2);
    for v in [&x, &w] {
        let doubled: Vec<f64> = once.get(v).unwrap().to_vec_f64().iter().map(|g| 2.0 * g).collect();
        assert_values(total.get(v).unwrap(), &doubled, 1e-15, "accumulated");
    }
    total.scale(0.5).unwrap();
    for v in [&x, &w] {
        assert_values(total.get(v).unwrap(), &once.get(v).unwrap().to_vec_f64(), 1e-15, "scaled back");
    }
    // accumulating disjoint passes keeps both keys
    let mut only_x = x.sum_all().unwrap().backward().unwrap();
    let only_w = w.sum_all().unwrap().backward().unwrap();
    assert!(only_x.get(&w).is_none());
    only_x.accumulate(only_w).unwrap();
    assert_eq!(only_x.len(), 2);
    assert_values(only_x.get(&w).unwrap(), &[1.0; 3], 1e-15, "accumulated new key");
    // accumulated gradients are plain values: no graph recorded
    assert!(!total.get(&x).unwrap().requires_grad());
}

#[test]
fn gradients_map_insert_get_remove_and_len_are_keyed_by_variable() {
    let (a, b) = (random(&[2], 0.5, 1.0, 7).variable(), random(&[2], 0.5, 1.0, 8).variable());
    let mut grads = Gradients::default();
    assert!(grads.is_empty());
    grads.insert(&a, Tensor::ones(&[2], DType::F64));
    assert_eq!(grads.len(), 1);
    assert!(grads.get(&b).is_none());
    // a clone is the same tensor (same id); a detached copy is a different tensor
    assert!(grads.get(&a.clone()).is_some());
    assert!(grads.get(&a.detach()).is_none());
    assert_eq!(grads.remove(&a).unwrap().to_vec_f64(), vec![1.0, 1.0]);
    assert!(grads.is_empty());
}

#[test]
fn no_grad_records_nothing_nests_is_per_thread_and_restores_grad_mode() {
    let x = random(&[3], -1.0, 1.0, 9).variable();
    assert!(is_grad_enabled());
    {
        let _outer = no_grad();
        assert!(!is_grad_enabled());
        let y = x.exp().unwrap().mul(&x).unwrap().sum_all().unwrap();
        assert!(!y.requires_grad(), "no graph is recorded under no_grad");
        assert!(matches!(y.backward(), Err(TensorError::Autograd { .. })));
        // values are still computed
        let expected: f64 = x.to_vec_f64().iter().map(|v| v.exp() * v).sum();
        assert_values(&y, &[expected], 1e-15, "value under no_grad");
        {
            let _inner = no_grad();
            assert!(!is_grad_enabled());
        }
        assert!(!is_grad_enabled(), "dropping an inner guard keeps the outer one in force");
        // grad mode is per thread
        let other_thread = std::thread::spawn(is_grad_enabled).join().unwrap();
        assert!(other_thread, "another thread still records");
    }
    assert!(is_grad_enabled(), "grad mode comes back when the guard drops");
    let y = x.exp().unwrap();
    assert!(y.requires_grad());
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_values(grads.get(&x).unwrap(), &x.exp().unwrap().to_vec_f64(), 1e-15, "after no_grad");
}

#[test]
fn detach_shares_storage_and_stops_gradients() {
    let x = random(&[6], -2.0, 2.0, 10).variable();
    let d = x.detach();
    assert!(d.shares_storage_with(&x));
    assert!(!d.requires_grad() && !d.is_variable());
    assert_ne!(d.id(), x.id());
    // y = detach(x) * x  =>  dy/dx = x (only the attached factor), not 2x
    let grads = d.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_values(grads.get(&x).unwrap(), &x.to_vec_f64(), 1e-15, "d(detach(x) x)/dx");
    // a whole branch through detach gets nothing: y = exp(x).detach() + x
    let grads = x.exp().unwrap().detach().add(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_values(grads.get(&x).unwrap(), &[1.0; 6], 1e-15, "detached branch");
}

#[test]
fn only_variables_reached_by_the_backward_pass_get_gradients() {
    let a = random(&[3], -1.0, 1.0, 11).variable();
    let b = random(&[3], -1.0, 1.0, 12).variable();
    let constant = random(&[3], -1.0, 1.0, 13);
    assert!(a.is_variable() && a.requires_grad() && !constant.requires_grad());
    // b takes part in a different computation, not in the loss
    let _unrelated = b.exp().unwrap();
    let hidden = a.mul(&constant).unwrap();
    assert!(hidden.requires_grad() && !hidden.is_variable());
    let grads = hidden.tanh().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.len(), 1, "only the one variable reached");
    assert!(grads.get(&b).is_none());
    assert!(grads.get(&constant).is_none());
    assert!(grads.get(&hidden).is_none(), "intermediate results are not reported");
    let expected: Vec<f64> = a.to_vec_f64().iter().zip(constant.to_vec_f64()).map(|(x, c)| c * (1.0 - (x * c).tanh().powi(2))).collect();
    assert_values(grads.get(&a).unwrap(), &expected, 1e-14, "d tanh(a c)/da");
    // an op on constants only records nothing
    assert!(!constant.exp().unwrap().requires_grad());
}

#[test]
fn to_dtype_passes_gradients_between_f32_and_f64_in_the_source_dtype() {
    // f64 variable through f32 compute
    let x = random(&[5], -1.0, 1.0, 14).variable();
    let y = x.to_dtype(DType::F32).unwrap();
    assert!(y.requires_grad() && y.dtype() == DType::F32);
    let grads = y.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(&x).unwrap();
    assert_eq!(g.dtype(), DType::F64);
    assert_values(g, &[3.0; 5], 1e-15, "f64 -> f32 -> 3y");
    // f32 variable through f64 compute: d(sum z²)/dz = 2z
    let z = random(&[4], -1.0, 1.0, 15).to_dtype(DType::F32).unwrap().variable();
    let grads = z.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(&z).unwrap();
    assert_eq!(g.dtype(), DType::F32);
    let expected: Vec<f64> = z.to_vec_f64().iter().map(|v| 2.0 * v).collect();
    assert_values(g, &expected, 1e-7, "f32 -> f64 -> z²");
    // converting to the same dtype is the identity (and keeps the graph)
    assert_gradcheck("to_dtype(F64) of f64", |t| t[0].to_dtype(DType::F64)?.sin(), &[random(&[3], -1.0, 1.0, 16)]);
}

#[test]
fn global_norm_and_clip_global_norm_match_the_reference_formula() {
    // loss = Σ a·wa + Σ b·wb  =>  grads are wa and wb exactly
    let a = random(&[3, 2], -1.0, 1.0, 17).variable();
    let b = random(&[5], -1.0, 1.0, 18).variable();
    let (wa, wb) = (random(&[3, 2], -2.0, 2.0, 19), random(&[5], -2.0, 2.0, 20));
    let loss = a.mul(&wa).unwrap().sum_all().unwrap().add(&b.mul(&wb).unwrap().sum_all().unwrap()).unwrap();
    let (wav, wbv) = (wa.to_vec_f64(), wb.to_vec_f64());
    let norm: f64 = wav.iter().chain(&wbv).map(|v| v * v).sum::<f64>().sqrt();

    let grads = loss.backward().unwrap();
    assert!((grads.global_norm().unwrap() - norm).abs() < 1e-14 * norm);

    // clipping above the norm changes nothing and returns the norm
    let mut unclipped = grads.clone();
    let returned = unclipped.clip_global_norm(2.0 * norm).unwrap();
    assert!((returned - norm).abs() < 1e-14 * norm);
    assert_values(unclipped.get(&a).unwrap(), &wav, 1e-15, "unclipped a");
    assert_values(unclipped.get(&b).unwrap(), &wbv, 1e-15, "unclipped b");

    // clipping below the norm scales every gradient by max / (norm + 1e-6)
    let mut clipped = grads.clone();
    let max_norm = 0.25 * norm;
    let returned = clipped.clip_global_norm(max_norm).unwrap();
    assert!((returned - norm).abs() < 1e-14 * norm, "returns the norm before clipping");
    let factor = max_norm / (norm + 1e-6);
    assert_values(clipped.get(&a).unwrap(), &wav.iter().map(|v| v * factor).collect::<Vec<_>>(), 1e-14, "clipped a");
    assert_values(clipped.get(&b).unwrap(), &wbv.iter().map(|v| v * factor).collect::<Vec<_>>(), 1e-14, "clipped b");
    assert!((clipped.global_norm().unwrap() - max_norm).abs() < 1e-6 * max_norm);
    // the original is untouched (clone is a deep enough copy of the map)
    assert_values(grads.get(&a).unwrap(), &wav, 1e-15, "original a");
    assert_eq!(Gradients::default().global_norm().unwrap(), 0.0);
}

#[test]
fn a_graph_a_hundred_thousand_ops_deep_runs_backward_and_drops_without_overflowing_the_stack() {
    let _lock = MEMORY_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let x = random(&[2], -1.0, 1.0, 21).variable();
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = y.add_scalar(1e-3).unwrap();
    }
    let expected: Vec<f64> = x.to_vec_f64().iter().map(|v| v + 100.0).collect();
    assert_values(&y, &expected, 1e-9, "deep chain value (100k roundings)");
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_values(grads.get(&x).unwrap(), &[1.0, 1.0], 1e-15, "deep chain gradient");
    drop(y);
}

/// Resident set size in bytes, from /proc/self/status.
#[cfg(target_os = "linux")]
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn graphs_are_freed_when_outputs_drop_so_memory_stays_flat_over_200_training_steps() {
    let _lock = MEMORY_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let x = random(&[64, 256], -1.0, 1.0, 22).to_dtype(DType::F32).unwrap();
    let w1 = random(&[256, 256], -0.06, 0.06, 23).to_dtype(DType::F32).unwrap().variable();
    let b1 = random(&[256], -0.1, 0.1, 24).to_dtype(DType::F32).unwrap().variable();
    let w2 = random(&[256, 256], -0.06, 0.06, 25).to_dtype(DType::F32).unwrap().variable();
    let step = || {
        let hidden = x.matmul(&w1).unwrap().add(&b1).unwrap().silu().unwrap();
        let loss = hidden.matmul(&w2).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(grads.len(), 3);
        grads.global_norm().unwrap()
    };
    for _ in 0..30 {
        step(); // warm up the allocator and the thread pool
    }
    let before = resident_bytes();
    let mut norms = 0.0;
    for _ in 0..200 {
        norms += step();
    }
    let after = resident_bytes();
    assert!(norms.is_finite() && norms > 0.0);
    let growth = after.saturating_sub(before);
    // one step's graph holds ~0.3 MB of saved activations; 200 leaked graphs measured ~60 MB
    assert!(growth < 20 << 20, "resident memory grew by {} MB over 200 steps", growth >> 20);
}
