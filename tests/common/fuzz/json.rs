//! Valid config.json files and their structural mutations.

use serde_json::{Value, json};

use super::{Input, Loader, Rng, mutate_bytes};

// ---- JSON configs -------------------------------------------------------------------------------

/// A path from the root of a JSON value to one of its nodes.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_paths(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(path.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(Step::Key(k.clone()));
                node_paths(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Step::Index(i));
                node_paths(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(mut value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    for step in path {
        value = match step {
            Step::Key(k) => value.get_mut(k.as_str())?,
            Step::Index(i) => value.get_mut(*i)?,
        };
    }
    Some(value)
}

/// A replacement for a config value: huge, negative, fractional, of the wrong type, empty,
/// very long or very deep.
fn interesting_json(rng: &mut Rng, old: &Value) -> Value {
    match rng.below(16) {
        0 => json!(u64::MAX),
        1 => json!(-1),
        2 => json!(i64::MIN),
        3 => json!(1e308),
        4 => json!(0.5),
        5 => json!(0),
        6 => json!(""),
        7 => json!("x".repeat(rng.below(3000))),
        8 => Value::Null,
        9 => json!(true),
        10 => json!([]),
        11 => json!({}),
        12 => Value::Array((0..rng.below(1000)).map(|_| json!(rng.below(4096))).collect()),
        13 => {
            let mut deep = json!(1);
            for _ in 0..1 + rng.below(200) {
                deep = json!([deep]);
            }
            deep
        }
        14 => json!([old.clone(), old.clone()]),
        _ => match old {
            // a neighbour of the old number, or of a power of two
            Value::Number(n) => {
                let (x, power) = (n.as_u64().unwrap_or(1), 1u64 << rng.below(64));
                json!(rng.pick(&[x.wrapping_mul(2), x / 2, x.wrapping_add(1), x.wrapping_sub(1), power, 3, 7]))
            }
            Value::String(_) => json!(rng.pick(&["UNet2DModel", "UNet2DConditionModel", "AutoencoderKL", "DownBlock2D", "gelu", "silu", "conv", "fourier"])),
            _ => json!(rng.below(64)),
        },
    }
}

/// One structural mutation of a JSON document (a value replaced, a key removed or added, an
/// array shortened or repeated), or, now and then, a byte-level one.
pub(super) fn mutate_json(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let Ok(mut root) = serde_json::from_slice::<Value>(bytes) else { return mutate_bytes(bytes, rng) };
    if rng.percent(10) {
        return mutate_bytes(bytes, rng);
    }
    let mut paths = Vec::new();
    node_paths(&root, &mut Vec::new(), &mut paths);
    let path = rng.pick(&paths).clone();
    let Some(node) = node_mut(&mut root, &path) else { return };
    match rng.below(8) {
        0 if !path.is_empty() => {
            // remove the node from its parent
            let (last, parent) = path.split_last().expect("not the root");
            match (node_mut(&mut root, parent), last) {
                (Some(Value::Object(map)), Step::Key(k)) => drop(map.remove(k)),
                (Some(Value::Array(items)), Step::Index(i)) => drop(items.remove(*i)),
                _ => {}
            }
        }
        1 if node.is_object() => {
            let key = rng.pick(&["_class_name", "text_config", "sample_size", "block_out_channels", "norm_num_groups", "unknown_key"]).to_string();
            let value = interesting_json(rng, &Value::Null);
            node.as_object_mut().expect("an object").insert(key, value);
        }
        2 if node.is_array() => {
            let items = node.as_array_mut().expect("an array");
            if rng.percent(50) {
                items.truncate(rng.below(items.len() + 1));
            } else if let Some(first) = items.first().cloned() {
                items.extend(std::iter::repeat_n(first, 1 + rng.below(20)));
            }
        }
        _ => {
            let old = node.clone();
            *node = interesting_json(rng, &old);
        }
    }
    *bytes = if rng.percent(50) { serde_json::to_vec_pretty(&root) } else { serde_json::to_vec(&root) }.expect("JSON serializes");
}

pub(super) fn config_seeds(loader: Loader) -> Vec<Input> {
    let texts: Vec<String> = match loader {
        Loader::UnetConfig => {
            let condition = ember_unet::UNetConfig { sample_size: 32, ..ember_unet::UNetConfig::diffusers_condition_defaults() };
            vec![
                ember_unet::UNetConfig::ddpm_cifar10().to_json(),
                ember_unet::UNetConfig::tiny(1).to_json(),
                condition.to_json(),
                r#"{"_class_name": "UNet2DModel", "sample_size": 32, "block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8}"#.into(),
            ]
        }
        Loader::VaeConfig => vec![ember_unet::VaeConfig::default().to_json(), "{}".into()],
        Loader::ClipConfig => {
            let text = ember_unet::clip::ClipTextConfig::default().to_json();
            vec![text.clone(), format!("{{\"_class_name\": \"CLIPModel\", \"text_config\": {text}}}")]
        }
        _ => unreachable!("not a config loader"),
    };
    texts.into_iter().map(|t| vec![t.into_bytes()]).collect()
}
