//! The classifier behind `ember eval --class-accuracy`: it learns (the procedural shapes, far
//! above chance), its file keeps its weights and classes, the shipped Fashion-MNIST classifier
//! reads real test images (a committed slice of the test split), and the sampled accuracy of a
//! class-conditional model counts what it should and refuses a classifier of other classes.

use std::path::PathBuf;

use ember::diffusion::NoiseSchedule;
use ember::tensor::rng::Rng;
use ember::tensor::{DType, Device, Tensor};
use ember::train::classifier::{Classifier, ClassifierConfig, ClassifierEvent, ClassifierTraining, dataset_accuracy, sampled_class_accuracy, train_classifier};
use ember::train::data::{Dataset, PROCEDURAL_CLASSES, Split};
use ember::train::sampling::Sampler;
use ember::unet::ForwardContext;
use ember::unet::{UNet, UNetConfig};

fn procedural_names() -> Vec<String> {
    PROCEDURAL_CLASSES.iter().map(|n| n.to_string()).collect()
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ember-classifier-test-{}-{name}", std::process::id()))
}

/// A small classifier trained on 1000 procedural 16×16 images (under a second).
fn trained_on_shapes() -> (Classifier, f64, Vec<f64>) {
    let train = Dataset::from_name("procedural:1000:16", Split::Train, 1).unwrap();
    let test = Dataset::from_name("procedural:1000:16", Split::Test, 1).unwrap();
    let config = ClassifierConfig { block_out_channels: vec![8, 16], ..ClassifierConfig::small(1, 16, procedural_names()) };
    let classifier = Classifier::new(&config, &mut Rng::new(0)).unwrap();
    let training = ClassifierTraining { epochs: 4, batch_size: 32, lr: 3e-3, warmup_steps: 10, random_flip: true, seed: 0 };
    let mut losses = Vec::new();
    let accuracy = train_classifier(&classifier, &train, Some(&test), &training, Device::Cpu, &mut |event| {
        if let ClassifierEvent::Step { loss, .. } = event {
            losses.push(loss);
        }
    })
    .unwrap()
    .expect("a test set was given");
    (classifier, accuracy.overall(), losses)
}

#[test]
fn a_classifier_learns_the_procedural_shapes_far_above_chance() {
    let (classifier, accuracy, losses) = trained_on_shapes();
    assert_eq!(losses.len(), 4 * 1000usize.div_ceil(32));
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..20]), mean(&losses[losses.len() - 20..]));
    assert!(last < 0.5 * first, "the loss should fall: {first:.3} → {last:.3}");
    // chance is a third; this setup reaches about 93%
    assert!(accuracy > 0.85, "test accuracy {accuracy}");
    // the accuracy the loop reports is the one dataset_accuracy measures
    let test = Dataset::from_name("procedural:1000:16", Split::Test, 1).unwrap();
    assert_eq!(dataset_accuracy(&classifier, &test, 100).unwrap().overall(), accuracy);
}

#[test]
fn the_classifier_file_keeps_weights_classes_and_accuracy() {
    let (classifier, accuracy, _) = trained_on_shapes();
    let images = Dataset::from_name("procedural:64:16", Split::Test, 1).unwrap().batch(&(0..64).collect::<Vec<_>>(), &[false; 64]).unwrap();
    let logits = |c: &Classifier| c.forward(&images, &mut ForwardContext { training: false, rng: &mut Rng::new(0) }).unwrap().to_vec_f64();
    let path = temp_file("f32.safetensors");
    classifier.save(&path, DType::F32, "procedural:1000:16", Some(accuracy)).unwrap();
    let loaded = Classifier::load(&path).unwrap();
    assert_eq!(loaded.classifier.config, classifier.config);
    assert_eq!(loaded.data, "procedural:1000:16");
    assert!((loaded.test_accuracy.unwrap() - accuracy).abs() < 1e-4);
    assert_eq!(logits(&loaded.classifier), logits(&classifier), "f32 weights come back exactly");
    // f16: the same predictions on these images, logits within f16 rounding
    let path16 = temp_file("f16.safetensors");
    classifier.save(&path16, DType::F16, "procedural:1000:16", None).unwrap();
    let loaded16 = Classifier::load(&path16).unwrap();
    assert_eq!(loaded16.test_accuracy, None);
    let (a, b) = (logits(&classifier), logits(&loaded16.classifier));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst < 0.05, "f16 logits differ by {worst}");
    assert_eq!(classifier.predict(&images, 16).unwrap(), loaded16.classifier.predict(&images, 64).unwrap());
    // a file that is not a classifier is refused by name
    let other = temp_file("other.safetensors");
    ember::tensor::io::save_safetensors(&other, &[("w", &Tensor::zeros(&[2], DType::F32))], &Default::default()).unwrap();
    let error = Classifier::load(&other).err().expect("not a classifier").to_string();
    assert!(error.contains("not an ember classifier"), "{error}");
    for p in [path, path16, other] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn bad_classifier_configs_and_images_are_refused() {
    let names = procedural_names();
    let bad = [
        ClassifierConfig { class_names: vec!["one".into()], ..ClassifierConfig::small(1, 16, names.clone()) },
        ClassifierConfig { block_out_channels: vec![12], ..ClassifierConfig::small(1, 16, names.clone()) },
        ClassifierConfig { block_out_channels: vec![8; 5], ..ClassifierConfig::small(1, 16, names.clone()) },
        ClassifierConfig { dropout: 1.0, ..ClassifierConfig::small(1, 16, names.clone()) },
    ];
    for config in bad {
        assert!(Classifier::new(&config, &mut Rng::new(0)).is_err(), "{config:?}");
    }
    let classifier = Classifier::new(&ClassifierConfig::small(1, 16, names), &mut Rng::new(0)).unwrap();
    let error = classifier.predict(&Tensor::zeros(&[2, 1, 32, 32], DType::F32), 2).unwrap_err().to_string();
    assert!(error.contains("[n, 1, 16, 16]"), "{error}");
}

