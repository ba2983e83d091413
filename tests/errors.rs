//! Every misuse returns an error of the right [`TensorError`] variant, naming the op and the
//! offending shapes, dtypes or axes; none panics.

use ember::tensor::testing::random;
use ember::tensor::{DType, Device, Tensor, TensorError};

/// Asserts that `$result` is an `Err` matching `$pattern` (and prints it otherwise).
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        assert_err!($result, $pattern if true)
    };
    ($result:expr, $pattern:pat if $guard:expr) => {
        match $result {
            Err($pattern) if $guard => {}
            Err(other) => panic!("{}: wrong error: {other:?}", stringify!($result)),
            Ok(_) => panic!("{}: expected an error, got Ok", stringify!($result)),
        }
    };
}

fn t(shape: &[usize]) -> Tensor {
    random(shape, 0.5, 2.0, 7)
}

#[test]
fn binary_ops_on_non_broadcastable_shapes_return_broadcast_mismatch_with_both_shapes() {
    let (a, b) = (t(&[3, 4]), t(&[5]));
    assert_err!(a.add(&b), TensorError::BroadcastMismatch { op: "add", lhs, rhs } if lhs == [3, 4] && rhs == [5]);
    assert_err!(a.sub(&b), TensorError::BroadcastMismatch { op: "sub", .. });
    assert_err!(a.mul(&b), TensorError::BroadcastMismatch { op: "mul", .. });
    assert_err!(a.div(&b), TensorError::BroadcastMismatch { op: "div", .. });
    assert_err!(a.pow(&b), TensorError::BroadcastMismatch { .. });
    assert_err!(t(&[2, 3, 1]).add(&t(&[4, 2])), TensorError::BroadcastMismatch { .. });
    let message = a.add(&b).unwrap_err().to_string();
    assert!(message.contains("add") && message.contains("[3, 4]") && message.contains("[5]"), "{message}");
}

#[test]
fn broadcast_to_an_incompatible_or_lower_rank_shape_returns_broadcast_mismatch() {
    assert_err!(t(&[3, 2]).broadcast_to(&[3, 4]), TensorError::BroadcastMismatch { op: "broadcast_to", .. });
    assert_err!(t(&[2, 3]).broadcast_to(&[3]), TensorError::BroadcastMismatch { .. });
    assert_err!(t(&[2, 3]).expand(&[4, 3, 3]), TensorError::BroadcastMismatch { .. });
}

#[test]
fn sum_to_shape_of_a_shape_it_was_not_broadcast_from_returns_broadcast_mismatch() {
    assert_err!(t(&[3]).sum_to_shape(&[2, 3]), TensorError::BroadcastMismatch { .. });
    assert_err!(t(&[3, 4]).sum_to_shape(&[5]), TensorError::BroadcastMismatch { .. });
    assert_err!(t(&[3, 4]).sum_to_shape(&[4, 1]), TensorError::BroadcastMismatch { .. });
}

#[test]
fn matmul_with_mismatched_inner_sizes_returns_shape_mismatch() {
    assert_err!(
        t(&[2, 3]).matmul(&t(&[4, 5])),
        TensorError::ShapeMismatch { op: "matmul", lhs, rhs } if lhs == [2, 3] && rhs == [4, 5]
    );
    assert_err!(t(&[2, 5, 3]).matmul(&t(&[2, 5, 3])), TensorError::ShapeMismatch { op: "matmul", .. });
}

#[test]
fn matmul_of_rank_below_two_returns_invalid_argument() {
    assert_err!(t(&[3]).matmul(&t(&[3, 2])), TensorError::InvalidArgument { op: "matmul", .. });
    assert_err!(t(&[2, 3]).matmul(&t(&[3])), TensorError::InvalidArgument { op: "matmul", .. });
    assert_err!(t(&[]).matmul(&t(&[])), TensorError::InvalidArgument { op: "matmul", .. });
}

#[test]
fn matmul_with_non_broadcastable_batch_axes_returns_broadcast_mismatch() {
    assert_err!(t(&[2, 3, 4]).matmul(&t(&[3, 4, 5])), TensorError::BroadcastMismatch { op: "matmul", .. });
}

#[test]
fn mixing_f32_and_f64_returns_dtype_mismatch() {
    let a = t(&[2, 3]).to_dtype(DType::F32).unwrap();
    let b = t(&[2, 3]);
    assert_err!(a.add(&b), TensorError::DTypeMismatch { lhs: DType::F32, rhs: DType::F64, .. });
    assert_err!(b.mul(&a), TensorError::DTypeMismatch { lhs: DType::F64, rhs: DType::F32, .. });
    assert_err!(a.matmul(&t(&[3, 2])), TensorError::DTypeMismatch { op: "matmul", .. });
    assert_err!(Tensor::cat(&[&a, &b], 0), TensorError::DTypeMismatch { op: "cat", .. });
    assert_err!(b.to_vec::<f32>(), TensorError::DTypeMismatch { .. });
    assert_err!(b.assign(&a), TensorError::DTypeMismatch { op: "assign", .. });
}

