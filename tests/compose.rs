//! The composed text-to-image data (`ember::train::compose`) and its word tokenizer: captions
//! say what the canvas shows (classes, order, count), training avoids the held-out pairs, the
//! canvas holds the garments in their cells, the stream makes it all reproducible; the
//! tokenizer frames, pads, masks and round-trips.

use std::collections::BTreeSet;

use ember::tensor::DType;
use ember::tensor::rng::Rng;
use ember::train::compose::{CANVAS_HEIGHT, CANVAS_WIDTH, ComposedData, GARMENT_WORDS, Scene, caption, caption_words, held_out_pairs};
use ember::train::data::{Dataset, FASHION_MNIST_CLASSES, Labels};
use ember::train::tokenizer::{END_ID, PAD_ID, START_ID, UNKNOWN_ID, WordTokenizer};

/// 20 synthetic 32×32 "garments", two per class, each filled with a value that names it:
/// image i has every pixel (i − 10) / 10.
fn garments() -> Dataset {
    let values: Vec<f32> = (0..20).flat_map(|i| std::iter::repeat_n((i as f32 - 10.0) / 10.0, 32 * 32)).collect();
    let names = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    Dataset::from_values("synthetic", values, 1, 32).unwrap().with_labels(Labels::new((0..20).map(|i| i % 10).collect(), names).unwrap()).unwrap()
}

/// The class whose garments have pixel value `v` (image i = class i % 10).
fn class_of(v: f32) -> usize {
    ((v * 10.0).round() as i64 + 10) as usize % 10
}

#[test]
fn captions_name_the_garments_in_an_order_that_matches_the_canvas() {
    let mut rng = Rng::new(1);
    let singular = |class: usize, text: &str| GARMENT_WORDS[class].0.iter().any(|w| text.contains(w));
    for (left, (_, plural)) in GARMENT_WORDS.iter().enumerate() {
        for right in 0..10 {
            let text = caption(Scene::Pair { left, right }, &mut rng);
            if left == right {
                assert_eq!(text, format!("two {plural}"));
                continue;
            }
            let (l, r) = (text.find(" left of ").or(text.find(" to the left of ")), text.find(" right of ").or(text.find(" to the right of ")));
            // "X left of Y": X is the left garment; "Y right of X": Y is the right one
            match (l, r) {
                (Some(at), None) => assert!(singular(left, &text[..at]) && singular(right, &text[at..]), "{text}"),
                (None, Some(at)) => assert!(singular(right, &text[..at]) && singular(left, &text[at..]), "{text}"),
                _ => panic!("{text}: one relation"),
            }
        }
        let one = caption(Scene::One(left), &mut rng);
        assert!(singular(left, &one) && (one.starts_with("a ") || one.starts_with("an ")), "{one}");
    }
    let boots: BTreeSet<String> = (0..40).map(|_| caption(Scene::One(9), &mut rng)).collect();
    assert_eq!(boots, BTreeSet::from(["an ankle boot".to_string(), "a boot".to_string()]), "articles and synonyms");
    let words = caption_words();
    assert!(words.contains(&"sneaker".to_string()) && words.contains(&"left".to_string()) && words.contains(&"pairs".to_string()));
}

#[test]
fn training_scenes_avoid_the_held_out_pairs_and_canvases_show_their_scene() {
    let held_out = held_out_pairs(10, 7);
    assert_eq!(held_out.len(), 10);
    assert_eq!(held_out, held_out_pairs(10, 7), "deterministic from the seed");
    assert!(held_out.iter().all(|(l, r)| l != r && *l < 10 && *r < 10));
    let data = ComposedData::new(garments(), &held_out).unwrap();
    let mut rng = Rng::new(3);
    let (batch, captions, scenes) = data.training_batch(300, DType::F32, &mut rng).unwrap();
    assert_eq!(batch.shape(), [300, 1, CANVAS_HEIGHT, CANVAS_WIDTH]);
    assert_eq!(captions.len(), 300);
    let values = batch.to_vec_f64();
    let mut kinds = BTreeSet::new();
    for (i, scene) in scenes.iter().enumerate() {
        let canvas = &values[i * CANVAS_HEIGHT * CANVAS_WIDTH..][..CANVAS_HEIGHT * CANVAS_WIDTH];
        let at = |x: usize| canvas[5 * CANVAS_WIDTH + x] as f32;
        match *scene {
            Scene::One(class) => {
                kinds.insert("one");
                assert_eq!(class_of(at(32)), class, "middle cell");
                assert_eq!((at(0), at(63)), (-1.0, -1.0), "background at the edges");
            }
            Scene::Pair { left, right } => {
                kinds.insert(if left == right { "two" } else { "pair" });
                assert!(!held_out.contains(&(left, right)), "held-out pair {left}, {right} in training");
                assert_eq!((class_of(at(0)), class_of(at(40))), (left, right));
            }
        }
    }
    assert_eq!(kinds.len(), 3, "all kinds of scene appear");
    // the same stream gives the same batch
    let (again, again_captions, _) = data.training_batch(300, DType::F32, &mut Rng::new(3)).unwrap();
    assert_eq!((again.to_vec_f64(), again_captions), (values, captions));
    // bad inputs are typed errors
    assert!(ComposedData::new(garments(), &[(3, 3)]).is_err());
    let unlabelled = Dataset::from_values("u", vec![0.0; 32 * 32], 1, 32).unwrap();
    assert!(ComposedData::new(unlabelled, &[]).is_err());
}