/// The shipped Fashion-MNIST classifier (`ember train-classifier --data fashion-mnist`, f16)
/// on the first 500 images of the real test split (`scripts/make_fashion_mnist_slice.py`).
#[test]
fn the_shipped_fashion_mnist_classifier_reads_real_test_images() {
    let root = env!("CARGO_MANIFEST_DIR");
    let loaded = Classifier::load(&PathBuf::from(root).join("checkpoints/classifier-fashion-mnist-f16.safetensors")).unwrap();
    assert!(loaded.test_accuracy.unwrap() >= 0.90, "the issue asks for ≥ 90% on the test split; the file says {:?}", loaded.test_accuracy);
    let slice = Dataset::from_name(&format!("fashion-mnist:{root}/tests/fixtures/fashion-mnist-test-500"), Split::Test, 1).unwrap();
    assert_eq!(slice.len(), 500);
    let accuracy = dataset_accuracy(&loaded.classifier, &slice, 250).unwrap();
    assert!(accuracy.overall() >= 0.88, "{:.4} on the 500 images:\n{}", accuracy.overall(), accuracy.table());
    assert!((0..10).all(|c| accuracy.of_class(c) >= 0.6), "every class is read:\n{}", accuracy.table());
}

#[test]
fn sampled_class_accuracy_counts_each_class_and_refuses_other_classes() {
    let mut config = UNetConfig::preset("tiny-cond", 1).unwrap();
    config.sample_size = 16;
    config.block_out_channels = vec![16, 16];
    config.down_block_types = vec!["DownBlock2D".into(), "DownBlock2D".into()];
    config.up_block_types = vec!["UpBlock2D".into(), "UpBlock2D".into()];
    config.norm_num_groups = 8;
    config.num_class_embeds = Some(4);
    let model = UNet::new(&config, DType::F32, &mut Rng::new(0)).unwrap();
    let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let classifier =
        Classifier::new(&ClassifierConfig { block_out_channels: vec![8], ..ClassifierConfig::small(1, 16, procedural_names()) }, &mut Rng::new(1)).unwrap();
    let sampler = Sampler::Ddim { steps: 2, eta: 0.0, spacing: ember::diffusion::TimestepSpacing::Leading };
    let run = |seed| {
        let mut calls = Vec::new();
        let accuracy =
            sampled_class_accuracy(&model, &procedural_names(), 3, &schedule, &classifier, 3, 2.0, sampler, 4, &mut Rng::new(seed), &mut |done, total| {
                calls.push((done, total))
            })
            .unwrap();
        (accuracy, calls)
    };
    let (accuracy, calls) = run(0);
    assert_eq!(accuracy.total, vec![3, 3, 3]);
    assert!(accuracy.correct.iter().zip(&accuracy.total).all(|(c, t)| c <= t));
    assert_eq!(calls, vec![(4, 9), (8, 9), (9, 9)], "batches of 4");
    assert_eq!(run(0).0, accuracy, "the same seed draws the same images");
    let other = Classifier::new(
        &ClassifierConfig { block_out_channels: vec![8], ..ClassifierConfig::small(1, 16, vec!["a".into(), "b".into(), "c".into()]) },
        &mut Rng::new(1),
    )
    .unwrap();
    let error = sampled_class_accuracy(&model, &procedural_names(), 3, &schedule, &other, 1, 1.0, sampler, 4, &mut Rng::new(0), &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("the classifier reads the classes"), "{error}");
}
