//! Movement ops: reshape, flatten_all, permute, transpose, narrow, broadcast_to/expand,
//! contiguous, unsqueeze/squeeze, cat, pad. Values against naive index loops, which ops are
//! views (shared storage) and which copy, and gradient checks in f64 (strided inputs included).
//! Every test but the f16/bf16 one runs on each device of the build (`cpu::…`, `cuda::…`; f32
//! kernels on a CUDA device, where the references are computed from the f32 values the device
//! holds, so movement stays bit-exact).

use ember::tensor::testing::random;
use ember::tensor::{DType, Tensor};

#[macro_use]
mod common;
use common::*;

// ---- naive helpers ---------------------------------------------------------------------------

fn naive_broadcast(values: &[f64], shape: &[usize], target: &[usize]) -> Vec<f64> {
    let lead = target.len() - shape.len();
    (0..numel(target))
        .map(|flat| {
            let index = unravel(flat, target);
            let source: Vec<usize> = shape.iter().enumerate().map(|(i, &n)| if n == 1 { 0 } else { index[lead + i] }).collect();
            values[ravel(&source, shape)]
        })
        .collect()
}

fn naive_cat(parts: &[(Vec<f64>, Vec<usize>)], axis: usize) -> (Vec<f64>, Vec<usize>) {
    let mut shape = parts[0].1.clone();
    shape[axis] = parts.iter().map(|(_, s)| s[axis]).sum();
    let out = (0..numel(&shape))
        .map(|flat| {
            let mut index = unravel(flat, &shape);
            for (values, part_shape) in parts {
                if index[axis] < part_shape[axis] {
                    return values[ravel(&index, part_shape)];
                }
                index[axis] -= part_shape[axis];
            }
            unreachable!()
        })
        .collect();
    (out, shape)
}

fn naive_pad(values: &[f64], shape: &[usize], paddings: &[(usize, usize)], fill: f64) -> (Vec<f64>, Vec<usize>) {
    let out_shape: Vec<usize> = shape.iter().zip(paddings).map(|(&n, &(b, a))| n + b + a).collect();
    let out = (0..numel(&out_shape))
        .map(|flat| {
            let index = unravel(flat, &out_shape);
            let mut source = Vec::with_capacity(shape.len());
            for (axis, &i) in index.iter().enumerate() {
                let before = paddings[axis].0;
                if i < before || i >= before + shape[axis] {
                    return fill;
                }
                source.push(i - before);
            }
            values[ravel(&source, shape)]
        })
        .collect();
    (out, out_shape)
}

/// Movement is exact: values must be bit-identical.
#[track_caller]
fn assert_exact(actual: &Tensor, expected: &[f64], shape: &[usize], what: &str) {
    assert_eq!(actual.shape(), shape, "{what}: shape");
    assert_eq!(actual.to_vec_f64(), expected, "{what}: values");
}

const ALL_PERMUTATIONS_OF_3: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

