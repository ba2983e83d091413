//! Parameters by name. Every layer implements [`Module`]: it lists its parameters under
//! names that follow PyTorch's `state_dict` (and so diffusers' checkpoints), e.g.
//! `down_blocks.0.resnets.1.conv1.weight`. Loading and saving go through those names.

use std::collections::BTreeMap;
use std::path::Path;

use ember_tensor::io::{load_safetensors, save_safetensors};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Tensor};

use crate::error::{Result, UNetError};

/// Something with named parameters.
pub trait Module {
    /// Calls `f(name, parameter)` for every parameter, names prefixed by `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor));
}

/// `prefix.name`, or `name` at the top level.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// Visits a list of modules as `prefix.0`, `prefix.1`, ... (PyTorch's `ModuleList`).
pub fn visit_list<M: Module>(modules: &[M], prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
    for (i, m) in modules.iter().enumerate() {
        m.visit(&join(prefix, &i.to_string()), f);
    }
}

/// Every parameter with its name, in visiting order.
pub fn named_parameters(module: &dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    module.visit("", &mut |name, t| out.push((name, t.clone())));
    out
}

/// Moves every parameter of the module to `device`, in place ([`Tensor::relocate`]).
pub fn to_device(module: &dyn Module, device: ember_tensor::Device) -> Result<()> {
    for (_, p) in named_parameters(module) {
        p.relocate(device)?;
    }
    Ok(())
}

/// The number of scalar parameters.
pub fn parameter_count(module: &dyn Module) -> usize {
    named_parameters(module).iter().map(|(_, t)| t.numel()).sum()
}

