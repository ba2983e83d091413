//! A small image classifier trained by ember itself: the measure of guided generation
//! (`ember eval --class-accuracy`: does a sample drawn for "sneaker" look like a sneaker to a
//! network that knows Fashion-MNIST?).
//!
//! The network is a plain CNN on the same images the UNet sees (`[n, C, S, S]` in [−1, 1]):
//! per level `i`, conv 3×3 → GroupNorm → SiLU → conv 3×3 stride 2 → GroupNorm → SiLU, with
//! `block_out_channels[i]` channels; then the mean over the remaining pixels (the *features*,
//! one vector per image) and a linear layer to the class scores. It trains with the
//! cross-entropy loss, Adam, a linear warmup and a cosine decay, random horizontal flips.
//!
//! File: one safetensors file with the weights (`blocks.{i}.conv1.weight`, …, `head.weight`)
//! and the metadata `format` = [`FORMAT`], `classifier_config` (JSON, with the class names),
//! `data` and `test_accuracy`.

use std::collections::BTreeMap;
use std::path::Path;

use ember_diffusion::NoiseSchedule;
use ember_tensor::ops::conv::Conv2dParams;
use ember_tensor::optim::{Adam, AdamConfig};
use ember_tensor::rng::Rng;
use ember_tensor::{DType, Device, Tensor, no_grad};
use ember_unet::layers::{Conv2d, GroupNorm, Linear};
use ember_unet::module::{Module, join, load_weights, named_parameters, save_weights_file, visit_list};
use ember_unet::{ForwardContext, UNet};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::sampling::{ClassGuidance, Sampler, sample_images_guided};
use crate::trainer::{LrDecay, scheduled_lr};

pub const FORMAT: &str = "ember-classifier-1";

/// The classifier's architecture and the classes it reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub in_channels: usize,
    /// Images are `image_size × image_size`.
    pub image_size: usize,
    /// Channels of each level; each level halves the image side.
    pub block_out_channels: Vec<usize>,
    pub norm_num_groups: usize,
    /// Dropout on the features before the last layer, while training.
    pub dropout: f64,
    /// One name per class; the class scores are in this order.
    pub class_names: Vec<String>,
}

impl ClassifierConfig {
    /// The default network for `in_channels × image_size²` images of `class_names`: three
    /// levels of 32, 64 and 128 channels (about 290k parameters).
    pub fn small(in_channels: usize, image_size: usize, class_names: Vec<String>) -> ClassifierConfig {
        ClassifierConfig { in_channels, image_size, block_out_channels: vec![32, 64, 128], norm_num_groups: 8, dropout: 0.2, class_names }
    }

    fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(TrainError::Config(format!("classifier: {msg}")));
        if self.class_names.len() < 2 {
            return fail(format!("needs at least 2 classes, got {:?}", self.class_names));
        }
        if self.in_channels == 0 || self.block_out_channels.is_empty() || self.block_out_channels.contains(&0) {
            return fail(format!("needs input channels and levels of ≥ 1 channel, got {} and {:?}", self.in_channels, self.block_out_channels));
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| self.norm_num_groups == 0 || c % self.norm_num_groups != 0) {
            return fail(format!("{c} channels do not split into {} groups", self.norm_num_groups));
        }
        if self.image_size >> self.block_out_channels.len() == 0 {
            return fail(format!("{}×{} images are too small for {} levels that halve them", self.image_size, self.image_size, self.block_out_channels.len()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// One level: two 3×3 convolutions, the second with stride 2, each followed by GroupNorm and SiLU.
pub struct ClassifierBlock {
    pub conv1: Conv2d,
    pub norm1: GroupNorm,
    pub conv2: Conv2d,
    pub norm2: GroupNorm,
}

impl ClassifierBlock {
    pub fn new(c_in: usize, c_out: usize, groups: usize, rng: &mut Rng) -> Result<ClassifierBlock> {
        let (eps, dtype) = (1e-5, DType::F32);
        Ok(ClassifierBlock {
            conv1: Conv2d::new(c_in, c_out, 3, Conv2dParams::new(1, 1), dtype, rng)?,
            norm1: GroupNorm::new(groups, c_out, eps, dtype),
            conv2: Conv2d::new(c_out, c_out, 3, Conv2dParams::new(2, 1), dtype, rng)?,
            norm2: GroupNorm::new(groups, c_out, eps, dtype),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward_silu(&self.conv1.forward(x)?)?;
        Ok(self.norm2.forward_silu(&self.conv2.forward(&h)?)?)
    }
}

impl Module for ClassifierBlock {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.conv1.visit(&join(prefix, "conv1"), f);
        self.norm1.visit(&join(prefix, "norm1"), f);
        self.conv2.visit(&join(prefix, "conv2"), f);
        self.norm2.visit(&join(prefix, "norm2"), f);
    }
}

/// The classifier network (see the module doc).
pub struct Classifier {
    pub config: ClassifierConfig,
    pub blocks: Vec<ClassifierBlock>,
    pub head: Linear,
}

impl Module for Classifier {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_list(&self.blocks, &join(prefix, "blocks"), f);
        self.head.visit(&join(prefix, "head"), f);
    }
}

impl Classifier {
    /// A freshly initialized network (PyTorch's default init), f32.
    pub fn new(config: &ClassifierConfig, rng: &mut Rng) -> Result<Classifier> {
        config.validate()?;
        let mut blocks = Vec::new();
        let mut c_in = config.in_channels;
        for &c in &config.block_out_channels {
            blocks.push(ClassifierBlock::new(c_in, c, config.norm_num_groups, rng)?);
            c_in = c;
        }
        let head = Linear::new(c_in, config.class_names.len(), DType::F32, rng)?;
        Ok(Classifier { config: config.clone(), blocks, head })
    }

    /// The width of [`Classifier::features`]: the last level's channels.
    pub fn feature_dim(&self) -> usize {
        *self.config.block_out_channels.last().expect("a validated config has levels")
    }

    /// The device the parameters are on.
    pub fn device(&self) -> Device {
        self.head.weight.device()
    }

    fn check_images(&self, x: &Tensor) -> Result<()> {
        let c = &self.config;
        let want = [c.in_channels, c.image_size, c.image_size];
        if x.rank() != 4 || x.shape()[1..] != want {
            return Err(TrainError::Config(format!("the classifier reads [n, {}, {}, {}] images, got {:?}", want[0], want[1], want[2], x.shape())));
        }
        Ok(())
    }

    /// The features of images `x [n, C, S, S]`: the last level's channels averaged over its
    /// pixels, `[n, block_out_channels.last()]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.check_images(x)?;
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        Ok(h.mean(&[2, 3], false)?)
    }

    /// The class scores (logits) `[n, classes]`; dropout on the features when `ctx.training`.
    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardContext) -> Result<Tensor> {
        let mut features = self.features(x)?;
        if ctx.training && self.config.dropout > 0.0 {
            features = features.dropout(self.config.dropout, true, ctx.rng)?;
        }
        Ok(self.head.forward(&features)?)
    }

    /// The most likely class of each image (no gradients), computed in batches of `batch_size`
    /// on the classifier's device.
    pub fn predict(&self, x: &Tensor, batch_size: usize) -> Result<Vec<usize>> {
        let classes = self.config.class_names.len();
        let logits = self.in_batches(x, batch_size, |chunk| self.forward(chunk, &mut ForwardContext { training: false, rng: &mut Rng::new(0) }))?;
        Ok(argmax_rows(&logits, classes))
    }

    /// [`Classifier::features`] of images `x [n, C, S, S]` (no gradients), computed in batches
    /// of `batch_size` on the classifier's device: row-major `[n, block_out_channels.last()]`.
    pub fn features_of(&self, x: &Tensor, batch_size: usize) -> Result<Vec<f64>> {
        self.in_batches(x, batch_size, |chunk| self.features(chunk))
    }

    /// `f` of `x` in batches of `batch_size` images moved to the classifier's device, without
    /// gradients; the outputs' values concatenated.
    fn in_batches(&self, x: &Tensor, batch_size: usize, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Vec<f64>> {
        let _guard = no_grad();
        let (n, batch_size) = (x.shape().first().copied().unwrap_or(0), batch_size.max(1));
        let mut values = Vec::new();
        for start in (0..n).step_by(batch_size) {
            values.extend(f(&x.narrow(0, start, batch_size.min(n - start))?.to_device(self.device())?)?.to_vec_f64());
        }
        Ok(values)
    }

    /// Writes the weights (converted to `dtype`) and the config, atomically.
    pub fn save(&self, path: &Path, dtype: DType, data: &str, test_accuracy: Option<f64>) -> Result<()> {
        let mut metadata = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("classifier_config".to_string(), serde_json::to_string_pretty(&self.config).expect("a config serializes")),
            ("data".to_string(), data.to_string()),
        ]);
        if let Some(accuracy) = test_accuracy {
            metadata.insert("test_accuracy".to_string(), format!("{accuracy:.4}"));
        }
        save_weights_file(self, path, dtype, &metadata)?;
        Ok(())
    }

    /// Reads a file written by [`Classifier::save`] (f32 weights in memory, on the CPU).
    pub fn load(path: &Path) -> Result<LoadedClassifier> {
        let file = ember_tensor::io::load_safetensors(path)?;
        let fail = |msg: String| TrainError::Checkpoint { path: path.display().to_string(), msg };
        let get =
            |key: &str| file.metadata.get(key).ok_or_else(|| fail(format!("no {key:?} in the metadata: not an ember classifier (ember train-classifier)")));
        if get("format")? != FORMAT {
            return Err(fail(format!("format {:?}, expected {FORMAT:?} (an ember classifier)", get("format")?)));
        }
        let config: ClassifierConfig = serde_json::from_str(get("classifier_config")?).map_err(|e| fail(format!("bad classifier_config: {e}")))?;
        let classifier = Classifier::new(&config, &mut Rng::new(0))?;
        load_weights(&classifier, &file.tensors)?;
        let test_accuracy = file.metadata.get("test_accuracy").and_then(|a| a.parse().ok());
        Ok(LoadedClassifier { classifier, data: get("data")?.clone(), test_accuracy })
    }
}

/// A classifier read from a file, with what the file says about its training.
pub struct LoadedClassifier {
    pub classifier: Classifier,
    /// The dataset it was trained on.
    pub data: String,
    /// Its accuracy on that dataset's test split, if measured.
    pub test_accuracy: Option<f64>,
}

/// The index of each row's largest value (the first on ties) in row-major `[rows, columns]`.
pub fn argmax_rows(values: &[f64], columns: usize) -> Vec<usize> {
    values
        .chunks(columns.max(1))
        .map(|row| row.iter().enumerate().fold((0, f64::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0)
        .collect()
}

/// How often a classifier's prediction matched the wanted class, per class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAccuracy {
    pub class_names: Vec<String>,
    /// `correct[c]` of `total[c]` images of class `c` were read as `c`.
    pub correct: Vec<usize>,
    pub total: Vec<usize>,
}

impl ClassAccuracy {
    pub fn new(class_names: Vec<String>) -> ClassAccuracy {
        let n = class_names.len();
        ClassAccuracy { class_names, correct: vec![0; n], total: vec![0; n] }
    }

    /// Counts images wanted as `wanted[i]` and read as `predicted[i]`.
    pub fn add(&mut self, wanted: &[usize], predicted: &[usize]) -> Result<()> {
        if wanted.len() != predicted.len() {
            return Err(TrainError::Config(format!("{} wanted classes for {} predictions", wanted.len(), predicted.len())));
        }
        for (&w, &p) in wanted.iter().zip(predicted) {
            if w >= self.total.len() {
                return Err(TrainError::Config(format!("class {w} of {} classes", self.total.len())));
            }
            self.total[w] += 1;
            self.correct[w] += usize::from(w == p);
        }
        Ok(())
    }

    /// The share of class `c`'s images read correctly (NaN with none).
    pub fn of_class(&self, c: usize) -> f64 {
        self.correct[c] as f64 / self.total[c] as f64
    }

    /// The share of all images read correctly (NaN with none).
    pub fn overall(&self) -> f64 {
        self.correct.iter().sum::<usize>() as f64 / self.total.iter().sum::<usize>() as f64
    }

    /// A table: one line per class (`name  correct/total  percent`), then the overall line.
    pub fn table(&self) -> String {
        let width = self.class_names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(7);
        let mut out = String::new();
        for (c, name) in self.class_names.iter().enumerate() {
            out += &format!("  {name:<width$}  {:>5}/{:<5}  {:>6.2}%\n", self.correct[c], self.total[c], 100.0 * self.of_class(c));
        }
        let (correct, total) = (self.correct.iter().sum::<usize>(), self.total.iter().sum::<usize>());
        out += &format!("  {:<width$}  {correct:>5}/{total:<5}  {:>6.2}%\n", "overall", 100.0 * self.overall());
        out
    }
}

/// The accuracy of `classifier` on every image of a labelled `dataset`.
pub fn dataset_accuracy(classifier: &Classifier, dataset: &Dataset, batch_size: usize) -> Result<ClassAccuracy> {
    let labels = dataset.labels().ok_or_else(|| TrainError::Config(format!("{} has no labels to check a classifier against", dataset.name())))?;
    if labels.names() != classifier.config.class_names {
        return Err(TrainError::Config(format!("the classifier's classes are {:?}, the data's {:?}", classifier.config.class_names, labels.names())));
    }
    let mut accuracy = ClassAccuracy::new(labels.names().to_vec());
    let batch_size = batch_size.max(1);
    for start in (0..dataset.len()).step_by(batch_size) {
        let indices: Vec<usize> = (start..(start + batch_size).min(dataset.len())).collect();
        let images = dataset.batch(&indices, &vec![false; indices.len()])?;
        let predicted = classifier.predict(&images, batch_size)?;
        accuracy.add(&labels.classes()[start..start + indices.len()], &predicted)?;
    }
    Ok(accuracy)
}

/// Classifier-free guidance measured: `per_class` images drawn for each class of a
/// class-conditional `model` at guidance `scale`, read by `classifier`; the share read as the
/// class they were drawn for, per class. Images are drawn `batch_size` at a time (each a
/// batched forward of twice as many), on the model's device.
#[allow(clippy::too_many_arguments)]
pub fn sampled_class_accuracy(
    model: &UNet,
    class_names: &[String],
    null_class: usize,
    schedule: &NoiseSchedule,
    classifier: &Classifier,
    per_class: usize,
    scale: f64,
    sampler: Sampler,
    batch_size: usize,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ClassAccuracy> {
    if classifier.config.class_names != class_names {
        return Err(TrainError::Config(format!("the classifier reads the classes {:?}, the model draws {:?}", classifier.config.class_names, class_names)));
    }
    let (c, k) = (&model.config, &classifier.config);
    if (c.in_channels, c.sample_size) != (k.in_channels, k.image_size) {
        return Err(TrainError::Config(format!(
            "the model draws {} channel(s) of {}x{}, the classifier reads {} of {}x{}",
            c.in_channels, c.sample_size, c.sample_size, k.in_channels, k.image_size, k.image_size
        )));
    }
    let mut accuracy = ClassAccuracy::new(class_names.to_vec());
    let wanted: Vec<usize> = (0..class_names.len()).flat_map(|class| std::iter::repeat_n(class, per_class)).collect();
    let mut done = 0;
    for chunk in wanted.chunks(batch_size.max(1)) {
        let guidance = ClassGuidance { classes: chunk.to_vec(), null_class, scale };
        let images = sample_images_guided(model, schedule, &guidance, sampler, true, rng, &mut |_, _| {})?;
        accuracy.add(chunk, &classifier.predict(&images, chunk.len())?)?;
        done += chunk.len();
        progress(done, wanted.len());
    }
    Ok(accuracy)
}

/// How the classifier trains.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierTraining {
    /// Passes over the training set (each a fresh random order).
    pub epochs: usize,
    pub batch_size: usize,
    /// The peak learning rate of Adam, reached after `warmup_steps` and decayed to 0 by the
    /// end along a half cosine.
    pub lr: f64,
    pub warmup_steps: u64,
    pub random_flip: bool,
    pub seed: u64,
}

impl ClassifierTraining {
    /// The learning rate of step `step` (from 0) of `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        scheduled_lr(self.lr, self.warmup_steps, LrDecay::Cosine, step, total)
    }
}

/// What the classifier's training loop reports.
pub enum ClassifierEvent<'a> {
    Step {
        step: u64,
        total: u64,
        loss: f64,
        lr: f64,
    },
    /// After each epoch: the test accuracy when there is a test set.
    Epoch {
        epoch: usize,
        accuracy: Option<&'a ClassAccuracy>,
    },
}

