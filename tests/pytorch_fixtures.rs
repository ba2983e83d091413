//! ember against PyTorch: every file in `tests/fixtures/` (made by `scripts/make_fixtures.py`,
//! float64 math on float32-rounded inputs, stored as float32) is rebuilt here in ember, with the
//! op's configuration parsed from the file's metadata, and the output and every gradient
//! (backward of `sum(out * grad_out)`, i.e. `out.backward_with(&grad_out)`) are compared with
//! the stored values.
//!
//! Closeness is the project's scale-relative error, `max|actual − expected| / max|expected|`
//! ([`relative_error`]), below [`TOLERANCE`] = 1e-5 for every tensor. Ops run in f32 (the
//! engine's workhorse); the MLP + optimizer comparison runs in both f32 and f64 (see its test).
//!
//! The op tests run per device (`cpu::…`, `cuda::…`: the fixture's f32 tensors moved to the
//! device, the tolerance at least 2e-5 there); the MLP + optimizer test runs on the CPU.
//!
//! Each test also proves it looked at every tensor in its file ([`Fixture::finish`]), and
//! [`every_fixture_file_is_covered_by_a_test`] proves that every file is looked at, so a new
//! fixture (or a new tensor in an old one) cannot be silently ignored.

#[macro_use]
mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::str::FromStr;

use common::TestDevice;
use ember::tensor::io::{SafetensorsFile, load_safetensors};
use ember::tensor::ops::attention::AttentionMask;
use ember::tensor::ops::conv::{Conv2dParams, ConvTranspose2dParams};
use ember::tensor::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Device, Gradients, Result, Tensor};

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

/// Largest accepted `max|diff| / max|ref|` for every compared tensor.
const TOLERANCE: f64 = 1e-5;

/// The fixture files (stems) this file tests, one test each.
const COVERED: &[&str] = &[
    "attention",
    "conv2d_dilation2_pad2",
    "conv2d_stride2_pad1",
    "conv_transpose2d_k3s2p1op1",
    "conv_transpose2d_k4s2p1",
    "cross_entropy",
    "elementwise",
    "geglu",
    "group_norm",
    "layer_norm",
    "matmul",
    "mlp_adam",
    "reductions",
    "softmax",
    "upsample_nearest2d",
];

// ---- fixture access ----------------------------------------------------------------------------

/// A loaded fixture file that remembers which tensors a test read, so that [`Fixture::finish`]
/// can insist that none was left unchecked.
struct Fixture {
    name: &'static str,
    file: SafetensorsFile,
    used: RefCell<BTreeSet<String>>,
    /// Where [`Fixture::tensor`] puts the stored tensors.
    device: Device,
    /// The relative error accepted on that device.
    tolerance: f64,
}

impl Fixture {
    /// The fixture file `name`, its tensors handed out on the CPU.
    fn load(name: &'static str) -> Fixture {
        Fixture::load_on(name, TestDevice::CPU)
    }

    /// The fixture file `name`, its tensors handed out on `dev`.
    fn load_on(name: &'static str, dev: TestDevice) -> Fixture {
        let path = format!("{FIXTURE_DIR}{name}.safetensors");
        let file = load_safetensors(&path).unwrap_or_else(|e| panic!("loading {path}: {e}"));
        for (tensor_name, t) in &file.tensors {
            assert_eq!(t.dtype(), DType::F32, "{name}: {tensor_name} is stored as {:?}, expected f32", t.dtype());
        }
        Fixture { name, file, used: RefCell::new(BTreeSet::new()), device: dev.0, tolerance: dev.tolerance(TOLERANCE) }
    }

    fn has(&self, tensor: &str) -> bool {
        self.file.tensors.contains_key(tensor)
    }

    /// The stored tensor `tensor` (f32) on the fixture's device, marked as used.
    fn tensor(&self, tensor: &str) -> Tensor {
        let t = self.file.get(tensor).unwrap_or_else(|e| panic!("{}: {e}", self.name)).clone();
        self.used.borrow_mut().insert(tensor.to_string());
        t.to_device(self.device).unwrap_or_else(|e| panic!("{}: {tensor} to {:?}: {e}", self.name, self.device))
    }

