//! The UNet against diffusers' `UNet2DModel` (fixtures by `scripts/make_unet_fixtures.py`,
//! computed in float64 by PyTorch): same weights, inputs and timesteps give the same output,
//! and for the `tiny` preset one training step gives the same loss, every parameter's
//! gradient and the same Adam update. Tolerance: 1e-4, relative to each tensor's scale
//! (`max|diff| / max|ref|`).

use std::collections::BTreeMap;

use ember::tensor::io::{SafetensorsFile, load_safetensors};
use ember::tensor::optim::{Adam, AdamConfig};
use ember::tensor::rng::Rng;
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Tensor};
use ember::unet::module::{load_weights, named_parameters};
use ember::unet::{ForwardContext, UNet, UNetConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unet/");
const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> SafetensorsFile {
    load_safetensors(format!("{FIXTURES}{name}.safetensors")).unwrap()
}

#[track_caller]
fn assert_matches(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let err = relative_error(&actual.to_vec_f64(), &expected.to_vec_f64());
    assert!(err < TOLERANCE, "{what}: relative error {err:.2e}");
}

/// The config the fixture was made with, as diffusers kwargs, must equal ember's preset.
fn check_config(file: &SafetensorsFile, preset: &UNetConfig) {
    let from_fixture = UNetConfig::from_json(&file.metadata["config"]).unwrap();
    assert_eq!(&from_fixture, preset, "the fixture's diffusers config differs from the preset");
}

fn timesteps(file: &SafetensorsFile, name: &str) -> Vec<f64> {
    file.get(name).unwrap().to_vec_f64()
}

fn tiny_model(dtype: DType) -> UNet {
    let weights = fixture("unet_tiny_weights");
    check_config(&weights, &UNetConfig::tiny(1));
    let model = UNet::new(&UNetConfig::tiny(1), dtype, &mut Rng::new(0)).unwrap();
    load_weights(&model, &weights.tensors).unwrap();
    model
}

fn eval_context(rng: &mut Rng) -> ForwardContext<'_> {
    ForwardContext { training: false, rng }
}

#[test]
fn tiny_unet_forward_matches_diffusers_in_f32() {
    let io = fixture("unet_tiny_io");
    let model = tiny_model(DType::F32);
    let mut rng = Rng::new(0);
    let out = model.forward(io.get("x_t").unwrap(), &timesteps(&io, "timesteps"), &mut eval_context(&mut rng)).unwrap();
    assert_matches(&out, io.get("eps_pred").unwrap(), "eps_pred");
}

