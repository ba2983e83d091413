//! The CLIP text encoder against transformers' `CLIPTextModel` (fixture
//! `tests/fixtures/clip/clip_text_io.safetensors` by `scripts/make_clip_fixtures.py`: a random
//! two-layer model in float64 on two token rows, the second padded): the last hidden state,
//! the pooled end-of-text state and every parameter's gradient of a fixed linear loss to 1e-4
//! relative, in f64 and f32 on the CPU and in f32 on the CUDA device of the build (the
//! emulator in CI) against the CPU; causality and padding; the config; typed errors.

use std::collections::BTreeMap;

use ember::tensor::io::{SafetensorsFile, load_safetensors};
use ember::tensor::rng::Rng;
use ember::tensor::testing::relative_error;
use ember::tensor::{DType, Device, Tensor};
use ember::unet::clip::{ClipTextConfig, ClipTextModel, strip_text_model_prefix};
use ember::unet::module::{load_weights, named_parameters, to_device};

const TOLERANCE: f64 = 1e-4;

fn fixture() -> SafetensorsFile {
    load_safetensors(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clip/clip_text_io.safetensors")).unwrap()
}

#[track_caller]
fn assert_matches(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let err = relative_error(&actual.to_vec_f64(), &expected.to_vec_f64());
    assert!(err < TOLERANCE, "{what}: relative error {err:.2e}");
}

fn fixture_weights(io: &SafetensorsFile) -> BTreeMap<String, Tensor> {
    io.tensors.iter().filter_map(|(name, t)| name.strip_prefix("weight.").map(|n| (n.to_string(), t.clone()))).collect()
}

fn fixture_model(io: &SafetensorsFile, dtype: DType, device: Device) -> ClipTextModel {
    let config = ClipTextConfig::from_json(&io.metadata["config"]).unwrap();
    let model = ClipTextModel::new(&config, dtype, &mut Rng::new(0)).unwrap();
    load_weights(&model, &fixture_weights(io)).unwrap();
    to_device(&model, device).unwrap();
    model
}

fn token_rows(io: &SafetensorsFile) -> Vec<Vec<usize>> {
    let ids = io.get("input_ids").unwrap();
    let len = ids.shape()[1];
    ids.to_vec_f64().chunks(len).map(|row| row.iter().map(|&id| id as usize).collect()).collect()
}

/// The fixture's forward and loss on `device`: the outputs and every parameter's gradient.
fn run(io: &SafetensorsFile, dtype: DType, device: Device) -> (Tensor, Tensor, Tensor, BTreeMap<String, Vec<f64>>) {
    let model = fixture_model(io, dtype, device);
    let on = |name: &str| io.get(name).unwrap().to_dtype(dtype).unwrap().to_device(device).unwrap();
    let out = model.forward(&token_rows(io), Some(&on("attention_mask"))).unwrap();
    let loss = out.last_hidden_state.mul(&on("r_hidden")).unwrap().sum(&[0, 1, 2], false).unwrap();
    let loss = loss.add(&out.pooler_output.mul(&on("r_pooled")).unwrap().sum(&[0, 1], false).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let by_name = named_parameters(&model).into_iter().map(|(name, p)| (name, grads.get(&p).expect("a gradient").to_vec_f64())).collect();
    (out.last_hidden_state, out.pooler_output, loss.reshape(&[1]).unwrap(), by_name)
}

#[test]
fn clip_text_model_matches_transformers_outputs_and_every_gradient() {
    let io = fixture();
    assert_eq!(named_parameters(&fixture_model(&io, DType::F32, Device::Cpu)).len(), fixture_weights(&io).len());
    let mut cpu_f32 = BTreeMap::new();
    for dtype in [DType::F64, DType::F32] {
        let (hidden, pooled, loss, grads) = run(&io, dtype, Device::Cpu);
        assert_matches(&hidden, io.get("last_hidden_state").unwrap(), &format!("{dtype:?} last_hidden_state"));
        assert_matches(&pooled, io.get("pooler_output").unwrap(), &format!("{dtype:?} pooler_output"));
        assert_matches(&loss, io.get("loss").unwrap(), &format!("{dtype:?} loss"));
        for (name, grad) in &grads {
            if name.ends_with("k_proj.bias") {
                // zero in exact arithmetic (a bias on every key shifts each score row by one
                // constant, which the softmax ignores): only rounding noise on both sides
                assert!(grad.iter().all(|v| v.abs() < 1e-5), "{dtype:?} grad.{name} is not ~0");
                continue;
            }
            let expected = io.get(&format!("grad.{name}")).unwrap().to_vec_f64();
            let err = relative_error(grad, &expected);
            assert!(err < TOLERANCE, "{dtype:?} grad.{name}: relative error {err:.2e}");
        }
        cpu_f32 = grads;
    }
    if ember::tensor::cuda::device(0).is_ok() {
        let (hidden, _, _, grads) = run(&io, DType::F32, Device::Cuda(0));
        assert_matches(&hidden, io.get("last_hidden_state").unwrap(), "last_hidden_state on the CUDA device");
        for (name, grad) in grads.iter().filter(|(name, _)| !name.ends_with("k_proj.bias")) {
            let err = relative_error(grad, &cpu_f32[name]);
            assert!(err < TOLERANCE, "grad.{name} on the CUDA device against the CPU's: relative error {err:.2e}");
        }
    }
}

#[test]
fn a_token_sees_only_itself_and_earlier_tokens_and_padding_changes_nothing_before_it() {
    let io = fixture();
    let model = fixture_model(&io, DType::F64, Device::Cpu);
    let rows = token_rows(&io);
    let base = model.forward(&rows[..1], None).unwrap().last_hidden_state.to_vec_f64();
    // changing token 5 changes positions 5.. and nothing before
    let mut changed = rows[..1].to_vec();
    changed[0][5] = 44;
    let other = model.forward(&changed, None).unwrap().last_hidden_state.to_vec_f64();
    let width = 32;
    assert_eq!(base[..5 * width], other[..5 * width], "positions before the change");
    assert!(base[5 * width..6 * width] != other[5 * width..6 * width], "the changed position");
    // the padded row: the states of its tokens are those of the unpadded row, and the pooled
    // state is that of its end-of-text token (position 3)
    let short = model.forward(&[rows[1][..4].to_vec()], None).unwrap();
    let mask = Tensor::from_f64(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], &[1, 9], DType::F64).unwrap();
    let padded = model.forward(&rows[1..], Some(&mask)).unwrap();
    assert!(relative_error(&padded.last_hidden_state.narrow(1, 0, 4).unwrap().to_vec_f64(), &short.last_hidden_state.to_vec_f64()) < 1e-12);
    assert!(relative_error(&padded.pooler_output.to_vec_f64(), &short.pooler_output.to_vec_f64()) < 1e-12);
    assert_eq!((model.pooled_position(&rows[0]), model.pooled_position(&rows[1])), (7, 3));
}

#[test]
fn the_clip_config_round_trips_and_bad_input_is_refused() {
    let io = fixture();
    let config = ClipTextConfig::from_json(&io.metadata["config"]).unwrap();
    assert_eq!((config.hidden_size, config.num_hidden_layers, config.eos_token_id), (32, 2, 3));
    assert_eq!(ClipTextConfig::from_json(&config.to_json()).unwrap(), config);
    // a whole CLIPModel's config.json: its text_config
    let nested = format!(r#"{{"model_type": "clip", "text_config": {}}}"#, config.to_json());
    assert_eq!(ClipTextConfig::from_json(&nested).unwrap(), config);
    for bad in [r#"{"hidden_act": "relu"}"#, r#"{"hidden_size": 30, "num_attention_heads": 4}"#, r#"{"attention_dropout": 0.1}"#] {
        assert!(ClipTextConfig::from_json(bad).is_err(), "{bad} was accepted");
    }
    let model = fixture_model(&io, DType::F32, Device::Cpu);
    let message = |rows: &[Vec<usize>]| model.forward(rows, None).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message(&[vec![1, 50]]).contains("outside the vocabulary of 50"));
    assert!(message(&[vec![1; 17]]).contains("16 positions"));
    assert!(message(&[vec![1, 2], vec![1]]).contains("one positive length"));
    assert!(message(&[]).contains("one positive length"));
    let bad_mask = Tensor::ones(&[1, 3], DType::F32);
    assert!(model.forward(&[vec![1, 2]], Some(&bad_mask)).is_err());
    // transformers 4's names (Stable Diffusion's text_encoder/) load too
    let prefixed: BTreeMap<String, Tensor> = fixture_weights(&io).into_iter().map(|(n, t)| (format!("text_model.{n}"), t)).collect();
    load_weights(&model, &strip_text_model_prefix(prefixed)).unwrap();
}