    /// The stored tensor as a fresh variable (a leaf whose gradient `backward` returns).
    fn variable(&self, tensor: &str) -> Tensor {
        self.tensor(tensor).variable()
    }

    fn meta(&self, key: &str) -> &str {
        self.file.metadata.get(key).unwrap_or_else(|| panic!("{}: no metadata key {key:?} (have {:?})", self.name, self.file.metadata.keys()))
    }

    fn meta_parse<T: FromStr>(&self, key: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        let text = self.meta(key);
        text.trim().parse().unwrap_or_else(|e| panic!("{}: metadata {key}={text:?} does not parse: {e:?}", self.name))
    }

    /// A comma-separated list of integers ("10" or "3,4").
    fn meta_list(&self, key: &str) -> Vec<usize> {
        let text = self.meta(key);
        text.split(',').map(|s| s.trim().parse().unwrap_or_else(|e| panic!("{}: metadata {key}={text:?}: {e}", self.name))).collect()
    }

    /// A per-spatial-axis pair: "2" means (2, 2), "2,3" means (2, 3).
    fn meta_pair(&self, key: &str) -> [usize; 2] {
        match self.meta_list(key)[..] {
            [v] => [v, v],
            [h, w] => [h, w],
            ref other => panic!("{}: metadata {key} should hold one or two integers, got {other:?}", self.name),
        }
    }

    fn meta_bool(&self, key: &str) -> bool {
        match self.meta(key).trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            other => panic!("{}: metadata {key}={other:?} is not a boolean", self.name),
        }
    }

    /// Asserts that the metadata says what this test assumes (a configuration ember has no
    /// knob for, such as `groups`).
    #[track_caller]
    fn expect_meta(&self, key: &str, expected: &str) {
        assert_eq!(self.meta(key), expected, "{}: metadata {key}", self.name);
    }

    /// Compares `actual` with the stored tensor `expected` (shape, finiteness, relative error).
    #[track_caller]
    fn check(&self, actual: &Tensor, expected: &str) {
        self.check_in(actual, expected, "");
    }

    /// [`Fixture::check`] with `context` (e.g. the dtype a pass ran in) in the failure message.
    #[track_caller]
    fn check_in(&self, actual: &Tensor, expected: &str, context: &str) {
        let reference = self.tensor(expected);
        assert_eq!(actual.device(), self.device, "{}: {expected}{context} left the device", self.name);
        check_close(actual, &reference, self.tolerance, &format!("{}: {expected}{context}", self.name));
    }

    /// Compares the gradient of `variable` in `grads` with the stored tensor `expected`.
    #[track_caller]
    fn check_grad(&self, grads: &Gradients, variable: &Tensor, expected: &str) {
        let grad = grads.get(variable).unwrap_or_else(|| panic!("{}: backward returned no gradient for {expected}", self.name));
        self.check(grad, expected);
    }

    /// Asserts that every stored tensor was read (so compared, or used as an input).
    #[track_caller]
    fn finish(self) {
        let used = self.used.into_inner();
        let unused: Vec<&String> = self.file.tensors.keys().filter(|k| !used.contains(*k)).collect();
        assert!(unused.is_empty(), "{}: tensors in the fixture that no check looked at: {unused:?}", self.name);
    }
}

/// Panics unless `actual` has `expected`'s shape, is finite, and is within `tolerance`
/// ([`TOLERANCE`] on the CPU).
#[track_caller]
fn check_close(actual: &Tensor, expected: &Tensor, tolerance: f64, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    assert!(a.iter().all(|v| v.is_finite()), "{what}: non-finite values");
    let err = relative_error(&a, &e);
    assert!(err < tolerance, "{what}: relative error {err:.3e} ≥ {tolerance:.0e}\n got {a:?}\nwant {e:?}");
}

fn unwrap<T>(result: Result<T>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

// ---- coverage ----------------------------------------------------------------------------------

#[test]
fn every_fixture_file_is_covered_by_a_test() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(FIXTURE_DIR)
        .expect("fixtures folder")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let covered: BTreeSet<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(covered.len(), COVERED.len(), "COVERED lists a file twice");
    let untested: Vec<&String> = on_disk.difference(&covered).collect();
    let missing: Vec<&String> = covered.difference(&on_disk).collect();
    assert!(untested.is_empty(), "fixtures without a test in tests/pytorch_fixtures.rs: {untested:?}");
    assert!(missing.is_empty(), "COVERED names fixtures that are not in {FIXTURE_DIR}: {missing:?}");
}

