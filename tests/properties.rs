//! Property tests (proptest) over random shapes: the broadcasting rule, broadcast arithmetic,
//! views (permute/inverse, narrow, reshape round trips) and reductions over random axis sets,
//! each against naive index loops written here.

use ember::tensor::layout::broadcast_shapes;
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{Tensor, TensorError};
use proptest::prelude::*;

mod common;
use common::*;

// ---- naive helpers ---------------------------------------------------------------------------

/// The broadcast rule per axis (right-aligned; equal, or one of them 1), or None.
fn rule(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    Some(out)
}

fn broadcast_source(out_index: &[usize], shape: &[usize]) -> usize {
    let lead = out_index.len() - shape.len();
    let index: Vec<usize> = shape.iter().enumerate().map(|(i, &n)| if n == 1 { 0 } else { out_index[lead + i] }).collect();
    ravel(&index, shape)
}

fn close(actual: &[f64], expected: &[f64], tolerance: f64) -> bool {
    actual.len() == expected.len() && relative_error(actual, expected) < tolerance
}

// ---- strategies ------------------------------------------------------------------------------

/// Shapes of rank 0..=4 with sizes 1..=5.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=5, 0..=4)
}

/// Two shapes that broadcast: a common shape, each side a suffix of it with some sizes set to 1.
fn broadcastable_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape().prop_flat_map(|out| {
        let rank = out.len();
        let side = move || {
            let out = out.clone();
            (0..=rank, prop::collection::vec(any::<bool>(), rank))
                .prop_map(move |(keep, ones)| (rank - keep..rank).map(|i| if ones[i] { 1 } else { out[i] }).collect::<Vec<usize>>())
        };
        (side(), side())
    })
}

/// A shape and a permutation of its axes.
fn shape_and_permutation() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape().prop_flat_map(|s| {
        let axes: Vec<usize> = (0..s.len()).collect();
        (Just(s), Just(axes).prop_shuffle())
    })
}

/// A shape of rank >= 1 and a valid narrow (axis, start, len) of it.
fn shape_and_narrow() -> impl Strategy<Value = (Vec<usize>, usize, usize, usize)> {
    prop::collection::vec(1usize..=6, 1..=4)
        .prop_flat_map(|s| {
            let rank = s.len();
            (Just(s), 0..rank)
        })
        .prop_flat_map(|(s, axis)| {
            let n = s[axis];
            (Just(s), Just(axis), 0..=n)
        })
        .prop_flat_map(|(s, axis, start)| {
            let n = s[axis];
            (Just(s), Just(axis), Just(start), 0..=n - start)
        })
}

/// A shape and a subset of its axes, written as non-negative or negative indices.
fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<isize>)> {
    prop::collection::vec(1usize..=5, 1..=4).prop_flat_map(|s| {
        let rank = s.len();
        (Just(s), prop::collection::vec((any::<bool>(), any::<bool>()), rank)).prop_map(move |(s, picks)| {
            let axes = picks
                .iter()
                .enumerate()
                .filter(|(_, (pick, _))| *pick)
                .map(|(i, (_, negative))| if *negative { i as isize - rank as isize } else { i as isize })
                .collect();
            (s, axes)
        })
    })
}

