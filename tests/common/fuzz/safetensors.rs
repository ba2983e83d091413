//! Valid safetensors files and checkpoints, and their structural mutations.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::json::mutate_json;
use super::{INTERESTING_WORDS, Input, Rng, mutate_bytes};

// ---- safetensors ------------------------------------------------------------------------------

/// A safetensors file taken apart: the header's JSON object and the data after it.
struct Safetensors {
    header: Map<String, Value>,
    data: Vec<u8>,
}

impl Safetensors {
    fn parse(bytes: &[u8]) -> Option<Safetensors> {
        let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
        let header = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
        Some(Safetensors { header, data: bytes[8 + n..].to_vec() })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut header = serde_json::to_vec(&self.header).expect("JSON serializes");
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(&self.data);
        out
    }

    fn tensor_names(&self) -> Vec<String> {
        self.header.keys().filter(|k| *k != "__metadata__").cloned().collect()
    }
}

const SAFETENSORS_DTYPES: [&str; 16] = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "C64"];

/// A number, often a huge one, as JSON.
fn interesting_number(rng: &mut Rng, near: &[u64]) -> Value {
    match rng.below(6) {
        0 if !near.is_empty() => json!(rng.pick(near).wrapping_add(rng.below(3) as u64).wrapping_sub(1)),
        1 => json!(-1 - rng.below(3) as i64),
        2 => json!(*rng.pick(&[0.5, 1e30, -1e30, 1e308, f64::MIN_POSITIVE])),
        _ => json!(*rng.pick(&INTERESTING_WORDS)),
    }
}

/// One structural mutation of a safetensors file: a tensor's shape, offsets or dtype, the
/// entries, the metadata, or the header's length prefix.
pub(super) fn mutate_safetensors(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let Some(mut file) = Safetensors::parse(bytes) else { return mutate_bytes(bytes, rng) };
    let names = file.tensor_names();
    let data_len = file.data.len() as u64;
    let name = if names.is_empty() { None } else { Some(rng.pick(&names).clone()) };
    let entry = name.as_ref().and_then(|n| file.header.get_mut(n)).and_then(Value::as_object_mut);
    match (rng.below(12), entry) {
        (0 | 1, Some(entry)) => {
            let shape = match rng.below(6) {
                0 => json!([]),
                1 => json!([0]),
                2 => Value::Array((0..1 + rng.below(3)).map(|_| interesting_number(rng, &[data_len])).collect()),
                3 => json!(vec![1; 1 + rng.below(200)]),
                4 => json!([0xffff_ffffu64, 0xffff_ffffu64, 2]),
                _ => {
                    let mut shape = entry.get("shape").cloned().unwrap_or(json!([]));
                    if let Some(dims) = shape.as_array_mut().filter(|d| !d.is_empty()) {
                        let k = rng.below(dims.len());
                        dims[k] = interesting_number(rng, &[data_len]);
                    }
                    shape
                }
            };
            entry.insert("shape".into(), shape);
        }
        (2 | 3, Some(entry)) => {
            let offsets = match rng.below(5) {
                0 => json!([interesting_number(rng, &[data_len]), interesting_number(rng, &[data_len])]),
                1 => json!([data_len, 0]),
                2 => json!([0]),
                3 => json!(["0", 4]),
                _ => {
                    let mut offsets = entry.get("data_offsets").cloned().unwrap_or(json!([0, 0]));
                    if let Some(pair) = offsets.as_array_mut().filter(|p| !p.is_empty()) {
                        let k = rng.below(pair.len());
                        let old = pair[k].as_u64().unwrap_or(0);
                        pair[k] = interesting_number(rng, &[old, data_len, old.wrapping_add(1), old.wrapping_sub(1)]);
                    }
                    offsets
                }
            };
            entry.insert("data_offsets".into(), offsets);
        }
        (4 | 5, Some(entry)) => {
            let dtype = match rng.below(8) {
                0 => json!(""),
                1 => json!(7),
                2 => json!("X"),
                _ => json!(rng.pick(&SAFETENSORS_DTYPES)),
            };
            entry.insert("dtype".into(), dtype);
        }
        (6, Some(entry)) => {
            // drop a field, or add one
            let keys: Vec<String> = entry.keys().cloned().collect();
            if rng.percent(60) && !keys.is_empty() {
                entry.remove(rng.pick(&keys));
            } else {
                entry.insert("extra".into(), json!(1));
            }
        }
        (7, _) if name.is_some() => {
            // remove a tensor, or copy it under another name (overlapping data)
            let name = name.unwrap();
            if rng.percent(50) {
                file.header.remove(&name);
            } else {
                let copy = file.header[&name].clone();
                let other = *rng.pick(&["", "copy", "__metadata__", "a.b.c"]);
                file.header.insert(other.to_string(), copy);
            }
        }
        (8, _) => {
            let metadata = match rng.below(5) {
                0 => json!(["not", "a", "map"]),
                1 => json!({"format": 1, "step": null}),
                2 => json!("metadata"),
                3 => json!({"format": "pt", "big": "x".repeat(rng.below(5000))}),
                _ => Value::Null,
            };
            file.header.insert("__metadata__".into(), metadata);
        }
        (9, Some(entry)) => {
            // the tensor's entry becomes something else entirely
            *entry = Map::new();
            entry.insert("dtype".into(), json!(["F32"]));
        }
        (10, _) => {
            // the data grows or shrinks under an unchanged header
            if rng.percent(50) {
                file.data.truncate(rng.below(file.data.len() + 1));
            } else {
                let n = 1 + rng.below(16);
                file.data.extend(rng.bytes(n));
            }
        }
        _ => {
            // a wrong length prefix
            let mut out = file.to_bytes();
            let real = out.len() as u64 - 8 - data_len;
            let prefix = match rng.below(4) {
                0 => real.wrapping_add(1 + rng.below(8) as u64),
                1 => real.wrapping_sub(1 + rng.below(8) as u64),
                2 => out.len() as u64,
                _ => *rng.pick(&INTERESTING_WORDS),
            };
            out[..8].copy_from_slice(&prefix.to_le_bytes());
            *bytes = out;
            return;
        }
    }
    *bytes = file.to_bytes();
}