#[test]
fn compute_ops_on_storage_only_f16_and_bf16_return_unsupported_dtype() {
    for dtype in [DType::F16, DType::BF16] {
        let x = Tensor::from_f64(&[0.5, 1.0, 1.5, 2.0], &[2, 2], dtype).unwrap();
        assert_err!(x.exp(), TensorError::UnsupportedDType { op: "exp", dtype: d } if d == dtype);
        assert_err!(x.relu(), TensorError::UnsupportedDType { .. });
        assert_err!(x.add(&x), TensorError::UnsupportedDType { op: "add", .. });
        assert_err!(x.sum(&[0], false), TensorError::UnsupportedDType { op: "sum", .. });
        assert_err!(x.max(&[], false), TensorError::UnsupportedDType { op: "max", .. });
        assert_err!(x.matmul(&x), TensorError::UnsupportedDType { op: "matmul", .. });
        // converting to a compute dtype is the way out
        assert_eq!(x.to_dtype(DType::F32).unwrap().exp().unwrap().shape(), &[2, 2]);
    }
}

#[test]
fn axis_out_of_range_returns_axis_out_of_range_with_axis_and_rank() {
    let x = t(&[2, 3, 4]);
    assert_err!(x.sum(&[3], false), TensorError::AxisOutOfRange { op: "sum", axis: 3, rank: 3 });
    assert_err!(x.sum(&[-4], true), TensorError::AxisOutOfRange { axis: -4, rank: 3, .. });
    assert_err!(x.mean(&[0, 5], false), TensorError::AxisOutOfRange { .. });
    assert_err!(x.max(&[7], false), TensorError::AxisOutOfRange { .. });
    assert_err!(x.var(&[-9], false, 1), TensorError::AxisOutOfRange { .. });
    assert_err!(x.transpose(0, 3), TensorError::AxisOutOfRange { .. });
    assert_err!(x.narrow(3, 0, 1), TensorError::AxisOutOfRange { .. });
    assert_err!(x.narrow(-4, 0, 1), TensorError::AxisOutOfRange { .. });
    assert_err!(x.unsqueeze(4), TensorError::AxisOutOfRange { .. });
    assert_err!(x.unsqueeze(-5), TensorError::AxisOutOfRange { .. });
    assert_err!(x.squeeze(3), TensorError::AxisOutOfRange { .. });
    assert_err!(Tensor::cat(&[&x, &x], 3), TensorError::AxisOutOfRange { op: "cat", .. });
    assert_err!(x.dim(3), TensorError::AxisOutOfRange { .. });
    assert_err!(t(&[]).sum(&[0], false), TensorError::AxisOutOfRange { rank: 0, .. });
}

#[test]
fn narrow_beyond_the_axis_returns_invalid_argument() {
    let x = t(&[4, 5]);
    assert_err!(x.narrow(1, 3, 3), TensorError::InvalidArgument { op: "narrow", .. });
    assert_err!(x.narrow(0, 5, 0), TensorError::InvalidArgument { op: "narrow", .. });
    assert_err!(x.narrow(-1, 0, 6), TensorError::InvalidArgument { op: "narrow", .. });
}

#[test]
fn narrow_whose_start_plus_length_overflows_returns_invalid_argument() {
    // start + len wraps around in release builds; the range must still be rejected. On a view
    // with an offset the wrapped offset can even land in bounds: rows of x outside the view.
    let x = t(&[4, 5]);
    let rows = x.narrow(0, 2, 2).unwrap();
    assert_err!(rows.narrow(0, usize::MAX - 1, 3), TensorError::InvalidArgument { op: "narrow", .. });
    assert_err!(x.narrow(1, usize::MAX, 2), TensorError::InvalidArgument { op: "narrow", .. });
}

#[test]
fn permute_with_a_non_permutation_returns_invalid_argument() {
    let x = t(&[2, 3, 4]);
    assert_err!(x.permute(&[0, 0, 1]), TensorError::InvalidArgument { op: "permute", .. });
    assert_err!(x.permute(&[0, 1]), TensorError::InvalidArgument { op: "permute", .. });
    assert_err!(x.permute(&[0, 1, 3]), TensorError::InvalidArgument { op: "permute", .. });
    assert_err!(x.permute(&[0, 1, 2, 3]), TensorError::InvalidArgument { op: "permute", .. });
}

