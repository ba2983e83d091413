//! The UNet against diffusers' `UNet2DModel` and `UNet2DConditionModel` (fixtures by
//! `scripts/make_unet_fixtures.py`, computed in float64 by PyTorch): same weights, inputs and
//! timesteps give the same output, and for the `tiny` preset, the class-conditional and the
//! cross-attention models one training step gives the same loss and every parameter's
//! gradient (for `tiny` also the same Adam update). Tolerance: 1e-4, relative to each tensor's scale
//! (`max|diff| / max|ref|`).

use std::collections::BTreeMap;

use ember::tensor::io::{SafetensorsFile, load_safetensors};
use ember::tensor::optim::{Adam, AdamConfig};
use ember::tensor::rng::Rng;
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Tensor};
use ember::unet::module::{load_weights, named_parameters};
use ember::unet::{Condition, EncoderStates, ForwardContext, UNet, UNetConfig};

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
            "unet_cross_attn_conv_io.safetensors",
            "unet_cross_attn_linear_io.safetensors",
            "unet_ddpm_cifar10_io.safetensors",
            "unet_tiny_io.safetensors",
            "unet_tiny_weights.safetensors",
            "vae_io.safetensors"
        ]
    );
}

/// What a fixture's model is conditioned on, from the fixture: class labels, or context tokens
/// and their mask.
#[derive(Default)]
struct FixtureCondition {
    labels: Option<Vec<usize>>,
    context: Option<(Tensor, Tensor)>,
}

impl FixtureCondition {
    /// The context as a variable of `dtype` on `device` (to take its gradient) and the mask.
    fn context_on(&self, dtype: DType, device: ember::tensor::Device) -> Option<(Tensor, Tensor)> {
        self.context.as_ref().map(|(states, mask)| (states.to_dtype(dtype).unwrap().to_device(device).unwrap().variable(), mask.to_device(device).unwrap()))
    }
}

/// The model of a conditional diffusers fixture (`weight.<name>`, `x_t`, `noise`,
/// `timesteps`, `eps_pred`, `loss`, `grad.<name>`, and `grad_encoder_hidden_states` for a
/// context) rebuilt from the fixture's config and weights: the output, the loss and every
/// parameter's (and the context's) gradient in f64 and f32 on the CPU; then the same f32 step
/// on the CUDA device of the build against the CPU's.
fn check_conditional_fixture(name: &str, condition: &FixtureCondition) {
    let io = fixture(name);
    let ts = timesteps(&io, "timesteps");
    let weight_count = io.tensors.keys().filter(|k| k.starts_with("weight.")).count();
    let run = |dtype: DType, device: ember::tensor::Device| {
        let model = fixture_model(&io, dtype);
        ember::unet::module::to_device(&model, device).unwrap();
        let x_t = io.get("x_t").unwrap().to_dtype(dtype).unwrap().to_device(device).unwrap();
        let noise = io.get("noise").unwrap().to_dtype(dtype).unwrap().to_device(device).unwrap();
        let context = condition.context_on(dtype, device);
        let encoder = context.as_ref().map(|(hidden_states, mask)| EncoderStates { hidden_states, attention_mask: Some(mask) });
        let mut rng = Rng::new(0);
        let cond = Condition { classes: condition.labels.as_deref(), encoder };
        let prediction = model.forward_conditioned(&x_t, &ts, &cond, &mut eval_context(&mut rng)).unwrap();
        assert_eq!(prediction.device(), device);
        let loss = prediction.mse_loss(&noise).unwrap();
        let grads = loss.backward().unwrap();
        (model, prediction, loss, grads, context)
    };
    let mut cpu_f32_grads = BTreeMap::new();
    for dtype in [DType::F64, DType::F32] {
        let (model, prediction, loss, grads, context) = run(dtype, ember::tensor::Device::Cpu);
        assert_matches(&prediction, io.get("eps_pred").unwrap(), &format!("{name} {dtype:?} eps_pred"));
        assert_matches(&loss.reshape(&[1]).unwrap(), io.get("loss").unwrap(), &format!("{name} {dtype:?} loss"));
        let params = named_parameters(&model);
        assert_eq!(params.len(), weight_count, "{name}: every diffusers parameter, no other");
        for (param, p) in &params {
            let grad = grads.get(p).unwrap_or_else(|| panic!("no gradient for {param}"));
            if param.ends_with("to_k.bias") {
                // zero in exact arithmetic (see the tiny model's test): only rounding noise
                assert!(grad.to_vec_f64().iter().all(|v| v.abs() < 1e-5), "{name} {dtype:?} grad.{param} is not ~0");
                continue;
            }
            assert_matches(grad, io.get(&format!("grad.{param}")).unwrap(), &format!("{name} {dtype:?} grad.{param}"));
            if dtype == DType::F32 {
                cpu_f32_grads.insert(param.clone(), grad.to_vec_f64());
            }
        }
        if let Some((states, _)) = &context {
            let grad = grads.get(states).expect("the context gets a gradient");
            assert_matches(grad, io.get("grad_encoder_hidden_states").unwrap(), &format!("{name} {dtype:?} grad of the context"));
        }
        // a table of class embeddings is learned: its gradient reaches the rows of the labels used
        if let (Some(ember::unet::ClassEmbedding::Table(table)), Some(labels)) = (&model.class_embedding, &condition.labels) {
            let rows = grads.get(table).unwrap().to_vec_f64();
            let width = table.shape()[1];
            let row_norm = |r: usize| rows[r * width..][..width].iter().map(|v| v.abs()).sum::<f64>();
            assert!((0..table.shape()[0]).all(|r| (row_norm(r) > 0.0) == labels.contains(&r)), "{name}: rows of the labels only");
        }
    }
    // the same f32 step on the CUDA device of the build
    if let Ok(_backend) = ember::tensor::cuda::device(0) {
        let device = ember::tensor::Device::Cuda(0);
        let (model, prediction, _, grads, _) = run(DType::F32, device);
        assert_matches(&prediction, io.get("eps_pred").unwrap(), &format!("{name} on {device:?}: eps_pred"));
        for (param, p) in named_parameters(&model) {
            if let Some(cpu) = cpu_f32_grads.get(&param) {
                let err = relative_error(&grads.get(&p).unwrap().to_vec_f64(), cpu);
                assert!(err < TOLERANCE, "{name} on {device:?}: grad.{param} against the CPU's, relative error {err:.2e}");
            }
        }
    }
}