/// Builds a safetensors file from `(name, dtype, shape, data)` and string metadata.
fn safetensors_file(tensors: &[(&str, &str, Vec<u64>, Vec<u8>)], metadata: &[(&str, String)]) -> Vec<u8> {
    let mut header = Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend(bytes);
        header.insert(name.to_string(), json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
    }
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), Value::Object(metadata.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()));
    }
    Safetensors { header, data }.to_bytes()
}

pub(super) fn safetensors_seeds(work: &Path) -> Result<Vec<Input>, String> {
    let pattern = |n: usize| (0..n).map(|k| (k * 37 % 251) as u8).collect::<Vec<u8>>();
    let f32s = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let mut seeds = vec![
        vec![safetensors_file(
            &[
                ("weight", "F32", vec![2, 3], f32s(&[1.0, -2.0, 0.5, 0.0, 3.25, -1.5])),
                ("bias", "F16", vec![4], pattern(8)),
                ("scale", "BF16", vec![], pattern(2)),
                ("double", "F64", vec![1, 1], pattern(8)),
                ("labels", "I64", vec![2], [3i64, -7].iter().flat_map(|v| v.to_le_bytes()).collect()),
                ("counts", "U16", vec![3], pattern(6)),
                ("mask", "BOOL", vec![3], vec![0, 1, 1]),
                ("bytes", "I8", vec![2, 2], pattern(4)),
                ("empty", "F32", vec![0, 4], vec![]),
            ],
            &[("format", "pt".into())],
        )],
        vec![safetensors_file(
            &[("x", "U32", vec![2], pattern(8)), ("y", "I32", vec![1], pattern(4)), ("z", "U64", vec![1], vec![5, 0, 0, 0, 0, 0, 0, 0])],
            &[],
        )],
    ];
    // and one written by ember itself
    let path = work.join("seed.safetensors");
    let weight = ember_tensor::Tensor::from_vec((0..12).map(|k| k as f32 * 0.25).collect(), &[3, 4], ember_tensor::Device::Cpu).map_err(|e| e.to_string())?;
    let half = weight.to_dtype(ember_tensor::DType::F16).map_err(|e| e.to_string())?;
    let metadata = BTreeMap::from([("note".to_string(), "seed".to_string())]);
    ember_tensor::io::save_safetensors(&path, &[("conv.weight", &weight), ("conv.half", &half)], &metadata).map_err(|e| e.to_string())?;
    seeds.push(vec![std::fs::read(&path).map_err(|e| e.to_string())?]);
    let _ = std::fs::remove_file(&path);
    Ok(seeds)
}

// ---- checkpoints (safetensors + TrainConfig JSON) ---------------------------------------------

pub(super) fn checkpoint_seeds() -> Vec<Input> {
    let config = serde_json::to_string_pretty(&ember_train::TrainConfig::default()).expect("TrainConfig serializes");
    let metadata = |config: &str| {
        vec![
            ("format", ember_train::checkpoint::FORMAT.to_string()),
            ("step", "3".to_string()),
            ("adam_steps", "[3]".to_string()),
            ("rng.data", "0 3".to_string()),
            ("rng.noise", "0 7".to_string()),
            ("rng.dropout", "0 0".to_string()),
            ("train_config", config.to_string()),
        ]
    };
    let tensors = [("model.w", "F32", vec![2], vec![0, 0, 128, 63, 0, 0, 0, 64]), ("ema.w", "F32", vec![2], vec![0, 0, 128, 63, 0, 0, 0, 64])];
    vec![vec![safetensors_file(&tensors, &metadata(&config))], vec![safetensors_file(&tensors[..1], &metadata("{}"))]]
}

/// One structural mutation of a checkpoint: its `train_config` JSON, its `step`, its `format`,
/// or the safetensors around them.
pub(super) fn mutate_checkpoint(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let Some(mut file) = Safetensors::parse(bytes) else { return mutate_bytes(bytes, rng) };
    let Some(metadata) = file.header.get_mut("__metadata__").and_then(Value::as_object_mut) else { return mutate_safetensors(bytes, rng) };
    match rng.below(10) {
        0..=5 => {
            let text = metadata.get("train_config").and_then(Value::as_str).unwrap_or("{}").to_string();
            let mut text = text.into_bytes();
            mutate_json(&mut text, rng);
            metadata.insert("train_config".into(), json!(String::from_utf8_lossy(&text)));
        }
        6 => {
            let step = *rng.pick(&["", "-1", "18446744073709551615", "18446744073709551616", "1e3", " 5", "0x10", "३"]);
            metadata.insert("step".into(), json!(step));
        }
        7 => {
            let key = rng.pick(&["format", "step", "train_config", "adam_steps"]).to_string();
            metadata.remove(&key);
        }
        8 => {
            metadata.insert("format".into(), json!(rng.pick(&["", "ember-checkpoint-2", "ember-checkpoint-1 "])));
        }
        _ => return mutate_safetensors(bytes, rng),
    }
    *bytes = file.to_bytes();
}