// ---- ops -------------------------------------------------------------------------------------

/// conv2d with stride, padding and dilation from the metadata, bias included.
fn check_conv2d_fixture(dev: TestDevice, name: &'static str) {
    let f = Fixture::load_on(name, dev);
    f.expect_meta("op", "conv2d");
    f.expect_meta("groups", "1");
    let params = Conv2dParams { stride: f.meta_pair("stride"), padding: f.meta_pair("padding"), dilation: f.meta_pair("dilation") };
    let (x, w, b) = (f.variable("x"), f.variable("weight"), f.variable("bias"));
    let out = unwrap(x.conv2d(&w, Some(&b), params), "conv2d");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &x, "grad_x");
    f.check_grad(&grads, &w, "grad_weight");
    f.check_grad(&grads, &b, "grad_bias");
    f.finish();
}

/// conv_transpose2d (weight `[in, out, kh, kw]`, PyTorch's layout) from the metadata.
fn check_conv_transpose2d_fixture(dev: TestDevice, name: &'static str) {
    let f = Fixture::load_on(name, dev);
    f.expect_meta("op", "conv_transpose2d");
    f.expect_meta("groups", "1");
    f.expect_meta("weight_layout", "in,out,kh,kw");
    let params = ConvTranspose2dParams {
        stride: f.meta_pair("stride"),
        padding: f.meta_pair("padding"),
        output_padding: f.meta_pair("output_padding"),
        dilation: f.meta_pair("dilation"),
    };
    let (x, w, b) = (f.variable("x"), f.variable("weight"), f.variable("bias"));
    let out = unwrap(x.conv_transpose2d(&w, Some(&b), params), "conv_transpose2d");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &x, "grad_x");
    f.check_grad(&grads, &w, "grad_weight");
    f.check_grad(&grads, &b, "grad_bias");
    f.finish();
}

per_device! {
fn matmul_with_broadcast_batch_matches_pytorch_output_and_gradients(dev) {
    let f = Fixture::load_on("matmul", dev);
    f.expect_meta("op", "matmul");
    f.expect_meta("broadcast", "batch");
    let (a, b) = (f.variable("a"), f.variable("b"));
    let out = unwrap(a.matmul(&b), "matmul");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &a, "grad_a");
    f.check_grad(&grads, &b, "grad_b");
    f.finish();
}

fn conv2d_stride2_pad1_matches_pytorch_output_and_gradients(dev) {
    check_conv2d_fixture(dev, "conv2d_stride2_pad1");
}

fn conv2d_dilation2_pad2_matches_pytorch_output_and_gradients(dev) {
    check_conv2d_fixture(dev, "conv2d_dilation2_pad2");
}

fn conv_transpose2d_k4s2p1_matches_pytorch_output_and_gradients(dev) {
    check_conv_transpose2d_fixture(dev, "conv_transpose2d_k4s2p1");
}

fn conv_transpose2d_k3s2p1_output_padding1_matches_pytorch_output_and_gradients(dev) {
    check_conv_transpose2d_fixture(dev, "conv_transpose2d_k3s2p1op1");
}

fn group_norm_matches_pytorch_output_and_gradients(dev) {
    let f = Fixture::load_on("group_norm", dev);
    f.expect_meta("op", "group_norm");
    let (groups, eps) = (f.meta_parse::<usize>("num_groups"), f.meta_parse::<f64>("eps"));
    let (x, w, b) = (f.variable("x"), f.variable("weight"), f.variable("bias"));
    let out = unwrap(x.group_norm(groups, Some(&w), Some(&b), eps), "group_norm");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &x, "grad_x");
    f.check_grad(&grads, &w, "grad_weight");
    f.check_grad(&grads, &b, "grad_bias");
    f.finish();
}