/// The current name of a parameter named the deprecated way of diffusers' attention blocks
/// (`query`, `key`, `value`, `proj_attn`: google/ddpm-cifar10-32 and other early checkpoints),
/// as diffusers renames them on load (`to_q`, `to_k`, `to_v`, `to_out.0`); `None` for any other
/// name.
pub fn current_attention_name(name: &str) -> Option<String> {
    if !name.contains("attentions.") {
        return None;
    }
    [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")]
        .iter()
        .find_map(|(old, new)| name.find(old).map(|at| format!("{}{new}{}", &name[..at], &name[at + old.len()..])))
}

/// Overwrites the module's parameters with `weights` (converted to each parameter's dtype).
/// Every missing, unexpected or mis-shaped tensor is reported by name, and nothing is written
/// unless all fit. Attention weights under diffusers' deprecated names are taken under their
/// current ones ([`current_attention_name`]), as diffusers does.
pub fn load_weights(module: &dyn Module, weights: &BTreeMap<String, Tensor>) -> Result<()> {
    let renamed: BTreeMap<String, Tensor>;
    let weights = if weights.keys().any(|k| current_attention_name(k).is_some_and(|new| !weights.contains_key(&new))) {
        renamed = weights
            .iter()
            .map(|(k, t)| match current_attention_name(k).filter(|new| !weights.contains_key(new)) {
                Some(new) => (new, t.clone()),
                None => (k.clone(), t.clone()),
            })
            .collect();
        &renamed
    } else {
        weights
    };
    let params = named_parameters(module);
    let (mut missing, mut mis_shaped) = (Vec::new(), Vec::new());
    for (name, p) in &params {
        match weights.get(name) {
            None => missing.push(name.clone()),
            Some(w) if w.shape() != p.shape() => mis_shaped.push(format!("{name} (file {:?}, model {:?})", w.shape(), p.shape())),
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<String> = weights.keys().filter(|k| !known.contains(k.as_str())).cloned().collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mis_shaped.is_empty() {
        return Err(UNetError::WeightMismatch { missing, unexpected, mis_shaped });
    }
    for (name, p) in &params {
        p.assign(&weights[name].to_dtype(p.dtype())?)?;
    }
    Ok(())
}

/// Loads a safetensors file into the module ([`load_weights`]).
pub fn load_weights_file(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let file = load_safetensors(path)?;
    load_weights(module, &file.tensors)
}

/// Saves the module's parameters (converted to `dtype`) with `metadata`, atomically.
pub fn save_weights_file(module: &dyn Module, path: impl AsRef<Path>, dtype: DType, metadata: &BTreeMap<String, String>) -> Result<()> {
    let params = named_parameters(module);
    let converted: Vec<(String, Tensor)> = params.iter().map(|(n, t)| Ok((n.clone(), t.to_dtype(dtype)?))).collect::<Result<_>>()?;
    let refs: Vec<(&str, &Tensor)> = converted.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(path, &refs, metadata)?;
    Ok(())
}

/// What a forward pass needs besides its inputs: whether it trains (dropout on) and the
/// random stream dropout draws from.
pub struct ForwardContext<'a> {
    pub training: bool,
    pub rng: &'a mut Rng,
}

/// PyTorch's default init for Linear and Conv layers, `U(−1/√fan_in, 1/√fan_in)` for both the
/// weight (kaiming_uniform with a = √5) and the bias.
pub fn uniform_fan_in(shape: &[usize], fan_in: usize, dtype: DType, rng: &mut Rng) -> Result<Tensor> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Ok(Tensor::rand_uniform(shape, -bound, bound, dtype, rng)?.variable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;

    struct TwoLayers {
        first: Linear,
        second: Linear,
    }

    impl Module for TwoLayers {
        fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
            self.first.visit(&join(prefix, "first"), f);
            self.second.visit(&join(prefix, "second"), f);
        }
    }

    fn model() -> TwoLayers {
        let mut rng = Rng::new(0);
        TwoLayers { first: Linear::new(3, 4, DType::F32, &mut rng).unwrap(), second: Linear::new(4, 2, DType::F32, &mut rng).unwrap() }
    }

    #[test]
    fn loading_reports_every_missing_unexpected_and_mis_shaped_tensor_and_writes_nothing() {
        let m = model();
        let before: Vec<Vec<f64>> = named_parameters(&m).iter().map(|(_, t)| t.to_vec_f64()).collect();
        let mut weights: BTreeMap<String, Tensor> = named_parameters(&model()).into_iter().collect();
        weights.remove("second.bias");
        weights.insert("first.bias".into(), Tensor::zeros(&[5], DType::F32));
        weights.insert("third.weight".into(), Tensor::zeros(&[1], DType::F32));
        match load_weights(&m, &weights) {
            Err(UNetError::WeightMismatch { missing, unexpected, mis_shaped }) => {
                assert_eq!(missing, ["second.bias"]);
                assert_eq!(unexpected, ["third.weight"]);
                assert_eq!(mis_shaped.len(), 1);
                assert!(mis_shaped[0].starts_with("first.bias"), "{mis_shaped:?}");
            }
            other => panic!("expected a WeightMismatch, got {other:?}"),
        }
        let after: Vec<Vec<f64>> = named_parameters(&m).iter().map(|(_, t)| t.to_vec_f64()).collect();
        assert_eq!(before, after, "a failed load changes nothing");
    }

    #[test]
    fn saved_weights_load_back_exactly_under_the_same_names() {
        let (a, b) = (model(), model());
        for (_, p) in named_parameters(&a) {
            p.assign(&p.add_scalar(0.5).unwrap()).unwrap();
        }
        let path = std::env::temp_dir().join(format!("ember-module-test-{}.safetensors", std::process::id()));
        save_weights_file(&a, &path, DType::F32, &BTreeMap::new()).unwrap();
        load_weights_file(&b, &path).unwrap();
        for ((na, pa), (nb, pb)) in named_parameters(&a).iter().zip(named_parameters(&b).iter()) {
            assert_eq!(na, nb);
            assert_eq!(pa.to_vec_f64(), pb.to_vec_f64(), "{na}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