/// One training step in f64 (so that the comparison measures the math, not f32 rounding):
/// loss, every gradient, and the Adam update; then the gradients again in f32.
#[test]
fn tiny_unet_training_step_matches_pytorch_loss_gradients_and_adam_update() {
    let io = fixture("unet_tiny_io");
    let ts = timesteps(&io, "timesteps");
    let mut checked = 0;
    for dtype in [DType::F64, DType::F32] {
        let model = tiny_model(dtype);
        let x_t = io.get("x_t").unwrap().to_dtype(dtype).unwrap();
        let noise = io.get("noise").unwrap().to_dtype(dtype).unwrap();
        let mut rng = Rng::new(0);
        let prediction = model.forward(&x_t, &ts, &mut eval_context(&mut rng)).unwrap();
        let loss = prediction.mse_loss(&noise).unwrap();
        assert_matches(&loss.reshape(&[1]).unwrap(), io.get("loss").unwrap(), "loss");
        let grads = loss.backward().unwrap();
        let params = named_parameters(&model);
        let largest_gradient =
            params.iter().map(|(n, _)| io.get(&format!("grad.{n}")).unwrap().to_vec_f64().iter().fold(0.0f64, |m, v| m.max(v.abs()))).fold(0.0, f64::max);
        for (name, p) in &params {
            let grad = grads.get(p).unwrap_or_else(|| panic!("no gradient for {name}"));
            if name.ends_with("to_k.bias") {
                // Exactly zero in exact arithmetic: adding b to every key adds q·b to a whole
                // row of scores, which softmax ignores. Both sides hold only rounding noise, so
                // check that ember's is noise-sized instead of comparing two noises.
                let noise_bound = if dtype == DType::F64 { 1e-12 } else { 1e-5 } * largest_gradient;
                let worst = grad.to_vec_f64().iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(worst < noise_bound, "{dtype:?} grad.{name}: {worst:e} is not ~0");
            } else {
                assert_matches(grad, io.get(&format!("grad.{name}")).unwrap(), &format!("{dtype:?} grad.{name}"));
            }
            checked += 1;
        }
        if dtype == DType::F64 {
            let before: BTreeMap<String, Tensor> = params.iter().map(|(n, p)| (n.clone(), p.deep_copy().unwrap())).collect();
            let mut adam = Adam::new(params.iter().map(|(_, p)| p.clone()).collect(), AdamConfig::adam(2e-4)).unwrap();
            adam.step(&grads).unwrap();
            // Adam's first step is −lr·g/(|g| + ε): where |g| is within a few ε of zero, a
            // gradient difference of 1e-11 (f32 time-embedding rounding: PyTorch's sin/exp and
            // ours differ in the last bit) moves the step by more than 1e-4·lr. Those elements
            // are compared against the step computed from ember's own gradient instead; every
            // other element against PyTorch's step.
            let mut ill_conditioned = 0;
            for (name, p) in &params {
                let update = p.sub(&before[name]).unwrap().to_vec_f64();
                if name.ends_with("to_k.bias") {
                    // its gradient is rounding noise (see above), so its step is noise too
                    assert!(update.iter().all(|u| u.abs() < 1e-3 * 2e-4), "adam_update.{name} is not ~0");
                    continue;
                }
                let expected = io.get(&format!("adam_update.{name}")).unwrap().to_vec_f64();
                let reference_grad = io.get(&format!("grad.{name}")).unwrap().to_vec_f64();
                let own_grad = grads.get(p).unwrap().to_vec_f64();
                let scale = reference_grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
                // gradients agree to ~1e-7 of their scale; that moves Adam's first step by
                // ε·δ/(|g| + ε)² (in units of lr), which must stay well under the tolerance
                let gradient_uncertainty = 1e-7 * scale;
                let target: Vec<f64> = (0..update.len())
                    .map(|i| {
                        let step_sensitivity = 1e-8 * gradient_uncertainty / (reference_grad[i].abs() + 1e-8).powi(2);
                        if step_sensitivity > 1e-5 {
                            ill_conditioned += 1;
                            -2e-4 * own_grad[i] / (own_grad[i].abs() + 1e-8)
                        } else {
                            expected[i]
                        }
                    })
                    .collect();
                let err = relative_error(&update, &target);
                assert!(err < TOLERANCE, "adam_update.{name}: relative error {err:.2e}");
            }
            let total: usize = params.iter().map(|(_, p)| p.numel()).sum();
            assert!(ill_conditioned * 100 < total, "{ill_conditioned} of {total} elements ill-conditioned: the check is vacuous");
        }
    }
    assert_eq!(checked, 2 * named_parameters(&tiny_model(DType::F32)).len());
}

#[test]
fn ddpm_cifar10_unet_forward_matches_diffusers_with_procedural_weights() {
    let io = fixture("unet_ddpm_cifar10_io");
    check_config(&io, &UNetConfig::ddpm_cifar10());
    let config = UNetConfig::ddpm_cifar10();
    let model = UNet::new(&config, DType::F32, &mut Rng::new(0)).unwrap();
    assert_eq!(io.metadata["parameter_count"], ember::unet::module::parameter_count(&model).to_string());
    ember::unet::testing::fill_procedural(&model).unwrap();
    let mut rng = Rng::new(0);
    let out = model.forward(io.get("x").unwrap(), &timesteps(&io, "timesteps"), &mut eval_context(&mut rng)).unwrap();
    assert_matches(&out, io.get("out").unwrap(), "out");
}