/// Trains `classifier` on the labelled `train` images (on `device`), measuring the accuracy on
/// `test` after each epoch. A non-finite loss stops the run with [`TrainError::NonFinite`].
pub fn train_classifier(
    classifier: &Classifier,
    train: &Dataset,
    test: Option<&Dataset>,
    training: &ClassifierTraining,
    device: Device,
    on_event: &mut dyn FnMut(ClassifierEvent),
) -> Result<Option<ClassAccuracy>> {
    let labels = train.labels().ok_or_else(|| TrainError::Config(format!("{} has no labels to train a classifier on", train.name())))?;
    let config = &classifier.config;
    if labels.names() != config.class_names {
        return Err(TrainError::Config(format!("the classifier's classes are {:?}, the data's {:?}", config.class_names, labels.names())));
    }
    if train.channels() != config.in_channels || train.size() != config.image_size {
        return Err(TrainError::Config(format!(
            "the data has {} channel(s) of {}x{}, the classifier reads {} of {}x{}",
            train.channels(),
            train.size(),
            train.size(),
            config.in_channels,
            config.image_size,
            config.image_size
        )));
    }
    if training.epochs == 0 || training.batch_size == 0 || training.lr.is_nan() || training.lr <= 0.0 {
        return Err(TrainError::Config(format!("classifier training needs epochs, batch size and lr > 0, got {training:?}")));
    }
    ember_unet::module::to_device(classifier, device)?;
    let params: Vec<Tensor> = named_parameters(classifier).into_iter().map(|(_, p)| p).collect();
    let mut adam = Adam::new(params, AdamConfig::adam(training.lr))?;
    let mut rng = Rng::new(training.seed);
    let mut dropout_rng = Rng::new(training.seed ^ 0xd50f);
    let steps_per_epoch = train.len().div_ceil(training.batch_size) as u64;
    let total = steps_per_epoch * training.epochs as u64;
    let mut step = 0;
    let mut accuracy = None;
    for epoch in 0..training.epochs {
        let order = permutation(train.len(), &mut rng);
        for batch in order.chunks(training.batch_size) {
            let flips: Vec<bool> =
                if training.random_flip { rng.uniform_values(batch.len()).into_iter().map(|u| u < 0.5).collect() } else { vec![false; batch.len()] };
            let images = train.batch(batch, &flips)?.to_device(device)?;
            let targets: Vec<usize> = batch.iter().map(|&i| labels.classes()[i]).collect();
            let logits = classifier.forward(&images, &mut ForwardContext { training: true, rng: &mut dropout_rng })?;
            let loss = logits.cross_entropy(&targets)?;
            let loss_value = loss.item()?;
            if !loss_value.is_finite() {
                return Err(TrainError::NonFinite { step: step + 1, what: "the classifier's loss", value: loss_value });
            }
            let grads = loss.backward()?;
            adam.config.lr = training.lr_at(step, total);
            adam.step(&grads)?;
            step += 1;
            on_event(ClassifierEvent::Step { step, total, loss: loss_value, lr: adam.config.lr });
        }
        accuracy = test.map(|test| dataset_accuracy(classifier, test, 256)).transpose()?;
        on_event(ClassifierEvent::Epoch { epoch: epoch + 1, accuracy: accuracy.as_ref() });
    }
    Ok(accuracy)
}