fn geglu_matches_pytorch_output_and_gradient(dev) {
    let f = Fixture::load_on("geglu", dev);
    f.expect_meta("op", "geglu");
    f.expect_meta("gelu", "exact (erf)");
    let x = f.variable("x");
    let out = unwrap(x.geglu(), "geglu");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &x, "grad_x");
    f.finish();
}

fn cross_entropy_matches_pytorch_loss_and_gradient(dev) {
    let f = Fixture::load_on("cross_entropy", dev);
    f.expect_meta("op", "cross_entropy");
    f.expect_meta("reduction", "mean");
    let targets = f.meta_list("targets");
    let logits = f.variable("logits");
    // PyTorch's scalar is stored with shape [1]
    let out = unwrap(logits.cross_entropy(&targets).and_then(|l| l.reshape(&[1])), "cross_entropy");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &logits, "grad_logits");
    f.finish();
}

fn layer_norm_matches_pytorch_output_and_gradients(dev) {
    let f = Fixture::load_on("layer_norm", dev);
    f.expect_meta("op", "layer_norm");
    let (shape, eps) = (f.meta_list("normalized_shape"), f.meta_parse::<f64>("eps"));
    let (x, w, b) = (f.variable("x"), f.variable("weight"), f.variable("bias"));
    let out = unwrap(x.layer_norm(&shape, Some(&w), Some(&b), eps), "layer_norm");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &x, "grad_x");
    f.check_grad(&grads, &w, "grad_weight");
    f.check_grad(&grads, &b, "grad_bias");
    f.finish();
}

fn softmax_and_log_softmax_on_last_and_middle_axes_match_pytorch_outputs_and_gradients(dev) {
    let f = Fixture::load_on("softmax", dev);
    f.expect_meta("op", "softmax");
    for name in ["softmax_dim2", "softmax_dim1", "log_softmax_dim2"] {
        // metadata like "dim=2 (-1)": the axis is the integer after "dim="
        let spec = f.meta(name);
        let axis: isize = spec
            .strip_prefix("dim=")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("softmax: metadata {name}={spec:?} names no axis"));
        let x = f.variable("x");
        let out = if name.starts_with("log_") { x.log_softmax(axis) } else { x.softmax(axis) };
        let out = unwrap(out, name);
        f.check(&out, name);
        let grads = unwrap(out.backward_with(&f.tensor(&format!("grad_out_{name}"))), "backward");
        f.check_grad(&grads, &x, &format!("grad_x_{name}"));
    }
    f.finish();
}

fn scaled_dot_product_attention_matches_pytorch_output_and_gradients(dev) {
    let f = Fixture::load_on("attention", dev);
    f.expect_meta("op", "scaled_dot_product_attention");
    f.expect_meta("mask", "none");
    assert!(!f.meta_bool("is_causal"), "attention: the first case is causal");
    assert_eq!(f.meta_parse::<f64>("dropout_p"), 0.0, "attention: dropout");
    let scale: f64 = f.meta_parse("scale");
    let (q, k, v) = (f.variable("q"), f.variable("k"), f.variable("v"));
    let out = unwrap(Tensor::scaled_dot_product_attention(&q, &k, &v, Some(scale)), "attention");
    f.check(&out, "out");
    // the default scale is the same 1/√d
    let default_scale = unwrap(Tensor::scaled_dot_product_attention(&q, &k, &v, None), "attention");
    check_close(&default_scale, &f.tensor("out"), f.tolerance, "attention: out with the default scale");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &q, "grad_q");
    f.check_grad(&grads, &k, "grad_k");
    f.check_grad(&grads, &v, "grad_v");
    // the masked case: a key-padding mask [B, Sk], in PyTorch a boolean attn_mask [B, 1, 1, Sk]
    assert!(f.meta("masked_mask").contains("nonzero: attend"), "attention: the masked case's mask convention");
    let (q, k, v) = (f.variable("masked_q"), f.variable("masked_k"), f.variable("masked_v"));
    let key_mask = f.tensor("masked_key_mask");
    let mask = AttentionMask { key_padding: Some(&key_mask), causal: false };
    let out = unwrap(Tensor::scaled_dot_product_attention_masked(&q, &k, &v, mask, Some(scale)), "masked attention");
    f.check(&out, "masked_out");
    let grads = unwrap(out.backward_with(&f.tensor("masked_grad_out")), "masked backward");
    f.check_grad(&grads, &q, "masked_grad_q");
    f.check_grad(&grads, &k, "masked_grad_k");
    f.check_grad(&grads, &v, "masked_grad_v");
    // the causal cases: PyTorch's is_causal (top-left aligned), with Sq = Sk, Sq < Sk, Sq > Sk
    for case in ["causal", "causal_wide", "causal_tall"] {
        assert!(f.meta_bool(&format!("{case}_is_causal")), "attention: the {case} case is not causal");
        assert!(f.meta(&format!("{case}_alignment")).contains("top-left"), "attention: the {case} case's alignment");
        let (q, k, v) = (f.variable(&format!("{case}_q")), f.variable(&format!("{case}_k")), f.variable(&format!("{case}_v")));
        let mask = AttentionMask { key_padding: None, causal: true };
        let out = unwrap(Tensor::scaled_dot_product_attention_masked(&q, &k, &v, mask, Some(scale)), case);
        f.check(&out, &format!("{case}_out"));
        let grads = unwrap(out.backward_with(&f.tensor(&format!("{case}_grad_out"))), "causal backward");
        for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
            f.check_grad(&grads, var, &format!("{case}_grad_{name}"));
        }
    }
    f.finish();
}