#[test]
fn the_tokenizer_frames_pads_masks_and_round_trips() {
    let tokenizer = WordTokenizer::for_captions();
    assert_eq!(tokenizer.max_length(), 16);
    let encoded = tokenizer.encode(&["A Sneaker to the left of a bag", "two hats"]).unwrap();
    let first = &encoded.ids[0];
    // 8 words between the start and the end token, then padding
    assert_eq!((first[0], first[9], first[10], first[15]), (START_ID, END_ID, PAD_ID, PAD_ID));
    assert_eq!(encoded.mask[0].iter().filter(|&&m| m == 1).count(), 10);
    assert_eq!(tokenizer.decode(first), "a sneaker to the left of a bag");
    assert_eq!(encoded.ids[1][2], UNKNOWN_ID, "hats is not a word of the captions");
    assert_eq!(tokenizer.unknown_words("two hats"), ["hats"]);
    assert_eq!(encoded.mask_values().len(), 32);
    assert!(tokenizer.encode(&["a a a a a a a a a a a a a a a"]).is_err(), "15 words do not fit in 16 tokens");
    let restored = WordTokenizer::from_json(&tokenizer.to_json(), 16).unwrap();
    assert_eq!(restored, tokenizer);
    assert!(WordTokenizer::from_json(r#"{"a": 0, "b": 1}"#, 16).is_err());
    // every caption encodes without unknown words
    let mut rng = Rng::new(5);
    for class in 0..10 {
        for other in 0..10 {
            let text = caption(Scene::Pair { left: class, right: other }, &mut rng);
            assert!(tokenizer.unknown_words(&text).is_empty(), "{text}");
            tokenizer.encode(&[&text]).unwrap();
        }
    }
}

/// The autoencoder's objective trains: a small `AutoencoderKL` on composed canvases (the
/// synthetic garments) lowers its loss and raises its reconstruction PSNR with Adam, and the
/// KL term pulls the posterior toward the prior as β grows.
#[test]
fn a_small_vae_learns_to_reconstruct_composed_canvases() {
    use ember::tensor::optim::{Adam, AdamConfig};
    use ember::train::autoencoder::{psnr, vae_loss};
    use ember::unet::module::named_parameters;
    use ember::unet::{AutoencoderKL, VaeConfig};
    let config = VaeConfig::from_json(
        r#"{"in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16, 16], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#,
    )
    .unwrap();
    let model = AutoencoderKL::new(&config, DType::F32, &mut Rng::new(0)).unwrap();
    let data = ComposedData::new(garments(), &[]).unwrap();
    let (fixed, _, _) = data.training_batch(8, DType::F32, &mut Rng::new(11)).unwrap();
    let mut adam = Adam::new(named_parameters(&model).into_iter().map(|(_, p)| p).collect(), AdamConfig::adam(2e-3)).unwrap();
    let mut rng = Rng::new(12);
    let before = vae_loss(&model, &fixed, 1e-4, &mut Rng::new(13)).unwrap();
    let psnr_before = psnr(&before.decoded, &fixed).unwrap();
    for _ in 0..40 {
        let (x, _, _) = data.training_batch(8, DType::F32, &mut rng).unwrap();
        let step = vae_loss(&model, &x, 1e-4, &mut rng).unwrap();
        adam.step(&step.loss.backward().unwrap()).unwrap();
    }
    let after = vae_loss(&model, &fixed, 1e-4, &mut Rng::new(13)).unwrap();
    let psnr_after = psnr(&after.decoded, &fixed).unwrap();
    assert!(after.reconstruction < 0.5 * before.reconstruction, "reconstruction {} → {}", before.reconstruction, after.reconstruction);
    assert!(psnr_after > psnr_before + 3.0, "PSNR {psnr_before:.1} → {psnr_after:.1} dB");
    assert!(before.kl.is_finite() && after.kl >= 0.0);
    // PSNR of identical images is infinite; of images off by 0.2 everywhere, 10·log10(4/0.04) = 20 dB
    assert_eq!(psnr(&fixed, &fixed).unwrap(), f64::INFINITY);
    assert!((psnr(&fixed.add_scalar(0.2).unwrap(), &fixed).unwrap() - 20.0).abs() < 1e-4);
}
