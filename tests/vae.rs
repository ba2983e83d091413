//! The autoencoder of latent diffusion against diffusers' `AutoencoderKL` (fixture
//! `tests/fixtures/unet/vae_io.safetensors` by `scripts/make_unet_fixtures.py --only vae`: a
//! random three-level model in float64): the posterior's mean and log-variance, the decoded
//! reparameterized sample, the KL term, the loss and every parameter's gradient to 1e-4
//! relative, in f64 and f32 on the CPU and in f32 on the CUDA device of the build (the
//! emulator in CI) against the CPU; its config against diffusers' defaults; typed errors.

use std::collections::BTreeMap;

use ember::tensor::io::{SafetensorsFile, load_safetensors};
use ember::tensor::rng::Rng;
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Device, Tensor};
use ember::unet::module::{load_weights, named_parameters, to_device};
use ember::unet::{AutoencoderKL, VaeConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unet/");
const TOLERANCE: f64 = 1e-4;

fn fixture() -> SafetensorsFile {
    load_safetensors(format!("{FIXTURES}vae_io.safetensors")).unwrap()
}

#[track_caller]
fn assert_matches(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let err = relative_error(&actual.to_vec_f64(), &expected.to_vec_f64());
    assert!(err < TOLERANCE, "{what}: relative error {err:.2e}");
}

/// The fixture's model in `dtype` on `device`.
fn fixture_model(io: &SafetensorsFile, dtype: DType, device: Device) -> AutoencoderKL {
    let config = VaeConfig::from_json(&io.metadata["config"]).unwrap();
    let weights: BTreeMap<String, Tensor> =
        io.tensors.iter().filter_map(|(name, t)| name.strip_prefix("weight.").map(|n| (n.to_string(), t.clone()))).collect();
    let model = AutoencoderKL::new(&config, dtype, &mut Rng::new(0)).unwrap();
    assert_eq!(named_parameters(&model).len(), weights.len(), "every diffusers parameter, no other");
    load_weights(&model, &weights).unwrap();
    to_device(&model, device).unwrap();
    model
}

/// Encode, sample with the fixture's ε, decode, and the loss `mse(decoded, x) + 1e-3·mean(kl)`;
/// returns the model, the outputs by the fixture's names, and the gradients by parameter name.
fn training_step(io: &SafetensorsFile, dtype: DType, device: Device) -> (BTreeMap<&'static str, Tensor>, BTreeMap<String, Vec<f64>>) {
    let model = fixture_model(io, dtype, device);
    let input = |name: &str| io.get(name).unwrap().to_dtype(dtype).unwrap().to_device(device).unwrap();
    let x = input("x");
    let posterior = model.encode(&x).unwrap();
    let decoded = model.decode(&posterior.sample_with(&input("eps")).unwrap()).unwrap();
    assert_eq!(decoded.device(), device);
    let kl = posterior.kl().unwrap();
    let loss = decoded.mse_loss(&x).unwrap().add(&kl.mean(&[0], false).unwrap().mul_scalar(1e-3).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let by_name = named_parameters(&model).into_iter().map(|(name, p)| (name, grads.get(&p).unwrap_or_else(|| panic!("no gradient")).to_vec_f64())).collect();
    let outputs = BTreeMap::from([
        ("mean", posterior.mean.clone()),
        ("logvar", posterior.logvar.clone()),
        ("decoded", decoded),
        ("kl", kl),
        ("loss", loss.reshape(&[1]).unwrap()),
    ]);
    (outputs, by_name)
}

#[test]
fn autoencoder_kl_matches_diffusers_outputs_kl_loss_and_every_gradient() {
    let io = fixture();
    let mut cpu_f32 = BTreeMap::new();
    for dtype in [DType::F64, DType::F32] {
        let (outputs, grads) = training_step(&io, dtype, Device::Cpu);
        for (name, value) in &outputs {
            assert_matches(value, io.get(name).unwrap(), &format!("{dtype:?} {name}"));
        }
        for (name, grad) in &grads {
            if name.ends_with("to_k.bias") {
                // zero in exact arithmetic (a bias on every key shifts each score row by one
                // constant, which the softmax ignores): only rounding noise on both sides
                assert!(grad.iter().all(|v| v.abs() < 1e-5), "{dtype:?} grad.{name} is not ~0");
                continue;
            }
            let expected = io.get(&format!("grad.{name}")).unwrap().to_vec_f64();
            let err = relative_error(grad, &expected);
            assert!(err < TOLERANCE, "{dtype:?} grad.{name}: relative error {err:.2e}");
        }
        if dtype == DType::F32 {
            cpu_f32 = grads;
        }
    }
    // latents are a quarter of the image's side at three levels, with 4 channels
    assert_eq!(io.get("mean").unwrap().shape(), [2, 4, 4, 2]);
    if ember::tensor::cuda::device(0).is_ok() {
        let device = Device::Cuda(0);
        let (outputs, grads) = training_step(&io, DType::F32, device);
        assert_matches(&outputs["decoded"], io.get("decoded").unwrap(), "decoded on the CUDA device");
        for (name, grad) in grads.iter().filter(|(name, _)| !name.ends_with("to_k.bias")) {
            let err = relative_error(grad, &cpu_f32[name]);
            assert!(err < TOLERANCE, "grad.{name} on the CUDA device against the CPU's: relative error {err:.2e}");
        }
    }
}

#[test]
fn the_vae_config_takes_diffusers_defaults_and_round_trips() {
    let text = std::fs::read_to_string(format!("{FIXTURES}diffusers_defaults.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let defaults = all["AutoencoderKL"].as_object().unwrap();
    let ember = serde_json::to_value(VaeConfig::from_json("{}").unwrap()).unwrap();
    for (key, value) in ember.as_object().unwrap() {
        if key == "_class_name" {
            continue;
        }
        let default = defaults.get(key).unwrap_or_else(|| panic!("ember's {key} is not a diffusers keyword"));
        let same = match (value.as_f64(), default.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => value == default,
        };
        assert!(same, "{key}: ember {value}, diffusers {default}");
    }
    assert_eq!(defaults.len() + 1, ember.as_object().unwrap().len(), "every diffusers keyword is a field");
    let config = VaeConfig::from_json(&fixture().metadata["config"]).unwrap();
    assert_eq!(VaeConfig::from_json(&config.to_json()).unwrap(), config);
    assert_eq!((config.block_out_channels.as_slice(), config.latent_channels, config.downsampling_factor()), (&[8, 16, 16][..], 4, 4));
    for bad in [
        r#"{"act_fn": "gelu"}"#,
        r#"{"down_block_types": ["DownBlock2D"]}"#,
        r#"{"latents_mean": [0, 0, 0, 0]}"#,
        r#"{"latents_mean": [0, 0, 0], "latents_std": [1, 1, 1]}"#,
        r#"{"latents_mean": [0, 0, 0, 0], "latents_std": [1, 0, 1, 1]}"#,
        r#"{"norm_num_groups": 7}"#,
        r#"{"_class_name": "VQModel"}"#,
    ] {
        assert!(VaeConfig::from_json(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn the_vae_checks_its_inputs_and_latents_scale_both_ways() {
    let io = fixture();
    let model = fixture_model(&io, DType::F32, Device::Cpu);
    let message = |r: ember::unet::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    // 16×6 does not halve twice
    assert!(message(model.encode(&Tensor::zeros(&[1, 1, 16, 6], DType::F32)).map(|p| p.mean)).contains("multiples of 4"));
    assert!(message(model.encode(&Tensor::zeros(&[1, 3, 16, 8], DType::F32)).map(|p| p.mean)).contains("[B, 1, H, W]"));
    assert!(message(model.decode(&Tensor::zeros(&[1, 2, 4, 2], DType::F32))).contains("[B, 4, H, W]"));
    let z = Tensor::randn(&[2, 4, 4, 2], 0.0, 1.0, DType::F64, &mut Rng::new(3));
    let scaled = model.scale_latents(&z).unwrap();
    assert!(relative_error(&scaled.to_vec_f64(), &z.mul_scalar(0.18215).unwrap().to_vec_f64()) < 1e-12);
    assert!(relative_error(&model.unscale_latents(&scaled).unwrap().to_vec_f64(), &z.to_vec_f64()) < 1e-12);
    // per-channel statistics (SDXL's): (z − mean[c])·scaling/std[c], and back
    let mut with_stats = model.config.clone();
    (with_stats.latents_mean, with_stats.latents_std) = (Some(vec![0.5, -1.0, 0.0, 2.0]), Some(vec![2.0, 1.0, 0.5, 4.0]));
    let stats_model = AutoencoderKL::new(&VaeConfig::from_json(&with_stats.to_json()).unwrap(), DType::F64, &mut Rng::new(0)).unwrap();
    let scaled = stats_model.scale_latents(&z).unwrap().to_vec_f64();
    let zs = z.to_vec_f64();
    for (i, (&s, &v)) in scaled.iter().zip(&zs).enumerate() {
        let c = (i / 8) % 4; // [2, 4, 4, 2]: 8 values per channel
        let (m, sd) = ([0.5, -1.0, 0.0, 2.0][c], [2.0, 1.0, 0.5, 4.0][c]);
        assert!((s - (v - m) * 0.18215 / sd).abs() < 1e-12, "value {i}");
    }
    let back = stats_model.unscale_latents(&stats_model.scale_latents(&z).unwrap()).unwrap();
    assert!(relative_error(&back.to_vec_f64(), &zs) < 1e-12);
    // the KL of the prior itself is 0, and a posterior sample with ε = 0 is the mean
    let prior = ember::unet::DiagonalGaussian { mean: Tensor::zeros(&[1, 4, 2, 2], DType::F64), logvar: Tensor::zeros(&[1, 4, 2, 2], DType::F64) };
    assert_eq!(prior.kl().unwrap().to_vec_f64(), [0.0]);
    let posterior = model.encode(io.get("x").unwrap()).unwrap();
    assert_eq!(posterior.sample_with(&Tensor::zeros(posterior.mean.shape(), DType::F32)).unwrap().to_vec_f64(), posterior.mean.to_vec_f64());
}