fn elementwise_functions_match_pytorch_outputs_and_each_gradient(dev) {
    let f = Fixture::load_on("elementwise", dev);
    f.expect_meta("op", "elementwise");
    f.expect_meta("gelu_approximate", "none");
    f.expect_meta("inputs", "x: gelu,silu,sigmoid,tanh,exp,sin,cos; xp: log,sqrt,pow");
    let power: f64 = f.meta_parse("pow_exponent");
    let grad_out = f.tensor("grad_out");
    type Op = Box<dyn Fn(&Tensor) -> Result<Tensor>>;
    let ops: Vec<(&str, &str, Op)> = vec![
        ("gelu", "x", Box::new(|t: &Tensor| t.gelu())),
        ("silu", "x", Box::new(|t: &Tensor| t.silu())),
        ("sigmoid", "x", Box::new(|t: &Tensor| t.sigmoid())),
        ("tanh", "x", Box::new(|t: &Tensor| t.tanh())),
        ("exp", "x", Box::new(|t: &Tensor| t.exp())),
        ("sin", "x", Box::new(|t: &Tensor| t.sin())),
        ("cos", "x", Box::new(|t: &Tensor| t.cos())),
        ("log", "xp", Box::new(|t: &Tensor| t.log())),
        ("sqrt", "xp", Box::new(|t: &Tensor| t.sqrt())),
        ("pow", "xp", Box::new(move |t: &Tensor| t.powf(power))),
    ];
    for (name, input, op) in &ops {
        let x = f.variable(input);
        let out = unwrap(op(&x), name);
        f.check(&out, name);
        let grads = unwrap(out.backward_with(&grad_out), name);
        f.check_grad(&grads, &x, &format!("grad_{name}"));
    }
    f.finish();
}

fn reductions_var_mean_amax_sum_match_pytorch(dev) {
    let f = Fixture::load_on("reductions", dev);
    f.expect_meta("op", "reductions");
    // The metadata holds the PyTorch expressions; make sure they are the ones rebuilt here.
    f.expect_meta("var_dim1_unbiased", "x.var(dim=1, unbiased=True, keepdim=True)");
    f.expect_meta("var_dims02_biased", "x.var(dim=(0,2), unbiased=False, keepdim=False)");
    f.expect_meta("mean_dim2", "x.mean(2)");
    f.expect_meta("amax_dim1", "x.amax(1)");
    f.expect_meta("sum_all", "x.sum().reshape(1)");
    type Op = Box<dyn Fn(&Tensor) -> Result<Tensor>>;
    let ops: Vec<(&str, Op)> = vec![
        ("var_dim1_unbiased", Box::new(|x: &Tensor| x.var(&[1], true, 1))),
        ("var_dims02_biased", Box::new(|x: &Tensor| x.var(&[0, 2], false, 0))),
        ("mean_dim2", Box::new(|x: &Tensor| x.mean(&[2], false))),
        ("amax_dim1", Box::new(|x: &Tensor| x.max(&[1], false))),
        ("sum_all", Box::new(|x: &Tensor| x.sum_all()?.reshape(&[1]))),
    ];
    for (name, op) in &ops {
        let x = f.variable("x");
        let out = unwrap(op(&x), name);
        f.check(&out, name);
        // The current fixture stores forward values only; should a regenerated one add
        // gradients (softmax's naming: grad_out_<name>, grad_x_<name>), check them too.
        let (grad_out_name, grad_name) = (format!("grad_out_{name}"), format!("grad_x_{name}"));
        if f.has(&grad_out_name) {
            let grads = unwrap(out.backward_with(&f.tensor(&grad_out_name)), name);
            f.check_grad(&grads, &x, &grad_name);
        }
    }
    f.finish();
}