per_device! {
// ---- reshape ---------------------------------------------------------------------------------

fn reshape_of_contiguous_tensor_is_a_storage_sharing_view_in_row_major_order_and_gradient_checks(dev) {
    let host = random(&[3, 5, 7], -2.0, 2.0, 1);
    let x = dev.put(&host);
    let values = x.to_vec_f64();
    for shape in [&[7, 15][..], &[105], &[5, 3, 7], &[1, 105, 1], &[3, 35]] {
        let y = x.reshape(shape).unwrap();
        assert!(y.shares_storage_with(&x), "reshape {shape:?} of a contiguous tensor is a view");
        assert!(y.is_contiguous());
        assert_exact(&y, &values, shape, &format!("reshape {shape:?}"));
        dev.assert_gradcheck(&format!("reshape {shape:?}"), |t| t[0].reshape(shape), std::slice::from_ref(&host));
    }
    // a contiguous narrow (along the first axis) is still reshaped as a view
    let rows = x.narrow(0, 1, 2).unwrap();
    let y = rows.reshape(&[70]).unwrap();
    assert!(y.shares_storage_with(&x));
    assert_exact(&y, &values[35..105], &[70], "reshape of a leading narrow");
    let flat = x.flatten_all().unwrap();
    assert!(flat.shares_storage_with(&x));
    assert_exact(&flat, &values, &[105], "flatten_all");
}

fn reshape_of_non_contiguous_tensor_copies_in_logical_order_and_gradient_checks(dev) {
    let host = random(&[5, 7], -2.0, 2.0, 2);
    let base = dev.put(&host);
    let xt = base.transpose(0, 1).unwrap();
    let expected = naive_permute(&base.to_vec_f64(), &[5, 7], &[1, 0]);
    for shape in [&[35][..], &[5, 7], &[7, 5, 1]] {
        let y = xt.reshape(shape).unwrap();
        assert!(!y.shares_storage_with(&base), "reshape {shape:?} of a transposed view copies");
        assert!(y.is_contiguous());
        assert_exact(&y, &expected, shape, &format!("reshape {shape:?} of transposed"));
        dev.assert_gradcheck(&format!("reshape {shape:?} of transposed"), |t| t[0].transpose(0, 1)?.reshape(shape), std::slice::from_ref(&host));
    }
    let host = random(&[3, 9], -2.0, 2.0, 3);
    let base = dev.put(&host);
    let narrowed = base.narrow(1, 2, 5).unwrap();
    let y = narrowed.reshape(&[15]).unwrap();
    assert_exact(&y, &naive_narrow(&base.to_vec_f64(), &[3, 9], 1, 2, 5), &[15], "reshape of narrowed");
    dev.assert_gradcheck("reshape of narrowed", |t| t[0].narrow(1, 2, 5)?.reshape(&[5, 3]), &[host]);
}

// ---- permute / transpose ---------------------------------------------------------------------

fn permute_is_a_view_matching_reference_for_every_permutation_and_gradient_checks(dev) {
    let host = random(&[3, 5, 7], -2.0, 2.0, 4);
    let x = dev.put(&host);
    let values = x.to_vec_f64();
    for dims in ALL_PERMUTATIONS_OF_3 {
        let y = x.permute(&dims).unwrap();
        let shape: Vec<usize> = dims.iter().map(|&d| [3, 5, 7][d]).collect();
        assert!(y.shares_storage_with(&x));
        assert_eq!(y.is_contiguous(), dims == [0, 1, 2], "{dims:?}");
        assert_exact(&y, &naive_permute(&values, &[3, 5, 7], &dims), &shape, &format!("permute {dims:?}"));
        dev.assert_gradcheck(&format!("permute {dims:?}"), |t| t[0].permute(&dims), std::slice::from_ref(&host));
        // composing with a second permutation
        let z = y.permute(&[2, 0, 1]).unwrap();
        let expected = naive_permute(&naive_permute(&values, &[3, 5, 7], &dims), &shape, &[2, 0, 1]);
        let z_shape = [shape[2], shape[0], shape[1]];
        assert_exact(&z, &expected, &z_shape, &format!("permute {dims:?} then [2,0,1]"));
        dev.assert_gradcheck(&format!("permute {dims:?} then [2,0,1]"), |t| t[0].permute(&dims)?.permute(&[2, 0, 1]), std::slice::from_ref(&host));
    }
    // size-1 axes and a rank-4 tensor
    let host = random(&[2, 1, 3, 1], -2.0, 2.0, 5);
    let x = dev.put(&host);
    let y = x.permute(&[3, 2, 0, 1]).unwrap();
    assert_exact(&y, &naive_permute(&x.to_vec_f64(), &[2, 1, 3, 1], &[3, 2, 0, 1]), &[1, 3, 2, 1], "permute rank 4");
    dev.assert_gradcheck("permute rank 4", |t| t[0].permute(&[3, 2, 0, 1]), &[host]);
}

fn transpose_swaps_two_axes_including_negative_ones_as_a_view_and_gradient_checks(dev) {
    let host = random(&[3, 5, 7], -2.0, 2.0, 6);
    let x = dev.put(&host);
    let values = x.to_vec_f64();
    for ((a, b), dims) in [((0, 2), [2, 1, 0]), ((-1, -2), [0, 2, 1]), ((1, 0), [1, 0, 2]), ((1, 1), [0, 1, 2]), ((-3, 1), [1, 0, 2])] {
        let y = x.transpose(a, b).unwrap();
        let shape: Vec<usize> = dims.iter().map(|&d| [3, 5, 7][d]).collect();
        assert!(y.shares_storage_with(&x));
        assert_exact(&y, &naive_permute(&values, &[3, 5, 7], &dims), &shape, &format!("transpose({a},{b})"));
        dev.assert_gradcheck(&format!("transpose({a},{b})"), |t| t[0].transpose(a, b), std::slice::from_ref(&host));
    }
}

// ---- narrow ----------------------------------------------------------------------------------

fn narrow_is_a_view_matching_reference_on_every_axis_and_gradient_checks(dev) {
    let shape = [5, 7, 9];
    let x = dev.put(&random(&shape, -2.0, 2.0, 7));
    let values = x.to_vec_f64();
    for (axis, start, len) in [(0isize, 0, 1), (0, 2, 3), (1, 3, 4), (2, 0, 9), (2, 8, 1), (-1, 1, 7), (-2, 6, 1), (1, 7, 0)] {
        let normalized = if axis < 0 { (axis + 3) as usize } else { axis as usize };
        let y = x.narrow(axis, start, len).unwrap();
        let mut out_shape = shape.to_vec();
        out_shape[normalized] = len;
        assert!(y.shares_storage_with(&x), "narrow is a view");
        assert_exact(&y, &naive_narrow(&values, &shape, normalized, start, len), &out_shape, &format!("narrow({axis},{start},{len})"));
    }
    let small = random(&[3, 5, 7], -2.0, 2.0, 8);
    for (axis, start, len) in [(0isize, 1, 2), (1, 0, 1), (-1, 2, 5), (2, 6, 1)] {
        dev.assert_gradcheck(&format!("narrow({axis},{start},{len})"), |t| t[0].narrow(axis, start, len), std::slice::from_ref(&small));
    }
    // narrow of a narrow, and narrow of a transposed view
    let y = x.narrow(2, 1, 7).unwrap().narrow(2, 2, 3).unwrap().narrow(0, 1, 3).unwrap();
    let expected = naive_narrow(&naive_narrow(&values, &shape, 2, 3, 3), &[5, 7, 3], 0, 1, 3);
    assert_exact(&y, &expected, &[3, 7, 3], "narrow of narrow");
    let y = x.transpose(0, 2).unwrap().narrow(1, 2, 4).unwrap();
    let expected = naive_narrow(&naive_permute(&values, &shape, &[2, 1, 0]), &[9, 7, 5], 1, 2, 4);
    assert_exact(&y, &expected, &[9, 4, 5], "narrow of transposed");
    dev.assert_gradcheck("narrow of narrow", |t| t[0].narrow(2, 1, 5)?.narrow(2, 2, 3)?.narrow(0, 1, 1), std::slice::from_ref(&small));
    dev.assert_gradcheck("narrow of transposed", |t| t[0].transpose(0, 2)?.narrow(1, 2, 2), &[small]);
}

// ---- broadcast_to / expand -------------------------------------------------------------------

fn broadcast_to_and_expand_are_storage_sharing_views_matching_reference_and_gradient_checks(dev) {
    let cases: [(&[usize], &[usize]); 7] =
        [(&[3, 1], &[2, 3, 4]), (&[], &[2, 3]), (&[1], &[5]), (&[5], &[3, 5]), (&[1, 7, 1], &[3, 7, 5]), (&[3, 1, 5], &[2, 3, 4, 5]), (&[2, 3], &[2, 3])];
    for (k, (shape, target)) in cases.into_iter().enumerate() {
        let host = random(shape, -2.0, 2.0, 10 + k as u64);
        let x = dev.put(&host);
        let expected = naive_broadcast(&x.to_vec_f64(), shape, target);
        let y = x.broadcast_to(target).unwrap();
        assert!(y.shares_storage_with(&x), "broadcast_to {shape:?} -> {target:?} is a view");
        assert_exact(&y, &expected, target, &format!("broadcast_to {shape:?} -> {target:?}"));
        assert_exact(&x.expand(target).unwrap(), &expected, target, &format!("expand {shape:?} -> {target:?}"));
        dev.assert_gradcheck(&format!("broadcast_to {shape:?} -> {target:?}"), |t| t[0].broadcast_to(target), std::slice::from_ref(&host));
        dev.assert_gradcheck(&format!("expand {shape:?} -> {target:?}"), |t| t[0].expand(target), std::slice::from_ref(&host));
    }
    // broadcasting a strided view: [1,3]ᵀ = [3,1] -> [2,3,4]
    let host = random(&[1, 3], -2.0, 2.0, 20);
    let base = dev.put(&host);
    let expected = naive_broadcast(&base.to_vec_f64(), &[3, 1], &[2, 3, 4]);
    assert_exact(&base.transpose(0, 1).unwrap().broadcast_to(&[2, 3, 4]).unwrap(), &expected, &[2, 3, 4], "broadcast of transposed");
    dev.assert_gradcheck("broadcast of transposed", |t| t[0].transpose(0, 1)?.broadcast_to(&[2, 3, 4]), &[host]);
    // a broadcast view fed to a copying op is materialised correctly
    let x = dev.put(&random(&[3, 1], -2.0, 2.0, 21));
    let y = x.broadcast_to(&[3, 4]).unwrap().contiguous().unwrap();
    assert!(!y.shares_storage_with(&x));
    assert_exact(&y, &naive_broadcast(&x.to_vec_f64(), &[3, 1], &[3, 4]), &[3, 4], "contiguous of broadcast");
}

// ---- contiguous ------------------------------------------------------------------------------

fn contiguous_copies_only_non_contiguous_views_keeps_values_and_gradient_checks(dev) {
    let host = random(&[3, 5, 7], -2.0, 2.0, 30);
    let x = dev.put(&host);
    let same = x.contiguous().unwrap();
    assert!(same.shares_storage_with(&x), "contiguous of a contiguous tensor is itself");
    let view = x.permute(&[2, 0, 1]).unwrap();
    let copy = view.contiguous().unwrap();
    assert!(copy.is_contiguous() && !copy.shares_storage_with(&x));
    assert_exact(&copy, &naive_permute(&x.to_vec_f64(), &[3, 5, 7], &[2, 0, 1]), &[7, 3, 5], "contiguous of permuted");
    dev.assert_gradcheck("contiguous of permuted", |t| t[0].permute(&[2, 0, 1])?.contiguous(), std::slice::from_ref(&host));
    dev.assert_gradcheck("contiguous of narrowed", |t| t[0].narrow(2, 1, 3)?.contiguous(), &[host]);
}

// ---- unsqueeze / squeeze ---------------------------------------------------------------------

fn unsqueeze_and_squeeze_insert_and_remove_unit_axes_at_any_position_and_gradient_checks(dev) {
    let host = random(&[3, 5], -2.0, 2.0, 40);
    let x = dev.put(&host);
    let values = x.to_vec_f64();
    for (axis, shape) in [(0isize, [1, 3, 5]), (1, [3, 1, 5]), (2, [3, 5, 1]), (-1, [3, 5, 1]), (-3, [1, 3, 5])] {
        let y = x.unsqueeze(axis).unwrap();
        assert!(y.shares_storage_with(&x));
        assert_exact(&y, &values, &shape, &format!("unsqueeze({axis})"));
        dev.assert_gradcheck(&format!("unsqueeze({axis})"), |t| t[0].unsqueeze(axis), std::slice::from_ref(&host));
        let back = y.squeeze(axis).unwrap();
        assert_exact(&back, &values, &[3, 5], &format!("squeeze({axis})"));
        dev.assert_gradcheck(&format!("squeeze({axis})"), |t| t[0].unsqueeze(axis)?.squeeze(axis), std::slice::from_ref(&host));
    }
    let y = dev.put(&random(&[1, 7, 1], -2.0, 2.0, 41));
    assert_exact(&y.squeeze(0).unwrap(), &y.to_vec_f64(), &[7, 1], "squeeze(0)");
    assert_exact(&y.squeeze(-1).unwrap(), &y.to_vec_f64(), &[1, 7], "squeeze(-1)");
    assert_exact(&y.squeeze(0).unwrap().squeeze(-1).unwrap(), &y.to_vec_f64(), &[7], "squeeze both");
    assert!(y.squeeze(1).is_err(), "axis of size 7 cannot be squeezed");
    // of a strided view: values in logical order
    let host = random(&[5, 3], -2.0, 2.0, 42);
    let base = dev.put(&host);
    let expected = naive_permute(&base.to_vec_f64(), &[5, 3], &[1, 0]);
    assert_exact(&base.transpose(0, 1).unwrap().unsqueeze(1).unwrap(), &expected, &[3, 1, 5], "unsqueeze of transposed");
    dev.assert_gradcheck("unsqueeze of transposed", |t| t[0].transpose(0, 1)?.unsqueeze(1), &[host]);
    // rank 0 <-> [1]
    let s = dev.put(&random(&[], -2.0, 2.0, 43));
    assert_exact(&s.unsqueeze(0).unwrap(), &s.to_vec_f64(), &[1], "unsqueeze of rank 0");
    assert_exact(&s.unsqueeze(0).unwrap().squeeze(0).unwrap(), &s.to_vec_f64(), &[], "squeeze to rank 0");
}

// ---- cat -------------------------------------------------------------------------------------

fn cat_of_three_inputs_along_first_middle_and_last_axis_matches_reference_and_gradient_checks(dev) {
    for (axis, sizes) in [(0isize, [1, 3, 2]), (1, [2, 1, 4]), (2, [3, 2, 1]), (-1, [1, 1, 3]), (-2, [4, 1, 2])] {
        let normalized = if axis < 0 { (axis + 3) as usize } else { axis as usize };
        let inputs: Vec<Tensor> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let mut shape = vec![2, 3, 5];
                shape[normalized] = n;
                random(&shape, -2.0, 2.0, 50 + k as u64)
            })
            .collect();
        let on_device: Vec<Tensor> = inputs.iter().map(|t| dev.put(t)).collect();
        let parts: Vec<(Vec<f64>, Vec<usize>)> = on_device.iter().map(|t| (t.to_vec_f64(), t.shape().to_vec())).collect();
        let (expected, shape) = naive_cat(&parts, normalized);
        let refs: Vec<&Tensor> = on_device.iter().collect();
        let out = Tensor::cat(&refs, axis).unwrap();
        assert_exact(&out, &expected, &shape, &format!("cat axis {axis}"));
        dev.assert_gradcheck(&format!("cat axis {axis}"), |t| Tensor::cat(&[&t[0], &t[1], &t[2]], axis), &inputs);
    }
}