#[test]
fn every_unet_fixture_is_used() {
    let mut files: Vec<String> =
        std::fs::read_dir(FIXTURES).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".safetensors")).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "unet_class_cond_table_io.safetensors",
            "unet_class_cond_timestep_io.safetensors",
            "unet_ddpm_cifar10_io.safetensors",
            "unet_tiny_io.safetensors",
            "unet_tiny_weights.safetensors"
        ]
    );
}

/// A class-conditional `UNet2DModel` of diffusers (fixture `unet_class_cond_<kind>_io`: its
/// random init, 3 images with labels 7, 0, 3) rebuilt from the fixture's config and weights:
/// the output, the loss and every parameter's gradient in f64 and f32, on the CPU; and the
/// same step on the CUDA device of the build (f32) against the CPU's.
fn check_class_conditional(kind: &str) {
    let io = fixture(&format!("unet_class_cond_{kind}_io"));
    let config = UNetConfig::from_json(&io.metadata["config"]).unwrap();
    let ts = timesteps(&io, "timesteps");
    let labels: Vec<usize> = io.get("class_labels").unwrap().to_vec_f64().iter().map(|&l| l as usize).collect();
    assert_eq!(labels, [7, 0, 3]);
    let weights: BTreeMap<String, Tensor> =
        io.tensors.iter().filter_map(|(name, t)| name.strip_prefix("weight.").map(|n| (n.to_string(), t.clone()))).collect();
    let mut cpu_f32_grads = BTreeMap::new();
    for dtype in [DType::F64, DType::F32] {
        let model = UNet::new(&config, dtype, &mut Rng::new(0)).unwrap();
        assert!(model.class_embedding.is_some(), "{kind}: a class-conditional model");
        load_weights(&model, &weights).unwrap();
        let x_t = io.get("x_t").unwrap().to_dtype(dtype).unwrap();
        let noise = io.get("noise").unwrap().to_dtype(dtype).unwrap();
        let mut rng = Rng::new(0);
        let prediction = model.forward_with_classes(&x_t, &ts, Some(&labels), &mut eval_context(&mut rng)).unwrap();
        assert_matches(&prediction, io.get("eps_pred").unwrap(), &format!("{kind} {dtype:?} eps_pred"));
        let loss = prediction.mse_loss(&noise).unwrap();
        assert_matches(&loss.reshape(&[1]).unwrap(), io.get("loss").unwrap(), &format!("{kind} {dtype:?} loss"));
        let grads = loss.backward().unwrap();
        let params = named_parameters(&model);
        assert_eq!(params.len(), weights.len(), "{kind}: every diffusers parameter, no other");
        for (name, p) in &params {
            let grad = grads.get(p).unwrap_or_else(|| panic!("no gradient for {name}"));
            if name.ends_with("to_k.bias") {
                // zero in exact arithmetic (see the tiny model's test): only rounding noise
                assert!(grad.to_vec_f64().iter().all(|v| v.abs() < 1e-5), "{kind} {dtype:?} grad.{name} is not ~0");
                continue;
            }
            assert_matches(grad, io.get(&format!("grad.{name}")).unwrap(), &format!("{kind} {dtype:?} grad.{name}"));
            if dtype == DType::F32 {
                cpu_f32_grads.insert(name.clone(), grad.to_vec_f64());
            }
        }
        // the class embedding is learned: its gradient reaches the rows of the labels used
        if let Some(ember::unet::ClassEmbedding::Table(table)) = &model.class_embedding {
            let rows = grads.get(table).unwrap().to_vec_f64();
            let row_norm = |r: usize| rows[r * table.shape()[1]..][..table.shape()[1]].iter().map(|v| v.abs()).sum::<f64>();
            assert!([7, 0, 3].iter().all(|&r| row_norm(r) > 0.0) && row_norm(1) == 0.0, "{kind}: rows of the labels only");
        }
    }
    // the same f32 step on the CUDA device of the build
    if let Ok(_backend) = ember::tensor::cuda::device(0) {
        let device = ember::tensor::Device::Cuda(0);
        let model = UNet::new(&config, DType::F32, &mut Rng::new(0)).unwrap();
        load_weights(&model, &weights).unwrap();
        ember::unet::module::to_device(&model, device).unwrap();
        let x_t = io.get("x_t").unwrap().to_device(device).unwrap();
        let noise = io.get("noise").unwrap().to_device(device).unwrap();
        let mut rng = Rng::new(0);
        let prediction = model.forward_with_classes(&x_t, &ts, Some(&labels), &mut eval_context(&mut rng)).unwrap();
        assert_eq!(prediction.device(), device);
        assert_matches(&prediction, io.get("eps_pred").unwrap(), &format!("{kind} on {device:?}: eps_pred"));
        let grads = prediction.mse_loss(&noise).unwrap().backward().unwrap();
        for (name, p) in named_parameters(&model) {
            if let Some(cpu) = cpu_f32_grads.get(&name) {
                let err = relative_error(&grads.get(&p).unwrap().to_vec_f64(), cpu);
                assert!(err < TOLERANCE, "{kind} on {device:?}: grad.{name} against the CPU's, relative error {err:.2e}");
            }
        }
    }
}