fn upsample_nearest2d_matches_pytorch_output_and_gradient(dev) {
    let f = Fixture::load_on("upsample_nearest2d", dev);
    f.expect_meta("op", "upsample_nearest2d");
    f.expect_meta("mode", "nearest");
    let scale: usize = f.meta_parse("scale_factor");
    let x = f.variable("x");
    let out = unwrap(x.upsample_nearest2d(scale), "upsample_nearest2d");
    f.check(&out, "out");
    let grads = unwrap(out.backward_with(&f.tensor("grad_out")), "backward");
    f.check_grad(&grads, &x, "grad_x");
    f.finish();
}
}

// ---- MLP and optimizers ----------------------------------------------------------------------

/// The tiny MLP of `mlp_adam`: `fc1 = Linear(6, 16) → SiLU → fc2 = Linear(16, 3)`, with
/// `Linear(x) = x·Wᵀ + b`, and its MSE loss (mean over all elements).
struct Mlp {
    dtype: DType,
    x: Tensor,
    target: Tensor,
    names: Vec<String>,
}

impl Mlp {
    fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        x.matmul(&w.transpose(-1, -2)?)?.add(b)
    }

    /// The loss at `params` (ordered as `names`: fc1.weight, fc1.bias, fc2.weight, fc2.bias).
    fn loss(&self, params: &[Tensor]) -> Result<Tensor> {
        let [w1, b1, w2, b2] = params else { panic!("the MLP has four parameters") };
        let hidden = Mlp::linear(&self.x, w1, b1)?.silu()?;
        Mlp::linear(&hidden, w2, b2)?.mse_loss(&self.target)
    }

    fn gradients(&self, params: &[Tensor]) -> Gradients {
        unwrap(unwrap(self.loss(params), "mlp loss").backward(), "mlp backward")
    }

    /// Fresh variables holding the initial parameters `param.*`, in `self.dtype`, each in its
    /// own storage (the optimizers update in place; the fixture's tensors must stay intact).
    fn initial_params(&self, f: &Fixture) -> Vec<Tensor> {
        self.names
            .iter()
            .map(|n| {
                let stored = f.tensor(&format!("param.{n}"));
                unwrap(stored.to_dtype(self.dtype).and_then(|t| t.deep_copy()), "initial params").variable()
            })
            .collect()
    }

    /// Checks `params` against the stored `<prefix>.<name>` tensors.
    #[track_caller]
    fn check_params(&self, f: &Fixture, params: &[Tensor], prefix: &str) {
        for (p, n) in params.iter().zip(&self.names) {
            f.check_in(p, &format!("{prefix}.{n}"), &self.context());
        }
    }

    fn context(&self) -> String {
        format!(" (in {:?})", self.dtype)
    }
}