proptest! {
    // 64 cases each; failures are not persisted to a regressions file next to this source (the
    // shrunk case is printed instead).
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn broadcast_shapes_agrees_with_the_per_axis_rule(
        a in prop::collection::vec(1usize..=3, 0..=4),
        b in prop::collection::vec(1usize..=3, 0..=4),
    ) {
        match (broadcast_shapes("p", &a, &b), rule(&a, &b)) {
            (Ok(got), Some(want)) => prop_assert_eq!(got, want),
            (Err(TensorError::BroadcastMismatch { .. }), None) => {}
            (got, want) => prop_assert!(false, "{a:?} {b:?}: engine {got:?}, rule {want:?}"),
        }
    }

    #[test]
    fn add_and_mul_of_random_broadcastable_shapes_equal_naive_loops((sa, sb) in broadcastable_pair(), seed in 0u64..1000) {
        let (a, b) = (random(&sa, -1.0, 1.0, seed), random(&sb, -1.0, 1.0, seed + 1));
        let (av, bv) = (a.to_vec_f64(), b.to_vec_f64());
        let out_shape = rule(&sa, &sb).unwrap();
        let (mut sum, mut product) = (Vec::new(), Vec::new());
        for flat in 0..numel(&out_shape) {
            let index = unravel(flat, &out_shape);
            let (x, y) = (av[broadcast_source(&index, &sa)], bv[broadcast_source(&index, &sb)]);
            sum.push(x + y);
            product.push(x * y);
        }
        let got = a.add(&b).unwrap();
        prop_assert_eq!(got.shape(), &out_shape[..]);
        prop_assert_eq!(got.to_vec_f64(), sum);
        let got = b.mul(&a).unwrap();
        prop_assert_eq!(got.shape(), &out_shape[..]);
        prop_assert_eq!(got.to_vec_f64(), product);
    }

    #[test]
    fn permute_then_inverse_permute_gives_back_the_same_values_as_a_view((s, dims) in shape_and_permutation(), seed in 0u64..1000) {
        let x = random(&s, -1.0, 1.0, seed);
        let values = x.to_vec_f64();
        let y = x.permute(&dims).unwrap();
        // the permuted values, by loops
        let permuted_shape: Vec<usize> = dims.iter().map(|&d| s[d]).collect();
        let expected: Vec<f64> = (0..numel(&s)).map(|flat| {
            let out_index = unravel(flat, &permuted_shape);
            let mut source = vec![0; s.len()];
            for (k, &d) in dims.iter().enumerate() { source[d] = out_index[k]; }
            values[ravel(&source, &s)]
        }).collect();
        prop_assert_eq!(y.shape(), &permuted_shape[..]);
        prop_assert_eq!(y.to_vec_f64(), expected);
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() { inverse[d] = i; }
        let back = y.permute(&inverse).unwrap();
        prop_assert!(back.shares_storage_with(&x));
        prop_assert!(back.is_contiguous());
        prop_assert_eq!(back.shape(), &s[..]);
        prop_assert_eq!(back.to_vec_f64(), values);
    }

    #[test]
    fn narrow_gives_the_reference_slice_as_a_view((s, axis, start, len) in shape_and_narrow(), seed in 0u64..1000) {
        let x = random(&s, -1.0, 1.0, seed);
        let values = x.to_vec_f64();
        let y = x.narrow(axis as isize, start, len).unwrap();
        let mut out_shape = s.clone();
        out_shape[axis] = len;
        let expected: Vec<f64> = (0..numel(&out_shape)).map(|flat| {
            let mut index = unravel(flat, &out_shape);
            index[axis] += start;
            values[ravel(&index, &s)]
        }).collect();
        prop_assert!(y.shares_storage_with(&x));
        prop_assert_eq!(y.shape(), &out_shape[..]);
        prop_assert_eq!(y.to_vec_f64(), expected.clone());
        // and a copy of it has the same values
        prop_assert_eq!(y.contiguous().unwrap().to_vec_f64(), expected);
    }

    #[test]
    fn reshape_round_trips_through_flat_and_reversed_shapes((s, dims) in shape_and_permutation(), seed in 0u64..1000) {
        let x = random(&s, -1.0, 1.0, seed);
        let values = x.to_vec_f64();
        let reversed: Vec<usize> = s.iter().rev().copied().collect();
        let y = x.reshape(&[numel(&s)]).unwrap().reshape(&reversed).unwrap().reshape(&s).unwrap();
        prop_assert!(y.shares_storage_with(&x));
        prop_assert_eq!(y.to_vec_f64(), values);
        // through a non-contiguous view: the copy holds the view's logical order
        let view = x.permute(&dims).unwrap();
        let flat = view.reshape(&[numel(&s)]).unwrap();
        prop_assert_eq!(flat.to_vec_f64(), view.contiguous().unwrap().to_vec_f64());
        let back = flat.reshape(view.shape()).unwrap();
        prop_assert_eq!(back.to_vec_f64(), view.to_vec_f64());
    }

    #[test]
    fn sum_over_a_random_axis_set_equals_naive_loops((s, axes) in shape_and_axes(), keepdim in any::<bool>(), seed in 0u64..1000) {
        let x = random(&s, -1.0, 1.0, seed);
        let values = x.to_vec_f64();
        let rank = s.len() as isize;
        let reduced: Vec<bool> = (0..s.len())
            .map(|i| axes.is_empty() || axes.iter().any(|&a| (if a < 0 { a + rank } else { a }) == i as isize))
            .collect();
        let kept: Vec<usize> = s.iter().zip(&reduced).map(|(&n, &r)| if r { 1 } else { n }).collect();
        let mut expected = vec![0.0; numel(&kept)];
        for (flat, v) in values.iter().enumerate() {
            let index: Vec<usize> = unravel(flat, &s).iter().zip(&reduced).map(|(&i, &r)| if r { 0 } else { i }).collect();
            expected[ravel(&index, &kept)] += v;
        }
        let out_shape: Vec<usize> = if keepdim { kept } else {
            s.iter().zip(&reduced).filter(|(_, r)| !**r).map(|(&n, _)| n).collect()
        };
        let got = x.sum(&axes, keepdim).unwrap();
        prop_assert_eq!(got.shape(), &out_shape[..]);
        prop_assert!(close(&got.to_vec_f64(), &expected, 1e-12), "{:?} vs {:?}", got.to_vec_f64(), expected);
    }

    #[test]
    fn sum_over_all_axes_in_any_order_and_keepdim_equals_the_total(
        (s, dims) in shape_and_permutation(),
        negative in prop::collection::vec(any::<bool>(), 4),
        keepdim in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let x = random(&s, -1.0, 1.0, seed);
        let total: f64 = x.to_vec_f64().iter().sum();
        let rank = s.len() as isize;
        let axes: Vec<isize> = dims.iter().enumerate().map(|(k, &d)| if negative[k] { d as isize - rank } else { d as isize }).collect();
        let got = x.sum(&axes, keepdim).unwrap();
        let want_shape = if keepdim { vec![1; s.len()] } else { vec![] };
        prop_assert_eq!(got.shape(), &want_shape[..]);
        prop_assert!(close(&got.to_vec_f64(), &[total], 1e-12));
        prop_assert!(close(&x.sum_all().unwrap().to_vec_f64(), &[total], 1e-12));
        prop_assert!(close(&x.permute(&dims).unwrap().sum_all().unwrap().to_vec_f64(), &[total], 1e-12));
        let empty_axes = x.sum(&[], keepdim).unwrap();
        prop_assert_eq!(empty_axes.shape(), &want_shape[..]);
        prop_assert!(close(&empty_axes.to_vec_f64(), &[total], 1e-12));
    }
}

#[test]
fn from_f64_values_read_back_in_row_major_order() {
    // A plain sanity anchor for the helpers above: row-major in, row-major out.
    let values: Vec<f64> = (0..24).map(|i| i as f64 * 0.5 - 3.0).collect();
    let x = Tensor::from_f64(&values, &[2, 3, 4], ember::tensor::DType::F64).unwrap();
    assert_eq!(x.to_vec_f64(), values);
    assert_eq!(ravel(&unravel(17, &[2, 3, 4]), &[2, 3, 4]), 17);
}
