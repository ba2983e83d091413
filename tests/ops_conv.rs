//! conv2d and conv_transpose2d: forward values against naive f64 references written here with
//! explicit index loops (the direct 7-loop sum for conv2d, the scatter definition for
//! conv_transpose2d), over strides, paddings, dilations, kernels, channels and batches; f32 runs
//! on larger odd sizes (the SIMD and threaded GEMM paths); the adjoint identity between the two
//! ops; and f64 finite-difference gradient checks for every input, on contiguous and strided
//! (permuted / narrowed) inputs. Every test runs on each device of the build (`cpu::…`,
//! `cuda::…`; f32 kernels on a CUDA device).

#[macro_use]
mod common;

use common::TestDevice;
use ember::tensor::ops::conv::{Conv2dParams, ConvTranspose2dParams};
use ember::tensor::testing::{random, relative_error};
use ember::tensor::{DType, Tensor};

// ---- naive references ------------------------------------------------------------------------

/// `y[n,o,i,j] = b[o] + Σ_{c,ki,kj} w[o,c,ki,kj] · x[n,c,i·s−p+ki·d, j·s−p+kj·d]` (zero outside).
fn naive_conv2d(x: &[f64], xs: [usize; 4], w: &[f64], ws: [usize; 4], b: Option<&[f64]>, p: Conv2dParams) -> (Vec<f64>, [usize; 4]) {
    let [n, c_in, h, wd] = xs;
    let [c_out, wc_in, kh, kw] = ws;
    assert_eq!(c_in, wc_in);
    let ho = (h + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0] + 1;
    let wo = (wd + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1] + 1;
    let mut y = vec![0.0; n * c_out * ho * wo];
    for bn in 0..n {
        for o in 0..c_out {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    for c in 0..c_in {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = (i * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                                let iw = (j * p.stride[1] + kj * p.dilation[1]) as isize - p.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih as usize >= h || iw as usize >= wd {
                                    continue;
                                }
                                let (ih, iw) = (ih as usize, iw as usize);
                                acc += w[((o * c_in + c) * kh + ki) * kw + kj] * x[((bn * c_in + c) * h + ih) * wd + iw];
                            }
                        }
                    }
                    y[((bn * c_out + o) * ho + i) * wo + j] = acc;
                }
            }
        }
    }
    (y, [n, c_out, ho, wo])
}