fn cat_of_strided_and_single_inputs_matches_reference_and_gradient_checks(dev) {
    // a transposed, a narrowed and a contiguous input along axis 1
    let a = random(&[5, 3], -2.0, 2.0, 60); // -> [3,5]ᵀ
    let b = random(&[3, 9], -2.0, 2.0, 61); // -> narrow(1, 2, 4) -> [3,4]
    let c = random(&[3, 1], -2.0, 2.0, 62);
    let (ad, bd, cd) = (dev.put(&a), dev.put(&b), dev.put(&c));
    let parts = vec![
        (naive_permute(&ad.to_vec_f64(), &[5, 3], &[1, 0]), vec![3, 5]),
        (naive_narrow(&bd.to_vec_f64(), &[3, 9], 1, 2, 4), vec![3, 4]),
        (cd.to_vec_f64(), vec![3, 1]),
    ];
    let (expected, shape) = naive_cat(&parts, 1);
    let out = Tensor::cat(&[&ad.transpose(0, 1).unwrap(), &bd.narrow(1, 2, 4).unwrap(), &cd], 1).unwrap();
    assert_exact(&out, &expected, &shape, "cat of strided");
    dev.assert_gradcheck("cat of strided", |t| Tensor::cat(&[&t[0].transpose(0, 1)?, &t[1].narrow(1, 2, 4)?, &t[2]], 1), &[a.clone(), b, c]);
    // one input: a copy with the same values; the same tensor twice: gradient sums both slices
    let single = Tensor::cat(&[&ad], 0).unwrap();
    assert!(!single.shares_storage_with(&ad));
    assert_exact(&single, &ad.to_vec_f64(), &[5, 3], "cat of one");
    dev.assert_gradcheck("cat of the same tensor twice", |t| Tensor::cat(&[&t[0], &t[0]], -1), &[a]);
    // f32 values pass through exactly
    let x = dev.put(&random(&[33, 7], -2.0, 2.0, 63).to_dtype(DType::F32).unwrap());
    let y = dev.put(&random(&[33, 2], -2.0, 2.0, 64).to_dtype(DType::F32).unwrap());
    let out = Tensor::cat(&[&x, &y], 1).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let (expected, shape) = naive_cat(&[(x.to_vec_f64(), vec![33, 7]), (y.to_vec_f64(), vec![33, 2])], 1);
    assert_exact(&out, &expected, &shape, "cat f32");
}