/// Precision: the whole comparison runs twice, in f32 and in f64 (the loaded f32 tensors
/// converted with `to_dtype`), both at the 1e-5 tolerance.
///
/// - f32 is what training uses. Adam's first step, `m / (√v + ε)` ≈ `g / |g|`, amplifies f32
///   rounding in small gradient elements, yet the worst error measured was 1.0e-6
///   (adam_step3.fc2.bias; the one-step Adam/AdamW results about 3e-7), a 10× margin.
/// - f64 matches the way the fixture was made (exact f64 math on the stored f32 values), so
///   it pins the update formulas themselves: measured errors were ≤ 6e-8, i.e. just the
///   float32 rounding of the stored references.
#[test]
fn mlp_loss_gradients_and_adam_adamw_sgd_steps_match_pytorch_in_f32_and_f64() {
    let f = Fixture::load("mlp_adam");
    f.expect_meta("op", "mlp_optimizers");
    f.expect_meta("model", "fc1=Linear(6,16) -> SiLU -> fc2=Linear(16,3)");
    f.expect_meta("loss", "mse_loss(mlp(x), target, reduction=mean)");
    f.expect_meta("param_names", "fc1.weight,fc1.bias,fc2.weight,fc2.bias");
    assert!(!f.meta_bool("adam_amsgrad"), "mlp_adam: amsgrad is not implemented in ember");
    for dtype in [DType::F32, DType::F64] {
        check_mlp_and_optimizers(&f, dtype);
    }
    f.finish();
}

fn check_mlp_and_optimizers(f: &Fixture, dtype: DType) {
    let names: Vec<String> = f.meta("param_names").split(',').map(str::to_string).collect();
    let to = |t: Tensor| unwrap(t.to_dtype(dtype), "to_dtype");
    let mlp = Mlp { dtype, x: to(f.tensor("x")), target: to(f.tensor("target")), names };

    // loss and the four gradients at the initial parameters
    let params = mlp.initial_params(f);
    let loss = unwrap(mlp.loss(&params), "mlp loss");
    assert_eq!(loss.dtype(), dtype);
    f.check_in(&unwrap(loss.reshape(&[1]), "reshape"), "loss", &mlp.context());
    let grads = unwrap(loss.backward(), "mlp backward");
    for (p, n) in params.iter().zip(&mlp.names) {
        let grad = grads.get(p).unwrap_or_else(|| panic!("mlp_adam: no gradient for {n}"));
        assert_eq!(grad.dtype(), dtype, "mlp_adam: gradient of {n}");
        f.check_in(grad, &format!("grad.{n}"), &mlp.context());
    }

    // Adam: one step, then two more with the same optimizer (gradients recomputed each step)
    let adam_config = |prefix: &str, decoupled: bool| AdamConfig {
        lr: f.meta_parse(&format!("{prefix}_lr")),
        beta1: f.meta_parse(&format!("{prefix}_beta1")),
        beta2: f.meta_parse(&format!("{prefix}_beta2")),
        eps: f.meta_parse(&format!("{prefix}_eps")),
        weight_decay: f.meta_parse(&format!("{prefix}_weight_decay")),
        decoupled_weight_decay: decoupled,
    };
    let params = mlp.initial_params(f);
    let mut adam = unwrap(Adam::new(params.clone(), adam_config("adam", false)), "Adam::new");
    unwrap(adam.step(&mlp.gradients(&params)), "adam step 1");
    mlp.check_params(f, &params, "adam_step1");
    for step in 2..=3 {
        unwrap(adam.step(&mlp.gradients(&params)), &format!("adam step {step}"));
    }
    mlp.check_params(f, &params, "adam_step3");

    // AdamW: one step from the initial parameters
    let params = mlp.initial_params(f);
    let mut adamw = unwrap(Adam::new(params.clone(), adam_config("adamw", true)), "AdamW::new");
    unwrap(adamw.step(&mlp.gradients(&params)), "adamw step");
    mlp.check_params(f, &params, "adamw_step1");

    // SGD with momentum: two steps from the initial parameters
    let sgd_config = SgdConfig {
        lr: f.meta_parse("sgd_lr"),
        momentum: f.meta_parse("sgd_momentum"),
        dampening: f.meta_parse("sgd_dampening"),
        weight_decay: f.meta_parse("sgd_weight_decay"),
        nesterov: f.meta_bool("sgd_nesterov"),
    };
    let params = mlp.initial_params(f);
    let mut sgd = unwrap(Sgd::new(params.clone(), sgd_config), "Sgd::new");
    unwrap(sgd.step(&mlp.gradients(&params)), "sgd step 1");
    mlp.check_params(f, &params, "sgd_step1");
    unwrap(sgd.step(&mlp.gradients(&params)), "sgd step 2");
    mlp.check_params(f, &params, "sgd_step2");
}