/// The scatter definition: for each input pixel and kernel tap,
/// `out[n,o,i·s−p+ki·d, j·s−p+kj·d] += x[n,c,i,j] · w[c,o,ki,kj]` (skipping out-of-range), plus
/// `b[o]`; output size `(H−1)s − 2p + d(k−1) + output_padding + 1`.
fn naive_conv_transpose2d(x: &[f64], xs: [usize; 4], w: &[f64], ws: [usize; 4], b: Option<&[f64]>, p: ConvTranspose2dParams) -> (Vec<f64>, [usize; 4]) {
    let [n, c_in, h, wd] = xs;
    let [wc_in, c_out, kh, kw] = ws;
    assert_eq!(c_in, wc_in);
    let ho = (h - 1) * p.stride[0] + p.dilation[0] * (kh - 1) + p.output_padding[0] + 1 - 2 * p.padding[0];
    let wo = (wd - 1) * p.stride[1] + p.dilation[1] * (kw - 1) + p.output_padding[1] + 1 - 2 * p.padding[1];
    let mut y = vec![0.0; n * c_out * ho * wo];
    for bn in 0..n {
        for o in 0..c_out {
            for v in &mut y[(bn * c_out + o) * ho * wo..][..ho * wo] {
                *v = b.map_or(0.0, |b| b[o]);
            }
        }
    }
    for bn in 0..n {
        for c in 0..c_in {
            for i in 0..h {
                for j in 0..wd {
                    let xv = x[((bn * c_in + c) * h + i) * wd + j];
                    for o in 0..c_out {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let oh = (i * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                                let ow = (j * p.stride[1] + kj * p.dilation[1]) as isize - p.padding[1] as isize;
                                if oh < 0 || ow < 0 || oh as usize >= ho || ow as usize >= wo {
                                    continue;
                                }
                                y[((bn * c_out + o) * ho + oh as usize) * wo + ow as usize] += xv * w[((c * c_out + o) * kh + ki) * kw + kj];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, [n, c_out, ho, wo])
}

fn shape4(t: &Tensor) -> [usize; 4] {
    t.shape().try_into().unwrap()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---- conv2d cases ---------------------------------------------------------------------------

/// One conv2d configuration: input `[n, c_in, h, w]`, weight `[c_out, c_in, kh, kw]`.
struct ConvCase {
    name: &'static str,
    x: [usize; 4],
    c_out: usize,
    k: [usize; 2],
    params: Conv2dParams,
    bias: bool,
}

fn conv_params(stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]) -> Conv2dParams {
    Conv2dParams { stride, padding, dilation }
}

fn conv2d_cases() -> Vec<ConvCase> {
    vec![
        ConvCase { name: "1x1 kernel, 1 channel", x: [1, 1, 5, 7], c_out: 1, k: [1, 1], params: Conv2dParams::default(), bias: false },
        ConvCase {
            name: "1x1 kernel, stride 1, no padding, bias (the GEMM reads the image in place)",
            x: [3, 5, 4, 6],
            c_out: 7,
            k: [1, 1],
            params: Conv2dParams::default(),
            bias: true,
        },
        ConvCase { name: "1x1 kernel, stride 2, pad 1, bias", x: [3, 3, 7, 6], c_out: 7, k: [1, 1], params: Conv2dParams::new(2, 1), bias: true },
        ConvCase { name: "3x3 stride 1 pad 1 bias", x: [3, 3, 7, 9], c_out: 7, k: [3, 3], params: Conv2dParams::new(1, 1), bias: true },
        ConvCase { name: "3x3 stride 1 pad 0", x: [1, 7, 6, 5], c_out: 3, k: [3, 3], params: Conv2dParams::new(1, 0), bias: false },
        ConvCase { name: "3x3 stride 2 pad 1 bias", x: [3, 7, 9, 8], c_out: 3, k: [3, 3], params: Conv2dParams::new(2, 1), bias: true },
        ConvCase { name: "3x3 stride 2 pad 0", x: [1, 3, 8, 9], c_out: 1, k: [3, 3], params: Conv2dParams::new(2, 0), bias: false },
        ConvCase {
            name: "2x3 kernel, stride [2,1], pad [1,0], bias",
            x: [1, 3, 8, 7],
            c_out: 5,
            k: [2, 3],
            params: conv_params([2, 1], [1, 0], [1, 1]),
            bias: true,
        },
        ConvCase {
            name: "2x3 kernel, stride [1,2], pad [0,2]",
            x: [3, 1, 7, 9],
            c_out: 7,
            k: [2, 3],
            params: conv_params([1, 2], [0, 2], [1, 1]),
            bias: false,
        },
        ConvCase { name: "3x3 dilation 2 pad 2", x: [3, 3, 11, 10], c_out: 2, k: [3, 3], params: Conv2dParams::new(1, 2).with_dilation(2), bias: false },
        ConvCase {
            name: "3x3 dilation 2 stride 2 pad 1 bias",
            x: [1, 7, 13, 11],
            c_out: 3,
            k: [3, 3],
            params: Conv2dParams::new(2, 1).with_dilation(2),
            bias: true,
        },
        ConvCase {
            name: "2x3 kernel, dilation [2,1], stride [1,2], pad [0,1]",
            x: [1, 7, 6, 9],
            c_out: 4,
            k: [2, 3],
            params: conv_params([1, 2], [0, 1], [2, 1]),
            bias: true,
        },
        ConvCase { name: "kernel as large as the padded input", x: [3, 3, 3, 4], c_out: 7, k: [3, 3], params: conv_params([1, 1], [0, 1], [1, 1]), bias: true },
    ]
}

fn check_conv2d_case(dev: TestDevice, case: &ConvCase, dtype: DType, tolerance: f64, seed: u64) {
    let (dtype, tolerance) = (dev.dtype(dtype), dev.tolerance(tolerance));
    let [_, c_in, _, _] = case.x;
    let ws = [case.c_out, c_in, case.k[0], case.k[1]];
    let x = random(&case.x, -1.0, 1.0, seed);
    let w = random(&ws, -1.0, 1.0, seed + 1);
    let b = random(&[case.c_out], -1.0, 1.0, seed + 2);
    let bias_values = b.to_vec_f64();
    let (expected, expected_shape) = naive_conv2d(&x.to_vec_f64(), case.x, &w.to_vec_f64(), ws, case.bias.then_some(&bias_values[..]), case.params);
    let (xd, wd, bd) = (dev.put(&x.to_dtype(dtype).unwrap()), dev.put(&w.to_dtype(dtype).unwrap()), dev.put(&b.to_dtype(dtype).unwrap()));
    let y = xd.conv2d(&wd, case.bias.then_some(&bd), case.params).unwrap();
    assert_eq!(y.dtype(), dtype, "{}", case.name);
    assert_eq!(y.shape(), expected_shape, "{}: output shape", case.name);
    let err = relative_error(&y.to_vec_f64(), &expected);
    assert!(err < tolerance, "{} ({dtype:?}): relative error {err:.3e}", case.name);
}

// ---- conv_transpose2d cases -----------------------------------------------------------------

/// One conv_transpose2d configuration: input `[n, c_in, h, w]`, weight `[c_in, c_out, kh, kw]`.
struct ConvTCase {
    name: &'static str,
    x: [usize; 4],
    c_out: usize,
    k: [usize; 2],
    params: ConvTranspose2dParams,
    bias: bool,
}

fn convt_params(stride: [usize; 2], padding: [usize; 2], output_padding: [usize; 2], dilation: [usize; 2]) -> ConvTranspose2dParams {
    ConvTranspose2dParams { stride, padding, output_padding, dilation }
}

fn conv_transpose2d_cases() -> Vec<ConvTCase> {
    vec![
        ConvTCase { name: "3x3 stride 1 pad 0", x: [1, 3, 5, 6], c_out: 7, k: [3, 3], params: ConvTranspose2dParams::default(), bias: false },
        ConvTCase { name: "3x3 stride 1 pad 1 bias", x: [3, 7, 5, 4], c_out: 3, k: [3, 3], params: ConvTranspose2dParams::new(1, 1, 0), bias: true },
        ConvTCase { name: "1x1 stride 1, 1 channel", x: [3, 1, 4, 7], c_out: 1, k: [1, 1], params: ConvTranspose2dParams::default(), bias: true },
        ConvTCase { name: "3x3 stride 2 pad 0", x: [1, 3, 4, 5], c_out: 2, k: [3, 3], params: ConvTranspose2dParams::new(2, 0, 0), bias: false },
        ConvTCase {
            name: "3x3 stride 2 pad 1 output_padding 1 bias",
            x: [3, 3, 5, 4],
            c_out: 7,
            k: [3, 3],
            params: ConvTranspose2dParams::new(2, 1, 1),
            bias: true,
        },
        ConvTCase {
            name: "4x4 stride 2 pad 1 (UNet upsampler) bias",
            x: [3, 7, 5, 6],
            c_out: 3,
            k: [4, 4],
            params: ConvTranspose2dParams::new(2, 1, 0),
            bias: true,
        },
        ConvTCase {
            name: "2x3 kernel, stride [2,3], pad [1,0], output_padding [1,2]",
            x: [1, 3, 4, 5],
            c_out: 4,
            k: [2, 3],
            params: convt_params([2, 3], [1, 0], [1, 2], [1, 1]),
            bias: true,
        },
        ConvTCase {
            name: "2x3 kernel, stride [1,2], pad [0,1], output_padding [0,1]",
            x: [3, 7, 3, 4],
            c_out: 1,
            k: [2, 3],
            params: convt_params([1, 2], [0, 1], [0, 1], [1, 1]),
            bias: false,
        },
        ConvTCase { name: "3x3 dilation 2 pad 1", x: [1, 3, 5, 5], c_out: 3, k: [3, 3], params: convt_params([1, 1], [1, 1], [0, 0], [2, 2]), bias: true },
        ConvTCase {
            name: "3x3 dilation 2 stride 2 pad 2 output_padding 1",
            x: [3, 3, 4, 6],
            c_out: 2,
            k: [3, 3],
            params: convt_params([2, 2], [2, 2], [1, 1], [2, 2]),
            bias: false,
        },
        ConvTCase {
            name: "3x3 dilation 2 stride 1 output_padding 1 (op < dilation)",
            x: [1, 2, 4, 5],
            c_out: 3,
            k: [3, 3],
            params: convt_params([1, 1], [0, 1], [1, 1], [2, 2]),
            bias: true,
        },
    ]
}

fn check_conv_transpose2d_case(dev: TestDevice, case: &ConvTCase, dtype: DType, tolerance: f64, seed: u64) {
    let (dtype, tolerance) = (dev.dtype(dtype), dev.tolerance(tolerance));
    let [_, c_in, _, _] = case.x;
    let ws = [c_in, case.c_out, case.k[0], case.k[1]];
    let x = random(&case.x, -1.0, 1.0, seed);
    let w = random(&ws, -1.0, 1.0, seed + 1);
    let b = random(&[case.c_out], -1.0, 1.0, seed + 2);
    let bias_values = b.to_vec_f64();
    let (expected, expected_shape) = naive_conv_transpose2d(&x.to_vec_f64(), case.x, &w.to_vec_f64(), ws, case.bias.then_some(&bias_values[..]), case.params);
    let (xd, wd, bd) = (dev.put(&x.to_dtype(dtype).unwrap()), dev.put(&w.to_dtype(dtype).unwrap()), dev.put(&b.to_dtype(dtype).unwrap()));
    let y = xd.conv_transpose2d(&wd, case.bias.then_some(&bd), case.params).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert_eq!(y.dtype(), dtype, "{}", case.name);
    assert_eq!(y.shape(), expected_shape, "{}: output shape", case.name);
    let err = relative_error(&y.to_vec_f64(), &expected);
    assert!(err < tolerance, "{} ({dtype:?}): relative error {err:.3e}", case.name);
}

// ---- the adjoint identity ---------------------------------------------------------------------

/// `<conv2d(x, w), y> = <x, conv_transpose2d(y, w)>` when the transposed conv's output size is
/// picked (via output_padding) to be x's size.
/// The dot products are taken in f64 over the values the device holds.
#[allow(clippy::too_many_arguments)]
fn check_adjoint(dev: TestDevice, xs: [usize; 4], c_out: usize, k: [usize; 2], stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2], seed: u64) {
    let [n, c_in, h, w_] = xs;
    let x = dev.put(&random(&xs, -1.0, 1.0, seed));
    let w = dev.put(&random(&[c_out, c_in, k[0], k[1]], -1.0, 1.0, seed + 1));
    let conv = x.conv2d(&w, None, Conv2dParams { stride, padding, dilation }).unwrap();
    let [_, _, ho, wo] = shape4(&conv);
    let y = dev.put(&random(&[n, c_out, ho, wo], -1.0, 1.0, seed + 2));
    let output_padding = [(h + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) % stride[0], (w_ + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) % stride[1]];
    let back = y.conv_transpose2d(&w, None, ConvTranspose2dParams { stride, padding, output_padding, dilation }).unwrap();
    assert_eq!(back.shape(), xs, "adjoint geometry");
    let lhs = dot(&conv.to_vec_f64(), &y.to_vec_f64());
    let rhs = dot(&x.to_vec_f64(), &back.to_vec_f64());
    assert!((lhs - rhs).abs() <= dev.tolerance(1e-10) * lhs.abs().max(1.0), "<conv2d(x,w), y> = {lhs} but <x, conv_transpose2d(y,w)> = {rhs}");
}

per_device! {
// ---- conv2d forward ----------------------------------------------------------------------------

fn conv2d_f64_matches_direct_loop_reference_over_strides_paddings_dilations_kernels(dev) {
    for (i, case) in conv2d_cases().iter().enumerate() {
        check_conv2d_case(dev, case, DType::F64, 1e-12, 100 + 10 * i as u64);
    }
}

fn conv2d_f32_matches_f64_reference_on_the_same_cases(dev) {
    for (i, case) in conv2d_cases().iter().enumerate() {
        check_conv2d_case(dev, case, DType::F32, 1e-5, 300 + 10 * i as u64);
    }
}

fn conv2d_f32_large_odd_sizes_match_reference_through_threaded_gemm(dev) {
    // per image: [65, 297] · [297, 323] — above the GEMM's threading threshold and deeper than
    // one packed K slice
    let case = ConvCase { name: "x [2,33,17,19], w [65,33,3,3], s1 p1", x: [2, 33, 17, 19], c_out: 65, k: [3, 3], params: Conv2dParams::new(1, 1), bias: true };
    check_conv2d_case(dev, &case, DType::F32, 1e-5, 7);
    let case = ConvCase {
        name: "x [3,17,21,15], w [33,17,3,3], s2 p1 d2",
        x: [3, 17, 21, 15],
        c_out: 33,
        k: [3, 3],
        params: Conv2dParams::new(2, 1).with_dilation(2),
        bias: false,
    };
    check_conv2d_case(dev, &case, DType::F32, 1e-5, 8);
}

fn conv2d_reads_strided_input_and_weight_views_like_their_contiguous_copies(dev) {
    // x stored as [N, H, C, W] and permuted; the weight is a narrow of a larger tensor
    let x_nhcw = dev.put(&random(&[2, 7, 3, 9], -1.0, 1.0, 11));
    let x = x_nhcw.permute(&[0, 2, 1, 3]).unwrap();
    assert!(!x.is_contiguous());
    let w_big = dev.put(&random(&[5, 3, 3, 4], -1.0, 1.0, 12));
    let w = w_big.narrow(3, 1, 3).unwrap();
    assert!(!w.is_contiguous());
    let b = dev.put(&random(&[5], -1.0, 1.0, 13));
    let p = Conv2dParams::new(2, 1);
    let (expected, shape) = naive_conv2d(&x.to_vec_f64(), shape4(&x), &w.to_vec_f64(), shape4(&w), Some(&b.to_vec_f64()), p);
    let y = x.conv2d(&w, Some(&b), p).unwrap();
    assert_eq!(y.shape(), shape);
    assert!(relative_error(&y.to_vec_f64(), &expected) < dev.tolerance(1e-12));
}

fn conv2d_output_shape_follows_the_floor_formula(dev) {
    // (H + 2p − d(k−1) − 1)/s + 1 with a remainder dropped: (10 + 2 − 2 − 1)/2 + 1 = 5
    let x = dev.put(&random(&[1, 2, 10, 9], -1.0, 1.0, 14));
    let w = dev.put(&random(&[3, 2, 3, 2], -1.0, 1.0, 15));
    let y = x.conv2d(&w, None, conv_params([2, 3], [1, 0], [1, 1])).unwrap();
    assert_eq!(y.shape(), [1, 3, 5, 3]);
}

// ---- conv2d gradients ---------------------------------------------------------------------------

fn conv2d_gradcheck_x_weight_bias_3x3_stride1_pad1(dev) {
    let x = random(&[2, 3, 5, 6], -1.0, 1.0, 21);
    let w = random(&[4, 3, 3, 3], -1.0, 1.0, 22);
    let b = random(&[4], -1.0, 1.0, 23);
    dev.assert_gradcheck("conv2d 3x3 s1 p1", |t| t[0].conv2d(&t[1], Some(&t[2]), Conv2dParams::new(1, 1)), &[x, w, b]);
}

fn conv2d_gradcheck_pointwise_1x1_stride1_no_padding(dev) {
    // the image is its own im2col matrix: no copy forward, no col2im backward
    let x = random(&[3, 5, 4, 3], -1.0, 1.0, 24);
    let w = random(&[6, 5, 1, 1], -1.0, 1.0, 25);
    let b = random(&[6], -1.0, 1.0, 26);
    dev.assert_gradcheck("conv2d 1x1 s1 p0", |t| t[0].conv2d(&t[1], Some(&t[2]), Conv2dParams::default()), &[x, w, b]);
}

fn conv2d_gradcheck_stride2_pad1_no_bias_odd_sizes(dev) {
    let x = random(&[3, 1, 7, 5], -1.0, 1.0, 24);
    let w = random(&[7, 1, 3, 3], -1.0, 1.0, 25);
    dev.assert_gradcheck("conv2d 3x3 s2 p1", |t| t[0].conv2d(&t[1], None, Conv2dParams::new(2, 1)), &[x, w]);
}

fn conv2d_gradcheck_non_square_stride_padding_and_2x3_kernel(dev) {
    let x = random(&[1, 3, 7, 6], -1.0, 1.0, 26);
    let w = random(&[2, 3, 2, 3], -1.0, 1.0, 27);
    let b = random(&[2], -1.0, 1.0, 28);
    let p = conv_params([2, 1], [1, 0], [1, 1]);
    dev.assert_gradcheck("conv2d 2x3 s[2,1] p[1,0]", |t| t[0].conv2d(&t[1], Some(&t[2]), p), &[x, w, b]);
}

fn conv2d_gradcheck_dilation2(dev) {
    let x = random(&[1, 2, 8, 7], -1.0, 1.0, 29);
    let w = random(&[3, 2, 3, 3], -1.0, 1.0, 30);
    let b = random(&[3], -1.0, 1.0, 31);
    let p = conv_params([1, 2], [2, 1], [2, 2]);
    dev.assert_gradcheck("conv2d 3x3 d2", |t| t[0].conv2d(&t[1], Some(&t[2]), p), &[x, w, b]);
}

fn conv2d_gradcheck_1x1_kernel(dev) {
    let x = random(&[3, 7, 3, 4], -1.0, 1.0, 32);
    let w = random(&[5, 7, 1, 1], -1.0, 1.0, 33);
    let b = random(&[5], -1.0, 1.0, 34);
    dev.assert_gradcheck("conv2d 1x1", |t| t[0].conv2d(&t[1], Some(&t[2]), Conv2dParams::default()), &[x, w, b]);
}

fn conv2d_gradcheck_through_permuted_input_and_transposed_weight(dev) {
    // x stored [N, H, C, W] → permuted to NCHW; weight stored [Cin, Cout, kh, kw] → transposed
    let x = random(&[2, 5, 3, 6], -1.0, 1.0, 35);
    let w = random(&[3, 4, 3, 2], -1.0, 1.0, 36);
    let b = random(&[4], -1.0, 1.0, 37);
    dev.assert_gradcheck("conv2d strided", |t| t[0].permute(&[0, 2, 1, 3])?.conv2d(&t[1].transpose(0, 1)?, Some(&t[2]), Conv2dParams::new(2, 1)), &[x, w, b]);
}

fn conv2d_gradcheck_through_narrowed_input(dev) {
    let x = random(&[2, 3, 6, 9], -1.0, 1.0, 38);
    let w = random(&[2, 3, 3, 3], -1.0, 1.0, 39);
    dev.assert_gradcheck("conv2d narrowed x", |t| t[0].narrow(3, 2, 6)?.conv2d(&t[1], None, Conv2dParams::new(1, 1)), &[x, w]);
}

// ---- conv_transpose2d forward -------------------------------------------------------------------

fn conv_transpose2d_f64_matches_scatter_reference_over_strides_paddings_output_paddings_dilations(dev) {
    for (i, case) in conv_transpose2d_cases().iter().enumerate() {
        check_conv_transpose2d_case(dev, case, DType::F64, 1e-12, 500 + 10 * i as u64);
    }
}

fn conv_transpose2d_f32_matches_f64_reference_on_the_same_cases(dev) {
    for (i, case) in conv_transpose2d_cases().iter().enumerate() {
        check_conv_transpose2d_case(dev, case, DType::F32, 1e-5, 700 + 10 * i as u64);
    }
}

fn conv_transpose2d_f32_large_odd_sizes_match_reference(dev) {
    // the UNet upsampler geometry at odd channel counts: per image [272, 33]ᵀ · [33, 99]
    let case = ConvTCase {
        name: "x [2,33,9,11], w [33,17,4,4], s2 p1",
        x: [2, 33, 9, 11],
        c_out: 17,
        k: [4, 4],
        params: ConvTranspose2dParams::new(2, 1, 0),
        bias: true,
    };
    check_conv_transpose2d_case(dev, &case, DType::F32, 1e-5, 9);
    let case = ConvTCase {
        name: "x [1,65,13,15], w [65,33,3,3], s1 p1",
        x: [1, 65, 13, 15],
        c_out: 33,
        k: [3, 3],
        params: ConvTranspose2dParams::new(1, 1, 0),
        bias: false,
    };
    check_conv_transpose2d_case(dev, &case, DType::F32, 1e-5, 10);
}

fn conv_transpose2d_4x4_stride2_pad1_doubles_the_spatial_size(dev) {
    let x = dev.put(&random(&[1, 2, 5, 7], -1.0, 1.0, 40));
    let w = dev.put(&random(&[2, 3, 4, 4], -1.0, 1.0, 41));
    let y = x.conv_transpose2d(&w, None, ConvTranspose2dParams::new(2, 1, 0)).unwrap();
    assert_eq!(y.shape(), [1, 3, 10, 14]);
}

fn conv_transpose2d_reads_strided_input_and_weight_views_like_their_contiguous_copies(dev) {
    let x_nhcw = dev.put(&random(&[2, 4, 3, 5], -1.0, 1.0, 42));
    let x = x_nhcw.permute(&[0, 2, 1, 3]).unwrap();
    let w_oi = dev.put(&random(&[4, 3, 4, 4], -1.0, 1.0, 43)); // stored [Cout, Cin, ...]
    let w = w_oi.transpose(0, 1).unwrap();
    assert!(!x.is_contiguous() && !w.is_contiguous());
    let b = dev.put(&random(&[4], -1.0, 1.0, 44));
    let p = ConvTranspose2dParams::new(2, 1, 0);
    let (expected, shape) = naive_conv_transpose2d(&x.to_vec_f64(), shape4(&x), &w.to_vec_f64(), shape4(&w), Some(&b.to_vec_f64()), p);
    let y = x.conv_transpose2d(&w, Some(&b), p).unwrap();
    assert_eq!(y.shape(), shape);
    assert!(relative_error(&y.to_vec_f64(), &expected) < dev.tolerance(1e-12));
}

// ---- conv_transpose2d gradients -----------------------------------------------------------------

fn conv_transpose2d_gradcheck_x_weight_bias_stride1(dev) {
    let x = random(&[2, 3, 4, 5], -1.0, 1.0, 51);
    let w = random(&[3, 2, 3, 3], -1.0, 1.0, 52);
    let b = random(&[2], -1.0, 1.0, 53);
    dev.assert_gradcheck("conv_transpose2d s1 p1", |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), ConvTranspose2dParams::new(1, 1, 0)), &[x, w, b]);
}

fn conv_transpose2d_gradcheck_k4_stride2_pad1_upsampler(dev) {
    let x = random(&[2, 3, 3, 5], -1.0, 1.0, 54);
    let w = random(&[3, 2, 4, 4], -1.0, 1.0, 55);
    let b = random(&[2], -1.0, 1.0, 56);
    dev.assert_gradcheck("conv_transpose2d k4 s2 p1", |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), ConvTranspose2dParams::new(2, 1, 0)), &[x, w, b]);
}

fn conv_transpose2d_gradcheck_stride2_pad1_output_padding1(dev) {
    let x = random(&[1, 3, 4, 3], -1.0, 1.0, 57);
    let w = random(&[3, 7, 3, 3], -1.0, 1.0, 58);
    let b = random(&[7], -1.0, 1.0, 59);
    dev.assert_gradcheck("conv_transpose2d k3 s2 p1 op1", |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), ConvTranspose2dParams::new(2, 1, 1)), &[x, w, b]);
}