// ---- pad -------------------------------------------------------------------------------------

fn pad_with_a_nonzero_value_matches_reference_and_gradient_checks(dev) {
    type Case<'a> = (&'a [usize], &'a [(usize, usize)], f64);
    let cases: [Case; 4] =
        [(&[3, 5], &[(1, 2), (0, 3)], 0.5), (&[2, 3, 4], &[(0, 0), (2, 1), (1, 1)], -1.25), (&[7], &[(3, 0)], 2.0), (&[1, 1], &[(1, 1), (1, 1)], -3.5)];
    for (k, (shape, paddings, value)) in cases.into_iter().enumerate() {
        let host = random(shape, -2.0, 2.0, 70 + k as u64);
        let x = dev.put(&host);
        let (expected, out_shape) = naive_pad(&x.to_vec_f64(), shape, paddings, value);
        let out = x.pad(paddings, value).unwrap();
        assert!(!out.shares_storage_with(&x));
        assert_exact(&out, &expected, &out_shape, &format!("pad {shape:?} {paddings:?}"));
        dev.assert_gradcheck(&format!("pad {shape:?} {paddings:?}"), |t| t[0].pad(paddings, value), &[host]);
    }
    // a transposed input
    let host = random(&[5, 3], -2.0, 2.0, 80);
    let base = dev.put(&host);
    let (expected, out_shape) = naive_pad(&naive_permute(&base.to_vec_f64(), &[5, 3], &[1, 0]), &[3, 5], &[(2, 1), (1, 2)], 0.75);
    assert_exact(&base.transpose(0, 1).unwrap().pad(&[(2, 1), (1, 2)], 0.75).unwrap(), &expected, &out_shape, "pad of transposed");
    dev.assert_gradcheck("pad of transposed", |t| t[0].transpose(0, 1)?.pad(&[(2, 1), (1, 2)], 0.75), &[host]);
    // a rank-0 tensor pads to itself
    let s = dev.put(&random(&[], -2.0, 2.0, 81));
    assert_exact(&s.pad(&[], 9.0).unwrap(), &s.to_vec_f64(), &[], "pad of rank 0");
}
}