/// A class-conditional `UNet2DModel` of diffusers (fixture `unet_class_cond_<kind>_io`: its
/// random init, 3 images with labels 7, 0, 3).
fn check_class_conditional(kind: &str) {
    let name = format!("unet_class_cond_{kind}_io");
    let labels: Vec<usize> = fixture(&name).get("class_labels").unwrap().to_vec_f64().iter().map(|&l| l as usize).collect();
    assert_eq!(labels, [7, 0, 3]);
    check_conditional_fixture(&name, &FixtureCondition { labels: Some(labels), ..Default::default() });
}

/// The model of a conditional fixture: built from the config.json in its metadata, with its
/// `weight.<name>` tensors loaded.
fn fixture_model(io: &SafetensorsFile, dtype: DType) -> UNet {
    let config = UNetConfig::from_json(&io.metadata["config"]).unwrap();
    let weights: BTreeMap<String, Tensor> =
        io.tensors.iter().filter_map(|(name, t)| name.strip_prefix("weight.").map(|n| (n.to_string(), t.clone()))).collect();
    let model = UNet::new(&config, dtype, &mut Rng::new(0)).unwrap();
    load_weights(&model, &weights).unwrap();
    model
}

/// The context and mask of a cross-attention fixture.
fn fixture_context(io: &SafetensorsFile) -> (Tensor, Tensor) {
    (io.get("encoder_hidden_states").unwrap().clone(), io.get("encoder_attention_mask").unwrap().clone())
}

/// A `UNet2DConditionModel` of diffusers (fixture `unet_cross_attn_<kind>_io`: two levels with
/// cross-attention transformers at both and in the middle, 2 heads, a context of 7 tokens × 32
/// with the last two tokens of the first sample masked), from the config.json diffusers wrote.
fn check_cross_attention(kind: &str) {
    let name = format!("unet_cross_attn_{kind}_io");
    let io = fixture(&name);
    let config = UNetConfig::from_json(&io.metadata["config"]).unwrap();
    assert!(config.has_cross_attention() && config.cross_attention_dim == Some(32) && config.attention_head_dim == Some(2));
    assert_eq!(UNetConfig::from_json(&config.to_json()).unwrap(), config, "the config round-trips through ember's JSON");
    assert!(config.to_json().contains("\"_class_name\": \"UNet2DConditionModel\""));
    let (states, mask) = fixture_context(&io);
    assert_eq!((states.shape(), mask.to_vec_f64().iter().filter(|&&m| m == 0.0).count()), (&[2, 7, 32][..], 2));
    check_conditional_fixture(&name, &FixtureCondition { context: Some((states, mask)), ..Default::default() });
}