fn conv_transpose2d_gradcheck_non_square_stride_padding_output_padding(dev) {
    let x = random(&[1, 2, 3, 4], -1.0, 1.0, 60);
    let w = random(&[2, 3, 2, 3], -1.0, 1.0, 61);
    let b = random(&[3], -1.0, 1.0, 62);
    let p = convt_params([2, 3], [1, 0], [1, 2], [1, 1]);
    dev.assert_gradcheck("conv_transpose2d non-square", |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), p), &[x, w, b]);
}

fn conv_transpose2d_gradcheck_dilation2(dev) {
    let x = random(&[2, 2, 3, 4], -1.0, 1.0, 63);
    let w = random(&[2, 3, 3, 3], -1.0, 1.0, 64);
    let b = random(&[3], -1.0, 1.0, 65);
    let p = convt_params([2, 1], [1, 2], [1, 1], [2, 2]);
    dev.assert_gradcheck("conv_transpose2d d2", |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), p), &[x, w, b]);
}

fn conv_transpose2d_gradcheck_through_permuted_input_and_transposed_weight(dev) {
    let x = random(&[2, 4, 3, 3], -1.0, 1.0, 66); // stored [N, H, C, W]
    let w = random(&[2, 3, 4, 4], -1.0, 1.0, 67); // stored [Cout, Cin, kh, kw]
    let b = random(&[2], -1.0, 1.0, 68);
    dev.assert_gradcheck(
        "conv_transpose2d strided",
        |t| t[0].permute(&[0, 2, 1, 3])?.conv_transpose2d(&t[1].transpose(0, 1)?, Some(&t[2]), ConvTranspose2dParams::new(2, 1, 0)),
        &[x, w, b],
    );
}