#[test]
fn cat_with_mismatched_shapes_ranks_or_no_inputs_returns_an_error() {
    let (a, b) = (t(&[2, 3]), t(&[2, 4]));
    assert_err!(Tensor::cat(&[&a, &b], 0), TensorError::ShapeMismatch { op: "cat", lhs, rhs } if lhs == [2, 3] && rhs == [2, 4]);
    assert!(Tensor::cat(&[&a, &b], 1).is_ok(), "sizes may differ along the cat axis");
    assert_err!(Tensor::cat(&[&a, &t(&[2, 3, 1])], 0), TensorError::ShapeMismatch { op: "cat", .. });
    assert_err!(Tensor::cat(&[&a, &a, &t(&[3, 3])], 1), TensorError::ShapeMismatch { op: "cat", .. });
    assert_err!(Tensor::cat(&[], 0), TensorError::InvalidArgument { op: "cat", .. });
}

#[test]
fn reshape_to_a_different_element_count_returns_shape_mismatch() {
    let x = t(&[2, 3]);
    assert_err!(x.reshape(&[7]), TensorError::ShapeMismatch { op: "reshape", lhs, rhs } if lhs == [2, 3] && rhs == [7]);
    assert_err!(x.reshape(&[2, 2]), TensorError::ShapeMismatch { op: "reshape", .. });
    assert_err!(x.transpose(0, 1).unwrap().reshape(&[5]), TensorError::ShapeMismatch { op: "reshape", .. });
    assert_err!(x.reshape(&[]), TensorError::ShapeMismatch { .. });
}

#[test]
fn squeeze_of_an_axis_that_is_not_size_one_returns_invalid_argument() {
    assert_err!(t(&[2, 1, 3]).squeeze(0), TensorError::InvalidArgument { op: "squeeze", .. });
    assert_err!(t(&[2, 1, 3]).squeeze(-1), TensorError::InvalidArgument { op: "squeeze", .. });
}

#[test]
fn pad_with_the_wrong_number_of_pairs_returns_invalid_argument() {
    let x = t(&[2, 3]);
    assert_err!(x.pad(&[(1, 1)], 0.0), TensorError::InvalidArgument { op: "pad", .. });
    assert_err!(x.pad(&[(1, 1), (0, 0), (2, 2)], 0.0), TensorError::InvalidArgument { op: "pad", .. });
    assert_err!(x.pad(&[], 0.0), TensorError::InvalidArgument { op: "pad", .. });
}

#[test]
fn constructors_with_the_wrong_number_of_values_return_invalid_argument() {
    assert_err!(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[2, 2], Device::Cpu), TensorError::InvalidArgument { op: "from_vec", .. });
    assert_err!(Tensor::from_vec(vec![1.0f64; 5], &[], Device::Cpu), TensorError::InvalidArgument { op: "from_vec", .. });
    assert_err!(Tensor::from_f64(&[1.0, 2.0], &[3], DType::F64), TensorError::InvalidArgument { op: "from_f64", .. });
    let mut rng = ember::tensor::rng::Rng::new(0);
    assert_err!(Tensor::rand_uniform(&[2], 1.0, 1.0, DType::F32, &mut rng), TensorError::InvalidArgument { .. });
    assert_err!(Tensor::rand_uniform(&[2], 2.0, 1.0, DType::F32, &mut rng), TensorError::InvalidArgument { .. });
}

#[test]
fn item_of_a_multi_element_tensor_returns_invalid_argument() {
    assert_err!(t(&[2]).item(), TensorError::InvalidArgument { op: "item", .. });
    assert_err!(t(&[2, 3]).item(), TensorError::InvalidArgument { op: "item", .. });
    assert_err!(t(&[0]).item(), TensorError::InvalidArgument { op: "item", .. });
    assert!(t(&[1, 1]).item().is_ok() && t(&[]).item().is_ok());
}

#[test]
fn backward_on_a_non_scalar_or_a_graph_without_variables_returns_autograd_error() {
    let x = t(&[2, 3]).variable();
    let y = x.exp().unwrap();
    assert_err!(y.backward(), TensorError::Autograd { .. });
    // nothing requires a gradient
    assert_err!(t(&[2]).sum_all().unwrap().backward(), TensorError::Autograd { .. });
    let detached = x.detach().sum_all().unwrap();
    assert_err!(detached.backward(), TensorError::Autograd { .. });
    // backward_with a gradient of the wrong shape
    assert_err!(y.backward_with(&t(&[3, 2])), TensorError::ShapeMismatch { op: "backward", .. });
}