#[test]
fn cross_attention_unet_with_conv_projections_matches_diffusers() {
    check_cross_attention("conv");
}

#[test]
fn cross_attention_unet_with_linear_projections_and_two_transformer_layers_matches_diffusers() {
    check_cross_attention("linear");
}

#[test]
fn masked_context_tokens_are_ignored_and_the_context_is_checked() {
    let io = fixture("unet_cross_attn_conv_io");
    let model = fixture_model(&io, DType::F32);
    let (states, mask) = fixture_context(&io);
    let x = io.get("x_t").unwrap();
    let ts = timesteps(&io, "timesteps");
    let mut rng = Rng::new(0);
    let mut ctx = eval_context(&mut rng);
    let with = |states: &Tensor, mask: Option<&Tensor>, ctx: &mut ForwardContext| {
        let cond = Condition { classes: None, encoder: Some(EncoderStates { hidden_states: states, attention_mask: mask }) };
        model.forward_conditioned(x, &ts, &cond, ctx)
    };
    let reference = with(&states, Some(&mask), &mut ctx).unwrap().to_vec_f64();
    // new values in the masked tokens (the first sample's last two) change nothing...
    let mut values = states.to_vec_f64();
    values[5 * 32..7 * 32].iter_mut().for_each(|v| *v = 3.0 - *v);
    let changed = Tensor::from_f64(&values, states.shape(), DType::F32).unwrap();
    assert_eq!(with(&changed, Some(&mask), &mut ctx).unwrap().to_vec_f64(), reference);
    // ...but without the mask they are attended to
    assert_ne!(with(&changed, None, &mut ctx).unwrap().to_vec_f64(), with(&states, None, &mut ctx).unwrap().to_vec_f64());
    let message = |r: ember::unet::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message(model.forward(x, &ts, &mut ctx)).contains("encoder hidden states"));
    let narrow = Tensor::zeros(&[2, 7, 16], DType::F32);
    assert!(message(with(&narrow, None, &mut ctx)).contains("expected [2, S ≥ 1, 32]"));
    let hides_all = Tensor::from_f64(&[[1.0; 7], [0.0; 7]].concat(), &[2, 7], DType::F32).unwrap();
    assert!(message(with(&states, Some(&hides_all), &mut ctx)).contains("sample 1 hides every context token"));
    let short_mask = Tensor::ones(&[2, 6], DType::F32);
    assert!(message(with(&states, Some(&short_mask), &mut ctx)).contains("mask of shape [2, 6]"));
    // an unconditional model refuses a context
    let tiny = UNet::new(&UNetConfig::tiny(1), DType::F32, &mut Rng::new(0)).unwrap();
    let cond = Condition { classes: None, encoder: Some(EncoderStates { hidden_states: &states, attention_mask: None }) };
    assert!(message(tiny.forward_conditioned(&Tensor::zeros(&[2, 1, 32, 32], DType::F32), &[1.0, 2.0], &cond, &mut ctx)).contains("without cross-attention"));
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