// ---- the adjoint identity ---------------------------------------------------------------------

fn conv_transpose2d_is_the_adjoint_of_conv2d(dev) {
    check_adjoint(dev, [2, 3, 7, 9], 5, [3, 3], [1, 1], [1, 1], [1, 1], 71);
    check_adjoint(dev, [1, 7, 9, 8], 3, [3, 3], [2, 2], [1, 1], [1, 1], 72);
    check_adjoint(dev, [3, 2, 10, 11], 4, [4, 4], [2, 2], [1, 1], [1, 1], 73);
    check_adjoint(dev, [1, 3, 8, 7], 2, [2, 3], [2, 1], [1, 0], [1, 1], 74);
    check_adjoint(dev, [2, 1, 11, 9], 7, [3, 3], [2, 3], [2, 1], [2, 2], 75);
    check_adjoint(dev, [1, 3, 5, 6], 1, [1, 1], [2, 2], [0, 0], [1, 1], 76);
}

// ---- f32 backward on larger sizes ---------------------------------------------------------------

fn conv2d_f32_gradients_match_f64_gradients_on_large_odd_sizes(dev) {
    // the f64 gradients are proven by the finite-difference checks above; f32 runs the same
    // kernels through the f32 SIMD GEMM (threaded at this size)
    let inputs = [random(&[2, 33, 17, 19], -1.0, 1.0, 81), random(&[65, 33, 3, 3], -1.0, 1.0, 82), random(&[65], -1.0, 1.0, 83)];
    let f = |t: &[Tensor]| t[0].conv2d(&t[1], Some(&t[2]), Conv2dParams::new(1, 1));
    // the f64 reference gradients on the CPU
    let (g32, g64) = (dev.grads_in(DType::F32, &inputs, f), TestDevice::CPU.grads_in(DType::F64, &inputs, f));
    for (i, (a, e)) in g32.iter().zip(&g64).enumerate() {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "conv2d input {i}: f32 gradient relative error {err:.3e}");
    }
}