#[test]
fn moving_to_a_cuda_device_that_is_not_there_returns_device_unavailable() {
    // (Device 0 may be a GPU or the emulator; no machine here has a device 7.)
    assert_err!(t(&[2]).to_device(Device::Cuda(7)), TensorError::DeviceUnavailable { device: Device::Cuda(7), .. });
    assert_err!(Tensor::from_vec(vec![1.0f32], &[1], Device::Cuda(7)), TensorError::DeviceUnavailable { .. });
    assert!(t(&[2]).to_device(Device::Cpu).is_ok());
}

#[test]
fn var_with_no_more_elements_than_the_correction_returns_invalid_argument() {
    assert_err!(t(&[3, 1]).var(&[1], false, 1), TensorError::InvalidArgument { op: "var", .. });
    assert_err!(t(&[2, 2]).var(&[], false, 4), TensorError::InvalidArgument { op: "var", .. });
}

#[test]
fn assign_with_a_different_shape_returns_shape_mismatch() {
    assert_err!(t(&[2, 3]).assign(&t(&[3, 2])), TensorError::ShapeMismatch { op: "assign", .. });
}

// ---- the bigger ops -------------------------------------------------------------------------

mod big_ops {
    use ember::tensor::ops::conv::{Conv2dParams, ConvTranspose2dParams};
    use ember::tensor::testing::random;
    use ember::tensor::{DType, Tensor, TensorError};

    fn invalid(result: ember::tensor::Result<Tensor>) -> bool {
        matches!(result, Err(TensorError::InvalidArgument { .. }))
    }
    fn shape_mismatch(result: ember::tensor::Result<Tensor>) -> bool {
        matches!(result, Err(TensorError::ShapeMismatch { .. }))
    }

    #[test]
    fn conv2d_rejects_bad_ranks_channels_strides_kernels_and_biases() {
        let x = random(&[1, 3, 5, 5], -1.0, 1.0, 1);
        let w = random(&[4, 3, 3, 3], -1.0, 1.0, 2);
        let p = Conv2dParams::default();
        assert!(invalid(random(&[3, 5, 5], -1.0, 1.0, 3).conv2d(&w, None, p)), "rank 3 input");
        assert!(shape_mismatch(x.conv2d(&random(&[4, 2, 3, 3], -1.0, 1.0, 4), None, p)), "channels");
        assert!(invalid(x.conv2d(&w, None, Conv2dParams { stride: [0, 1], ..p })), "zero stride");
        assert!(invalid(x.conv2d(&w, None, Conv2dParams { dilation: [1, 0], ..p })), "zero dilation");
        assert!(invalid(x.conv2d(&random(&[4, 3, 7, 7], -1.0, 1.0, 5), None, p)), "kernel wider than the input");
        assert!(shape_mismatch(x.conv2d(&w, Some(&random(&[5], -1.0, 1.0, 6)), p)), "bias shape");
        assert!(invalid(Tensor::zeros(&[0, 3, 5, 5], DType::F64).conv2d(&w, None, p)), "empty batch");
        let f32_w = w.to_dtype(DType::F32).unwrap();
        assert!(matches!(x.conv2d(&f32_w, None, p), Err(TensorError::DTypeMismatch { .. })), "dtype");
    }

    #[test]
    fn conv_transpose2d_rejects_output_padding_not_below_the_stride() {
        let x = random(&[1, 3, 4, 4], -1.0, 1.0, 1);
        let w = random(&[3, 2, 3, 3], -1.0, 1.0, 2);
        assert!(invalid(x.conv_transpose2d(&w, None, ConvTranspose2dParams::new(2, 1, 2))));
        assert!(shape_mismatch(x.conv_transpose2d(&random(&[4, 2, 3, 3], -1.0, 1.0, 3), None, ConvTranspose2dParams::default())));
    }

    #[test]
    fn attention_rejects_mismatched_shapes_and_no_keys() {
        let q = random(&[2, 5, 8], -1.0, 1.0, 1);
        let k = random(&[2, 6, 8], -1.0, 1.0, 2);
        let v = random(&[2, 6, 4], -1.0, 1.0, 3);
        let sdpa = Tensor::scaled_dot_product_attention;
        assert!(shape_mismatch(sdpa(&q, &random(&[2, 6, 7], -1.0, 1.0, 4), &v, None)), "head dims");
        assert!(shape_mismatch(sdpa(&q, &k, &random(&[2, 5, 4], -1.0, 1.0, 5), None)), "keys vs values");
        assert!(shape_mismatch(sdpa(&q, &random(&[3, 6, 8], -1.0, 1.0, 6), &v, None)), "batch");
        assert!(invalid(sdpa(&random(&[8], -1.0, 1.0, 7), &k, &v, None)), "rank 1");
        let (k0, v0) = (Tensor::zeros(&[2, 0, 8], DType::F64), Tensor::zeros(&[2, 0, 4], DType::F64));
        assert!(invalid(sdpa(&q, &k0, &v0, None)), "Sk = 0");
    }