/// A diffusers cross-attention UNet samples in ember as StableDiffusionPipeline samples with
/// it: the fixture's 4-step DDIM chain (η = 0) from `x_t`, under classifier-free guidance at
/// scale 3 against an all-zero unconditional context, each step one batched forward of the
/// conditional and unconditional halves (see `guided_ddim_chain` in the fixture script).
#[test]
fn a_diffusers_cross_attention_unet_samples_under_guidance_as_the_pipeline_does() {
    use ember::diffusion::ddim::{TimestepSpacing, ddim_sample_from, ddim_timesteps};
    use ember::diffusion::schedule::NoiseSchedule;
    let io = fixture("unet_cross_attn_conv_io");
    let model = fixture_model(&io, DType::F64);
    let (states, mask) = fixture_context(&io);
    let uncond = io.get("ddim.uncond_hidden_states").unwrap();
    let both_states = Tensor::cat(&[&states, uncond], 0).unwrap().to_dtype(DType::F64).unwrap();
    let both_mask = Tensor::cat(&[&mask, &Tensor::ones(mask.shape(), DType::F32)], 0).unwrap();
    let timesteps = ddim_timesteps(1000, 4, TimestepSpacing::Leading).unwrap();
    let expected_timesteps: Vec<usize> = io.get("ddim.timesteps").unwrap().to_vec_f64().iter().map(|&t| t as usize).collect();
    assert_eq!(timesteps, expected_timesteps);
    let mut rng = Rng::new(0);
    let mut guided = |x: &Tensor, t: &[f64]| -> ember::unet::Result<Tensor> {
        let batch = x.shape()[0];
        let doubled = Tensor::cat(&[x, x], 0)?;
        let t2: Vec<f64> = t.iter().chain(t).copied().collect();
        let encoder = EncoderStates { hidden_states: &both_states, attention_mask: Some(&both_mask) };
        let both = model.forward_conditioned(&doubled, &t2, &Condition { classes: None, encoder: Some(encoder) }, &mut eval_context(&mut rng))?;
        let (conditional, unconditional) = (both.narrow(0, 0, batch)?, both.narrow(0, batch, batch)?);
        Ok(ember::train::sampling::guided_noise(&conditional, &unconditional, 3.0)?)
    };
    let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let x_big_t = io.get("x_t").unwrap().to_dtype(DType::F64).unwrap();
    let x0 = ddim_sample_from(&mut guided, &schedule, x_big_t, &timesteps, 0.0, &mut Rng::new(0), &mut |_, _| {}).unwrap();
    assert_matches(&x0, io.get("ddim.x_0").unwrap(), "the guided DDIM sample");
}

/// The keys of a config.json that diffusers reads as its keyword defaults
/// (`diffusers_defaults.json`, from the signatures of both model classes) mean the same to
/// ember: a config with only `_class_name` and `sample_size` builds diffusers' default model,
/// key by key; every diffusers option ember has no field for is either refused at any other
/// value or has no effect on ember's float math (listed here, with the reason).
#[test]
fn missing_config_keys_take_diffusers_own_defaults_for_both_model_classes() {
    use serde_json::Value;
    let text = std::fs::read_to_string(format!("{FIXTURES}diffusers_defaults.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let same = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    };
    // ember's fields a class has no keyword for, at the value that builds that class's model
    let ember_only = |class: &str| -> Vec<(&str, Value)> {
        if class == "UNet2DModel" {
            vec![("transformer_layers_per_block", Value::from(1)), ("use_linear_projection", Value::from(false))]
        } else {
            vec![("upsample_type", "conv".into()), ("downsample_type", "conv".into()), ("add_attention", true.into()), ("attn_norm_num_groups", Value::Null)]
        }
    };
    // diffusers keywords with no effect on ember's model: used only with an option ember
    // refuses (num_train_timesteps sizes the "learned" time embedding; the heads of an
    // addition embedding), or a precision switch for half-precision attention
    let no_effect = ["num_train_timesteps", "addition_embed_type_num_heads", "upcast_attention"];
    for class in ["UNet2DModel", "UNet2DConditionModel"] {
        let defaults = all[class].as_object().unwrap();
        let config = UNetConfig::from_json(&format!(r#"{{"_class_name": "{class}", "sample_size": 32}}"#)).unwrap();
        let ember = serde_json::to_value(&config).unwrap();
        for (key, value) in ember.as_object().unwrap() {
            if key == "_class_name" || key == "sample_size" {
                continue;
            }
            match defaults.get(key) {
                Some(default) => assert!(same(value, default), "{class}.{key}: ember {value}, diffusers {default}"),
                None => {
                    let expected =
                        ember_only(class).into_iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{class}: ember's {key} is not a diffusers keyword"));
                    assert!(same(value, &expected.1), "{class}.{key}: {value}, expected {}", expected.1);
                }
            }
        }
        for (key, default) in defaults {
            if ember.get(key).is_some() || key == "sample_size" || no_effect.contains(&key.as_str()) {
                continue;
            }
            // an option ember has no field for: accepted at diffusers' default, refused at another value
            let other = match default {
                Value::Null => Value::from(2),
                Value::Bool(b) => Value::Bool(!b),
                Value::Number(n) => Value::from(n.as_f64().unwrap() + 1.0),
                _ => Value::from("something else"),
            };
            let with = |v: &Value| UNetConfig::from_json(&format!(r#"{{"_class_name": "{class}", "sample_size": 32, "{key}": {v}}}"#));
            assert!(with(default).is_ok(), "{class}.{key} = {default} (diffusers' default) is refused");
            assert!(with(&other).is_err(), "{class}.{key} = {other} is accepted silently (ember ignores {key})");
        }
    }
}