// ---- storage-only dtypes ---------------------------------------------------------------------

// CPU-only: f16 and bf16 are storage-only dtypes on the CPU; a CUDA device holds f32 only
#[test]
fn movement_ops_work_on_storage_only_f16_and_bf16_tensors() {
    // quarter-integers are exact in f16 and bf16
    let values: Vec<f64> = (0..15).map(|i| i as f64 * 0.25 - 1.5).collect();
    for dtype in [DType::F16, DType::BF16] {
        let x = Tensor::from_f64(&values, &[3, 5], dtype).unwrap();
        let t = x.transpose(0, 1).unwrap();
        assert_exact(&t.contiguous().unwrap(), &naive_permute(&values, &[3, 5], &[1, 0]), &[5, 3], "f16 transpose");
        assert_exact(&t.reshape(&[15]).unwrap(), &naive_permute(&values, &[3, 5], &[1, 0]), &[15], "f16 reshape");
        let (expected, shape) = naive_cat(&[(values.clone(), vec![3, 5]), (values.clone(), vec![3, 5])], 0);
        let out = Tensor::cat(&[&x, &x], 0).unwrap();
        assert_eq!(out.dtype(), dtype);
        assert_exact(&out, &expected, &shape, "f16 cat");
        let (expected, shape) = naive_pad(&values, &[3, 5], &[(1, 0), (0, 2)], 0.5);
        assert_exact(&x.pad(&[(1, 0), (0, 2)], 0.5).unwrap(), &expected, &shape, "f16 pad");
        assert_exact(&x.narrow(1, 1, 3).unwrap(), &naive_narrow(&values, &[3, 5], 1, 1, 3), &[3, 3], "f16 narrow");
    }
}