    #[test]
    fn norms_and_softmax_reject_bad_groups_shapes_and_ranks() {
        let x = random(&[2, 6, 3], -1.0, 1.0, 1);
        assert!(invalid(x.group_norm(4, None, None, 1e-5)), "6 channels in 4 groups");
        assert!(invalid(x.group_norm(0, None, None, 1e-5)), "zero groups");
        assert!(invalid(random(&[6], -1.0, 1.0, 2).group_norm(2, None, None, 1e-5)), "rank 1");
        assert!(shape_mismatch(x.group_norm(3, Some(&random(&[3], -1.0, 1.0, 3)), None, 1e-5)), "weight shape");
        assert!(shape_mismatch(x.layer_norm(&[6], None, None, 1e-5)), "normalized_shape not trailing");
        assert!(shape_mismatch(x.layer_norm(&[3], Some(&random(&[4], -1.0, 1.0, 4)), None, 1e-5)), "weight shape");
        assert!(invalid(Tensor::scalar(1.0, DType::F64).softmax(0)), "softmax of a scalar");
        assert!(matches!(x.softmax(3), Err(TensorError::AxisOutOfRange { .. })), "axis");
    }
}

/// PyTorch pickles (`torch.save`'s `.bin`, `.pt`, `.pth`, `.ckpt`) are refused by the one
/// safetensors loader every weight and checkpoint path goes through, with how to convert them;
/// a safetensors file that merely starts like a pickle, or is named like one, still loads.
#[test]
fn pytorch_pickles_are_refused_with_how_to_convert_them() {
    use ember::tensor::io::load_safetensors;
    let dir = std::env::temp_dir().join(format!("ember-errors-torch-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let refused = |path: &std::path::Path, what: &str| {
        let err = load_safetensors(path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, TensorError::File { .. }), "{what}: {err:?}");
        assert!(message.contains("PyTorch pickle") && message.contains(&path.display().to_string()), "{what}: {message}");
        assert!(message.contains("save_file") && message.contains("safe_serialization=True"), "{what}: says how to convert: {message}");
        message
    };
    // torch.save's zip archive (PyTorch ≥ 1.6) under its usual name, and the legacy pickle stream
    let zip = write("diffusion_pytorch_model.bin", b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl...");
    let message = refused(&zip, "zip");
    assert!(message.contains("torch.load('diffusion_pytorch_model.bin'") && message.contains("'diffusion_pytorch_model.safetensors'"), "{message}");
    refused(&write("weights.pt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03."), "legacy pickle");
    // the signature decides whatever the name (protocol 4 here), and the name when the content is unknown
    refused(&write("renamed.safetensors", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94."), "pickle named .safetensors");
    assert!(refused(&write("model.CKPT", b"not a zip, not a pickle"), ".ckpt").contains(".ckpt file"));
    refused(&write("tiny.pth", b"PK\x03"), "a file shorter than a safetensors header");
    // every loader goes through it: checkpoints and diffusers weights alike
    let err = ember::train::checkpoint::Checkpoint::load(&zip).err().unwrap().to_string();
    assert!(err.contains("PyTorch pickle"), "{err}");
    let model = ember::unet::UNet::new(&ember::unet::UNetConfig::tiny(1), DType::F32, &mut ember::tensor::rng::Rng::new(0)).unwrap();
    let err = ember::unet::module::load_weights_file(&model, &zip).unwrap_err().to_string();
    assert!(err.contains("PyTorch pickle"), "{err}");

    // not pickles: a safetensors file whose 640-byte header makes it start with \x80\x02, and a
    // safetensors file named .bin, both load; garbage named .safetensors is a plain format error
    let mut header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
    header.resize(640, b' ');
    let mut bytes = 640u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&2.5f32.to_le_bytes());
    assert_eq!(&bytes[..2], b"\x80\x02");
    for name in ["header640.safetensors", "header640.bin"] {
        let loaded = load_safetensors(write(name, &bytes)).unwrap();
        assert_eq!(loaded.get("x").unwrap().to_vec_f64(), [2.5], "{name}");
    }
    let err = load_safetensors(write("garbage.safetensors", b"garbage!garbage")).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file") && !err.contains("pickle"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