#[test]
fn class_conditional_unet_with_a_table_of_class_embeddings_matches_diffusers() {
    check_class_conditional("table");
}

#[test]
fn class_conditional_unet_with_timestep_class_embeddings_matches_diffusers() {
    check_class_conditional("timestep");
}

#[test]
fn class_labels_are_required_exactly_by_class_conditional_models_and_checked() {
    let io = fixture("unet_class_cond_table_io");
    let config = UNetConfig::from_json(&io.metadata["config"]).unwrap();
    let model = UNet::new(&config, DType::F32, &mut Rng::new(0)).unwrap();
    assert_eq!(model.num_classes(), Some(10));
    let x = Tensor::zeros(&[2, 1, 16, 16], DType::F32);
    let mut rng = Rng::new(0);
    let mut ctx = eval_context(&mut rng);
    let message = |r: ember::unet::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message(model.forward(&x, &[1.0, 2.0], &mut ctx)).contains("class-conditional"));
    assert!(message(model.forward_with_classes(&x, &[1.0, 2.0], Some(&[1]), &mut ctx)).contains("1 class labels for a batch of 2"));
    assert!(message(model.forward_with_classes(&x, &[1.0, 2.0], Some(&[1, 10]), &mut ctx)).contains("out of range"));
    let unconditional = UNet::new(&UNetConfig { class_embed_type: None, num_class_embeds: None, ..config }, DType::F32, &mut Rng::new(0)).unwrap();
    assert_eq!(unconditional.num_classes(), None);
    assert!(message(unconditional.forward_with_classes(&x, &[1.0, 2.0], Some(&[1, 2]), &mut ctx)).contains("without a class embedding"));
}

#[test]
fn weights_under_diffusers_deprecated_attention_names_load_as_diffusers_renames_them() {
    let weights = fixture("unet_tiny_weights");
    let old_names: BTreeMap<String, Tensor> = weights
        .tensors
        .iter()
        .map(|(name, t)| {
            let old = name.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.").replace(".to_out.0.", ".proj_attn.");
            (old, t.clone())
        })
        .collect();
    assert!(old_names.keys().any(|k| k.ends_with("attentions.0.proj_attn.weight")), "the fixture has attention blocks");
    assert_eq!(ember::unet::module::current_attention_name("mid_block.attentions.0.query.bias").as_deref(), Some("mid_block.attentions.0.to_q.bias"));
    assert_eq!(ember::unet::module::current_attention_name("down_blocks.0.resnets.0.conv1.weight"), None);
    let model = UNet::new(&UNetConfig::tiny(1), DType::F32, &mut Rng::new(1)).unwrap();
    load_weights(&model, &old_names).unwrap();
    let reference = tiny_model(DType::F32);
    for ((name, a), (_, b)) in named_parameters(&model).iter().zip(named_parameters(&reference).iter()) {
        assert_eq!(a.to_vec_f64(), b.to_vec_f64(), "{name}");
    }
}