fn conv_transpose2d_f32_gradients_match_f64_gradients_on_large_odd_sizes(dev) {
    let inputs = [random(&[2, 33, 9, 11], -1.0, 1.0, 84), random(&[33, 17, 4, 4], -1.0, 1.0, 85), random(&[17], -1.0, 1.0, 86)];
    let f = |t: &[Tensor]| t[0].conv_transpose2d(&t[1], Some(&t[2]), ConvTranspose2dParams::new(2, 1, 0));
    // the f64 reference gradients on the CPU
    let (g32, g64) = (dev.grads_in(DType::F32, &inputs, f), TestDevice::CPU.grads_in(DType::F64, &inputs, f));
    for (i, (a, e)) in g32.iter().zip(&g64).enumerate() {
        let err = relative_error(a, e);
        assert!(err < dev.tolerance(1e-5), "conv_transpose2d input {i}: f32 gradient relative error {err:.3e}");
    }
}

// ---- partial gradients and non-contiguous output gradients ----------------------------------------

fn conv_gradients_when_only_one_input_requires_grad_match_the_full_backward(dev) {
    let (x, w, b) = (random(&[2, 3, 5, 6], -1.0, 1.0, 91), random(&[4, 3, 3, 3], -1.0, 1.0, 92), random(&[4], -1.0, 1.0, 93));
    let p = Conv2dParams::new(2, 1);
    let full = dev.grads_in(DType::F64, &[x.clone(), w.clone(), b.clone()], |t| t[0].conv2d(&t[1], Some(&t[2]), p));
    let (x, w, b) = (dev.put(&x), dev.put(&w), dev.put(&b));
    // only x
    let xv = x.variable();
    let y = xv.conv2d(&w, Some(&b), p).unwrap();
    let r = dev.put(&random(y.shape(), -1.0, 1.0, 999));
    let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&xv).unwrap().to_vec_f64(), full[0]);
    // only the weight
    let wv = w.variable();
    let y = x.conv2d(&wv, None, p).unwrap();
    let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&wv).unwrap().to_vec_f64(), full[1]);
    assert_eq!(g.len(), 1);

    let (x, w) = (random(&[2, 3, 4, 5], -1.0, 1.0, 94), random(&[3, 2, 4, 4], -1.0, 1.0, 95));
    let p = ConvTranspose2dParams::new(2, 1, 0);
    let full = dev.grads_in(DType::F64, &[x.clone(), w.clone()], |t| t[0].conv_transpose2d(&t[1], None, p));
    let (x, w) = (dev.put(&x), dev.put(&w));
    let xv = x.variable();
    let y = xv.conv_transpose2d(&w, None, p).unwrap();
    let r = dev.put(&random(y.shape(), -1.0, 1.0, 999));
    assert_eq!(y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap().get(&xv).unwrap().to_vec_f64(), full[0]);
    let wv = w.variable();
    let y = x.conv_transpose2d(&wv, None, p).unwrap();
    assert_eq!(y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap().get(&wv).unwrap().to_vec_f64(), full[1]);
}

fn conv_gradcheck_when_the_output_gradient_arrives_non_contiguous(dev) {
    // permuting the output makes the gradient that reaches the conv's backward a strided view
    let x = random(&[2, 3, 4, 5], -1.0, 1.0, 96);
    let w = random(&[4, 3, 2, 3], -1.0, 1.0, 97);
    let b = random(&[4], -1.0, 1.0, 98);
    dev.assert_gradcheck("conv2d, output permuted", |t| t[0].conv2d(&t[1], Some(&t[2]), Conv2dParams::new(1, 1))?.permute(&[3, 1, 0, 2]), &[x, w, b]);
    let x = random(&[2, 3, 3, 4], -1.0, 1.0, 99);
    let w = random(&[3, 2, 4, 4], -1.0, 1.0, 100);
    let b = random(&[2], -1.0, 1.0, 101);
    dev.assert_gradcheck(
        "conv_transpose2d, output transposed",
        |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), ConvTranspose2dParams::new(2, 1, 0))?.transpose(1, 3),
        &[x, w, b],
    );
}
}