/// A uniformly random order of `0..n` (Fisher–Yates on `rng`'s uniforms).
fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let draws = rng.uniform_values(n);
    for i in (1..n).rev() {
        let j = ((draws[i] * (i + 1) as f64) as usize).min(i);
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_depends_on_the_seed() {
        let a = permutation(1000, &mut Rng::new(1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, permutation(1000, &mut Rng::new(2)));
        assert_eq!(a, permutation(1000, &mut Rng::new(1)));
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax_rows(&[0.0, 2.0, 2.0, -1.0, -3.0, -2.0], 3), vec![1, 0]);
    }

    #[test]
    fn class_accuracy_counts_per_class_and_refuses_bad_classes() {
        let mut accuracy = ClassAccuracy::new(vec!["a".into(), "b".into(), "c".into()]);
        accuracy.add(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2]).unwrap();
        assert_eq!((accuracy.correct.clone(), accuracy.total.clone()), (vec![1, 1, 2], vec![2, 1, 3]));
        assert_eq!(accuracy.overall(), 4.0 / 6.0);
        assert_eq!(accuracy.of_class(2), 2.0 / 3.0);
        assert!(accuracy.add(&[3], &[0]).is_err());
        assert!(accuracy.add(&[0, 1], &[0]).is_err());
        let table = accuracy.table();
        assert!(table.contains("overall") && table.contains("66.67%") && table.contains("50.00%"), "{table}");
    }

    #[test]
    fn the_learning_rate_warms_up_then_decays_to_zero() {
        let t = ClassifierTraining { epochs: 1, batch_size: 1, lr: 1e-3, warmup_steps: 10, random_flip: false, seed: 0 };
        assert!((t.lr_at(0, 110) - 1e-4).abs() < 1e-15);
        assert!((t.lr_at(9, 110) - 1e-3).abs() < 1e-15);
        assert!((t.lr_at(10, 110) - 1e-3).abs() < 1e-15);
        assert!((t.lr_at(60, 110) - 0.5e-3).abs() < 1e-12);
        assert!(t.lr_at(109, 110) < 1e-6);
    }
}
