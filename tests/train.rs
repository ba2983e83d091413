//! Proofs for the trainer: it learns (a CI-sized run on procedural data; a single batch
//! overfit to near zero), a resumed run reproduces the uninterrupted run's losses exactly, and
//! NaN/Inf stops a run without touching the last good checkpoint.

use ember::diffusion::{NoiseSchedule, epsilon_loss_with};
use ember::tensor::optim::{Adam, AdamConfig};
use ember::tensor::rng::Rng;
use ember::tensor::{DType, Tensor};
use ember::train::checkpoint::{Checkpoint, save_checkpoint};
use ember::train::data::{Dataset, Split, procedural};
use ember::train::{TrainConfig, TrainError, Trainer};
use ember::unet::config::{ATTN_DOWN_BLOCK, ATTN_UP_BLOCK, DOWN_BLOCK, UP_BLOCK};
use ember::unet::module::named_parameters;
use ember::unet::{ForwardContext, UNet, UNetConfig};

/// A two-level UNet on 16×16 images: the tiny preset's structure at CI size.
fn small_unet() -> UNetConfig {
    UNetConfig {
        sample_size: 16,
        block_out_channels: vec![16, 32],
        down_block_types: vec![DOWN_BLOCK.into(), ATTN_DOWN_BLOCK.into()],
        up_block_types: vec![ATTN_UP_BLOCK.into(), UP_BLOCK.into()],
        layers_per_block: 1,
        norm_num_groups: 4,
        ..UNetConfig::tiny(1)
    }
}

fn small_config(steps: u64) -> TrainConfig {
    TrainConfig {
        unet: small_unet(),
        data: "procedural:256:16".into(),
        batch_size: 16,
        steps,
        lr: 2e-3,
        warmup_steps: 10,
        checkpoint_every: 0,
        sample_every: 0,
        sample_steps: 10,
        ..TrainConfig::default()
    }
}

fn trainer(config: TrainConfig) -> Trainer {
    let dataset = Dataset::from_name(&config.data, Split::Train, 1).unwrap();
    Trainer::new(config, dataset).unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-train-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn training_on_procedural_data_brings_the_loss_under_a_bound() {
    let mut t = trainer(small_config(150));
    let losses: Vec<f64> = (0..150).map(|_| t.train_step().unwrap().loss).collect();
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[130..].iter().sum::<f64>() / 20.0;
    // ε-prediction starts near 1 (the variance of the noise); the model must learn a lot of it
    assert!(first > 0.5, "first losses {first}");
    assert!(last < 0.2, "mean loss of the last 20 steps is {last} (first 10: {first})");
}

#[test]
fn a_single_batch_is_overfit_to_near_zero() {
    let mut unet = small_unet();
    unet.dropout = 0.0;
    let model = UNet::new(&unet, DType::F32, &mut Rng::new(0)).unwrap();
    let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let data = procedural(4, 1, 16, 3).unwrap();
    let x0 = data.batch(&[0, 1, 2, 3], &[false; 4]).unwrap();
    let mut rng = Rng::new(5);
    let t = [10, 250, 500, 900];
    let noise = Tensor::randn(x0.shape(), 0.0, 1.0, DType::F32, &mut rng);
    let params = named_parameters(&model).into_iter().map(|(_, p)| p).collect();
    let mut adam = Adam::new(params, AdamConfig::adam(3e-3)).unwrap();
    let mut unused = Rng::new(0);
    let mut loss_value = f64::INFINITY;
    for _ in 0..300 {
        let mut predict = |x: &Tensor, ts: &[f64]| model.forward(x, ts, &mut ForwardContext { training: true, rng: &mut unused });
        let loss = epsilon_loss_with(&mut predict, &schedule, &x0, &t, &noise).unwrap();
        loss_value = loss.item().unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
    }
    assert!(loss_value < 0.01, "the loss on one fixed batch only reached {loss_value}");
}

#[test]
fn a_resumed_run_reproduces_the_uninterrupted_runs_losses_exactly() {
    let mut uninterrupted = trainer(small_config(6));
    let expected: Vec<f64> = (0..6).map(|_| uninterrupted.train_step().unwrap().loss).collect();

    let mut first_half = trainer(small_config(6));
    let mut losses: Vec<f64> = (0..3).map(|_| first_half.train_step().unwrap().loss).collect();
    let path = temp_dir("resume").join("checkpoint.safetensors");
    save_checkpoint(&first_half, &path).unwrap();
    drop(first_half);

    let checkpoint = Checkpoint::load(&path).unwrap();
    assert_eq!(checkpoint.step, 3);
    let dataset = Dataset::from_name(&checkpoint.config.data, Split::Train, 1).unwrap();
    let mut resumed = checkpoint.into_trainer(dataset).unwrap();
    losses.extend((0..3).map(|_| resumed.train_step().unwrap().loss));
    assert_eq!(losses, expected, "bit-for-bit the same losses");
    for ((name, a), (_, b)) in named_parameters(&resumed.ema).iter().zip(named_parameters(&uninterrupted.ema).iter()) {
        assert_eq!(a.to_vec_f64(), b.to_vec_f64(), "EMA weight {name}");
    }
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn the_learning_rate_warms_up_then_holds_or_decays_to_zero() {
    use ember::train::trainer::{LrDecay, scheduled_lr};
    let lr = |decay, step| scheduled_lr(1e-3, 10, decay, step, 110);
    for decay in [LrDecay::Constant, LrDecay::Linear, LrDecay::Cosine] {
        assert!((lr(decay, 0) - 1e-4).abs() < 1e-15 && (lr(decay, 9) - 1e-3).abs() < 1e-15 && (lr(decay, 10) - 1e-3).abs() < 1e-15);
    }
    assert_eq!(lr(LrDecay::Constant, 109), 1e-3);
    assert!((lr(LrDecay::Linear, 60) - 0.5e-3).abs() < 1e-15 && (lr(LrDecay::Linear, 85) - 0.25e-3).abs() < 1e-15);
    assert!((lr(LrDecay::Cosine, 60) - 0.5e-3).abs() < 1e-15 && (lr(LrDecay::Cosine, 35) - 0.5e-3 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-15);
    assert_eq!((lr(LrDecay::Linear, 110), lr(LrDecay::Cosine, 500)), (0.0, 0.0), "past the end: 0");
    assert_eq!(scheduled_lr(1e-3, 0, LrDecay::Linear, 0, 4), 1e-3, "no warmup starts at the peak");
}

#[test]
fn lr_decay_and_weight_decay_train_resume_exactly_and_old_configs_read_as_adam() {
    use ember::train::trainer::LrDecay;
    let config = TrainConfig { lr_decay: LrDecay::Cosine, weight_decay: 0.5, warmup_steps: 2, ..small_config(6) };
    let mut uninterrupted = trainer(config.clone());
    let stats: Vec<_> = (0..6).map(|_| uninterrupted.train_step().unwrap()).collect();
    for (step, s) in stats.iter().enumerate() {
        assert_eq!(s.lr, config.lr_at(step as u64), "step {step}");
    }
    assert!(stats[5].lr < 0.2 * config.lr, "decayed by the last step: {}", stats[5].lr);
    // weight decay shrinks the weights: the same run without it ends elsewhere
    let mut plain = trainer(TrainConfig { weight_decay: 0.0, ..config.clone() });
    for _ in 0..6 {
        plain.train_step().unwrap();
    }
    let norm = |t: &Trainer| named_parameters(&t.model).iter().map(|(_, p)| p.sqr().unwrap().sum_all().unwrap().item().unwrap()).sum::<f64>();
    assert!(norm(&uninterrupted) < norm(&plain), "AdamW's weights are smaller: {} vs {}", norm(&uninterrupted), norm(&plain));

    let mut first_half = trainer(config.clone());
    for _ in 0..3 {
        first_half.train_step().unwrap();
    }
    let path = temp_dir("decay").join("checkpoint.safetensors");
    save_checkpoint(&first_half, &path).unwrap();
    let checkpoint = Checkpoint::load(&path).unwrap();
    assert_eq!((checkpoint.config.lr_decay, checkpoint.config.weight_decay), (LrDecay::Cosine, 0.5));
    let dataset = Dataset::from_name(&checkpoint.config.data, Split::Train, 1).unwrap();
    let mut resumed = checkpoint.into_trainer(dataset).unwrap();
    let losses: Vec<f64> = (0..3).map(|_| resumed.train_step().unwrap().loss).collect();
    assert_eq!(losses, stats[3..].iter().map(|s| s.loss).collect::<Vec<_>>(), "bit-for-bit");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();

    // a config written before these settings existed reads as constant-rate Adam
    let mut json: serde_json::Value = serde_json::to_value(small_config(6)).unwrap();
    let fields = json.as_object_mut().unwrap();
    assert!(fields.remove("lr_decay").is_some() && fields.remove("weight_decay").is_some());
    let old: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!((old.lr_decay, old.weight_decay), (LrDecay::Constant, 0.0));
    assert!(TrainConfig { weight_decay: -1.0, ..small_config(6) }.validate().is_err());
}

#[test]
fn a_nan_stops_the_step_and_leaves_the_weights_and_checkpoint_alone() {
    let mut t = trainer(small_config(10));
    t.train_step().unwrap();
    let dir = temp_dir("nan");
    let path = dir.join("checkpoint.safetensors");
    save_checkpoint(&t, &path).unwrap();
    let saved = std::fs::read(&path).unwrap();

    let (name, poisoned) = named_parameters(&t.model).into_iter().find(|(n, _)| n.ends_with("conv_in.weight")).unwrap();
    let mut values = poisoned.to_vec_f64();
    values[0] = f64::NAN;
    poisoned.assign(&Tensor::from_f64(&values, poisoned.shape(), DType::F32).unwrap()).unwrap();
    let before: Vec<Vec<f64>> = named_parameters(&t.model).iter().map(|(_, p)| p.to_vec_f64()).collect();
    match t.train_step() {
        Err(TrainError::NonFinite { step, what, .. }) => {
            assert_eq!(step, 2);
            assert!(what.contains("loss"), "{what}");
        }
        other => panic!("expected a NonFinite error after poisoning {name}, got {other:?}"),
    }
    assert_eq!(t.step, 1, "the failed step is not counted");
    let after: Vec<Vec<f64>> = named_parameters(&t.model).iter().map(|(_, p)| p.to_vec_f64()).collect();
    let same = before.iter().zip(&after).all(|(a, b)| a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
    assert!(same, "no weight changed");
    assert_eq!(std::fs::read(&path).unwrap(), saved, "the checkpoint is untouched");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_a_file_that_is_not_a_checkpoint_names_the_problem() {
    let dir = temp_dir("bad-checkpoint");
    let path = dir.join("weights.safetensors");
    let t = Tensor::ones(&[2], DType::F32);
    ember::tensor::io::save_safetensors(&path, &[("x", &t)], &Default::default()).unwrap();
    let err = Checkpoint::load(&path).err().expect("not a checkpoint");
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("not an ember checkpoint"), "{err}");
    std::fs::write(&path, b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    assert!(Checkpoint::load(&path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_that_does_not_fit_the_data_is_a_config_error() {
    let mut config = small_config(1);
    config.unet.in_channels = 3;
    config.unet.out_channels = 3;
    let dataset = Dataset::from_name(&config.data, Split::Train, 1).unwrap();
    assert!(matches!(Trainer::new(config, dataset), Err(TrainError::Config(_))));
}

#[test]
fn an_f16_export_samples_like_the_checkpoint_and_cannot_be_resumed() {
    let mut t = trainer(small_config(2));
    t.train_step().unwrap();
    let dir = temp_dir("export");
    let (full, small) = (dir.join("checkpoint.safetensors"), dir.join("ema-f16.safetensors"));
    save_checkpoint(&t, &full).unwrap();
    Checkpoint::load(&full).unwrap().export_ema(&small, DType::F16).unwrap();
    assert!(std::fs::metadata(&small).unwrap().len() * 3 < std::fs::metadata(&full).unwrap().len());
    let exported = Checkpoint::load(&small).unwrap();
    let model = exported.model(true).unwrap();
    for ((name, a), (_, b)) in named_parameters(&model).iter().zip(named_parameters(&t.ema).iter()) {
        let rounded = b.to_dtype(DType::F16).unwrap().to_vec_f64();
        assert_eq!(a.to_vec_f64(), rounded, "{name} is the f16-rounded EMA weight");
    }
    let dataset = Dataset::from_name("procedural:256:16", Split::Train, 1).unwrap();
    assert!(matches!(exported.into_trainer(dataset), Err(TrainError::Checkpoint { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `small_config` with a class-conditional UNet for the procedural data's 3 shapes (+ null).
fn conditional_config(steps: u64) -> TrainConfig {
    TrainConfig { unet: UNetConfig { num_class_embeds: Some(4), ..small_unet() }, cond_drop: 0.5, ..small_config(steps) }
}

#[test]
fn a_class_conditional_run_trains_on_labels_keeps_the_class_names_and_resumes_exactly() {
    let mut uninterrupted = trainer(conditional_config(6));
    assert_eq!(uninterrupted.config.class_names, ["disc", "square", "stripes"]);
    assert_eq!(uninterrupted.config.null_class(), 3);
    let expected: Vec<f64> = (0..6).map(|_| uninterrupted.train_step().unwrap().loss).collect();
    assert!(expected.iter().all(|l| l.is_finite()));

    let mut first_half = trainer(conditional_config(6));
    let mut losses: Vec<f64> = (0..3).map(|_| first_half.train_step().unwrap().loss).collect();
    let path = temp_dir("resume-conditional").join("checkpoint.safetensors");
    save_checkpoint(&first_half, &path).unwrap();
    let checkpoint = Checkpoint::load(&path).unwrap();
    assert_eq!(checkpoint.config.class_names, ["disc", "square", "stripes"], "the class names travel in the checkpoint");
    let dataset = Dataset::from_name(&checkpoint.config.data, Split::Train, 1).unwrap();
    let mut resumed = checkpoint.into_trainer(dataset).unwrap();
    losses.extend((0..3).map(|_| resumed.train_step().unwrap().loss));
    assert_eq!(losses, expected, "bit-for-bit the same losses, label drops included");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();

    // the labels reach the model: the same run without them (an unconditional model) differs
    let mut unconditional = trainer(small_config(1));
    assert_ne!(unconditional.train_step().unwrap().loss, expected[0]);
}

#[test]
fn a_class_conditional_model_needs_labelled_data_and_a_null_class() {
    let data = Dataset::from_name("procedural:64:16", Split::Train, 1).unwrap();
    let three = TrainConfig { unet: UNetConfig { num_class_embeds: Some(3), ..small_unet() }, ..small_config(1) };
    let error = Trainer::new(three, data.clone()).err().unwrap().to_string();
    assert!(error.contains("3 class embeddings") && error.contains("needs 4"), "{error}");
    let unlabelled = Dataset::from_values("unlabelled", data.image(0).to_vec(), 1, 16).unwrap();
    let error = Trainer::new(conditional_config(1), unlabelled).err().unwrap().to_string();
    assert!(error.contains("has no labels"), "{error}");
    let mut resumed_elsewhere = conditional_config(1);
    resumed_elsewhere.class_names = vec!["a".into(), "b".into(), "c".into()];
    let error = Trainer::new(resumed_elsewhere, data).err().unwrap().to_string();
    assert!(error.contains("the run's classes"), "{error}");
}

#[test]
fn classifier_free_guidance_is_diffusers_formula_in_one_batched_forward() {
    use ember::diffusion::ddim_sample;
    use ember::train::sampling::{ClassGuidance, Sampler, guided_noise, sample_images_guided};
    // the formula on fixed predictions: ε_u + w·(ε_c − ε_u)
    let (eps_c, eps_u) = (Tensor::from_f64(&[3.0, -2.0], &[2], DType::F64).unwrap(), Tensor::from_f64(&[1.0, 2.0], &[2], DType::F64).unwrap());
    assert_eq!(guided_noise(&eps_c, &eps_u, 3.0).unwrap().to_vec_f64(), [7.0, -10.0]);
    assert_eq!(guided_noise(&eps_c, &eps_u, 0.0).unwrap().to_vec_f64(), [1.0, 2.0]);

    // end to end on a random class-conditional model, DDIM with 3 steps
    let config = UNetConfig { num_class_embeds: Some(4), ..small_unet() };
    let model = UNet::new(&config, DType::F32, &mut Rng::new(5)).unwrap();
    let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let sampler = Sampler::Ddim { steps: 3, eta: 0.0, spacing: ember::diffusion::TimestepSpacing::Leading };
    let draw = |classes: Vec<usize>, scale: f64| {
        let guidance = ClassGuidance { classes, null_class: 3, scale };
        sample_images_guided(&model, &schedule, &guidance, sampler, false, &mut Rng::new(9), &mut |_, _| {}).unwrap().to_vec_f64()
    };
    // scale 1 is the conditional model alone: the same as DDIM on forward_with_classes
    let classes = vec![0, 2];
    let mut direct = |x: &Tensor, t: &[f64]| model.forward_with_classes(x, t, Some(&classes), &mut ForwardContext { training: false, rng: &mut Rng::new(0) });
    let expected = ddim_sample(&mut direct, &schedule, &[2, 1, 16, 16], DType::F32, 3, 0.0, &mut Rng::new(9), &mut |_, _| {}).unwrap().to_vec_f64();
    let conditional = draw(vec![0, 2], 1.0);
    let err = ember::tensor::testing::relative_error(&conditional, &expected);
    assert!(err < 1e-5, "scale 1 against the conditional model: {err:e}");
    // scale 0 is the null class alone, whatever the classes asked for
    let unconditional = draw(vec![0, 2], 0.0);
    let err = ember::tensor::testing::relative_error(&unconditional, &draw(vec![3, 3], 1.0));
    assert!(err < 1e-5, "scale 0 against the null class: {err:e}");
    // and the classes matter
    assert!(ember::tensor::testing::relative_error(&conditional, &unconditional) > 1e-3);
    assert!(ember::tensor::testing::relative_error(&draw(vec![0, 2], 3.0), &conditional) > 1e-3);
}

/// The parameters of a trainer's model (or EMA) as one flat list per tensor.
fn weights(module: &UNet) -> Vec<(String, Vec<f64>)> {
    named_parameters(module).into_iter().map(|(name, p)| (name, p.to_vec_f64())).collect()
}

#[test]
fn accumulating_k_micro_batches_is_one_step_on_a_batch_k_times_larger() {
    // a conditional model with random flips and label drops, so that every per-image draw
    // is exercised; no dropout (its masks are drawn per forward pass: see the trainer's doc)
    let config = |batch_size, accumulate| {
        let mut config = TrainConfig { batch_size, accumulate, grad_clip: 0.5, ..conditional_config(3) };
        config.unet.dropout = 0.0;
        config
    };
    let mut big = trainer(config(16, 1));
    let mut accumulated = trainer(config(4, 4));
    for step in 0..3 {
        let (b, a) = (big.train_step().unwrap(), accumulated.train_step().unwrap());
        assert_eq!((a.step, a.lr), (b.step, b.lr), "one optimizer step, one learning rate");
        assert!((a.loss - b.loss).abs() < 1e-6 * b.loss, "step {step}: loss {} vs {}", a.loss, b.loss);
        assert!(b.grad_norm > 0.5, "clipping is exercised: the norm is {}", b.grad_norm);
        assert!((a.grad_norm - b.grad_norm).abs() < 1e-5 * b.grad_norm, "step {step}: gradient norm {} vs {}", a.grad_norm, b.grad_norm);
    }
    assert_eq!((accumulated.rngs.data, accumulated.rngs.noise), (big.rngs.data, big.rngs.noise), "the same draws");
    // All parameters together agree to 1e-5 of their scale; each tensor to 1e-4 of its own.
    // (Adam divides by the gradient's magnitude, so an element whose gradient is at rounding
    // level, such as an attention key bias, which softmax makes exactly gradient-free, takes a
    // step of rounding-dependent size: per tensor, the bound is looser.)
    for (model, reference) in [(&accumulated.model, &big.model), (&accumulated.ema, &big.ema)] {
        let (model, reference) = (weights(model), weights(reference));
        let flat = |w: &[(String, Vec<f64>)]| w.iter().flat_map(|(_, v)| v.iter().copied()).collect::<Vec<f64>>();
        let err = ember::tensor::testing::relative_error(&flat(&model), &flat(&reference));
        assert!(err < 1e-5, "all parameters: {err:e}");
        for ((name, a), (_, b)) in model.iter().zip(&reference) {
            let err = ember::tensor::testing::relative_error(a, b);
            assert!(err < 1e-4, "{name}: {err:e}");
        }
    }
    // the control: 3 steps of batch 4 alone end elsewhere
    let mut small = trainer(config(4, 1));
    for _ in 0..3 {
        small.train_step().unwrap();
    }
    let (a, b) = (weights(&small.model), weights(&big.model));
    assert!(a.iter().zip(&b).any(|((_, a), (_, b))| ember::tensor::testing::relative_error(a, b) > 1e-3));
}

#[test]
fn an_accumulating_run_resumes_exactly_and_old_configs_read_as_no_accumulation() {
    let config = TrainConfig { batch_size: 4, accumulate: 3, ..small_config(4) };
    let mut uninterrupted = trainer(config.clone());
    let expected: Vec<f64> = (0..4).map(|_| uninterrupted.train_step().unwrap().loss).collect();
    let mut first_half = trainer(config);
    let mut losses: Vec<f64> = (0..2).map(|_| first_half.train_step().unwrap().loss).collect();
    let path = temp_dir("resume-accumulate").join("checkpoint.safetensors");
    save_checkpoint(&first_half, &path).unwrap();
    let checkpoint = Checkpoint::load(&path).unwrap();
    assert_eq!(checkpoint.config.accumulate, 3);
    let dataset = Dataset::from_name(&checkpoint.config.data, Split::Train, 1).unwrap();
    let mut resumed = checkpoint.into_trainer(dataset).unwrap();
    losses.extend((0..2).map(|_| resumed.train_step().unwrap().loss));
    assert_eq!(losses, expected, "bit-for-bit, dropout included");
    assert_eq!(weights(&resumed.model), weights(&uninterrupted.model));
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();

    let mut json: serde_json::Value = serde_json::to_value(small_config(6)).unwrap();
    assert!(json.as_object_mut().unwrap().remove("accumulate").is_some());
    let old: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.accumulate, 1);
    assert!(TrainConfig { accumulate: 0, ..small_config(6) }.validate().is_err());
}

#[test]
fn without_accumulation_a_step_is_the_plain_algorithm_bit_for_bit() {
    // the trainer against Algorithm 1 written out here: one batch, L_simple with t then ε from
    // the noise stream, backward, clipping, Adam at the warmup rate, EMA
    let config = conditional_config(2);
    let mut t = trainer(config.clone());
    let mut by_hand = trainer(config.clone());
    for step in 0..2 {
        let stats = t.train_step().unwrap();
        let h = &mut by_hand;
        let (indices, flips) = h.dataset.sample_indices(config.batch_size, &mut h.rngs.data, true);
        let x0 = h.dataset.batch(&indices, &flips).unwrap();
        let drops = h.rngs.data.uniform_values(indices.len());
        let labels = h.dataset.batch_labels(&indices).unwrap().unwrap();
        let classes: Vec<usize> = labels.iter().zip(drops).map(|(&l, u)| if u < config.cond_drop { 3 } else { l }).collect();
        let (model, dropout) = (&h.model, &mut h.rngs.dropout);
        let mut predict = |x: &Tensor, ts: &[f64]| model.forward_with_classes(x, ts, Some(&classes), &mut ForwardContext { training: true, rng: dropout });
        let loss = ember::diffusion::epsilon_loss(&mut predict, &h.schedule, &x0, &mut h.rngs.noise).unwrap();
        assert_eq!(loss.item().unwrap(), stats.loss, "step {step}: the loss");
        let mut grads = loss.backward().unwrap();
        assert_eq!(grads.clip_global_norm(config.grad_clip).unwrap(), stats.grad_norm, "step {step}: the gradient norm");
        h.adam.config.lr = config.lr_at(step);
        h.adam.step(&grads).unwrap();
        let decay = config.ema_decay_at(step);
        for ((_, e), (_, p)) in named_parameters(&h.ema).iter().zip(named_parameters(&h.model).iter()) {
            ember::tensor::optim::ema_update(e, p, decay).unwrap();
        }
    }
    assert_eq!(t.rngs, by_hand.rngs, "the same draws");
    assert_eq!(weights(&t.model), weights(&by_hand.model));
    assert_eq!(weights(&t.ema), weights(&by_hand.ema));
}

#[test]
fn ddpm_sampling_takes_every_timestep_or_strides_with_the_librarys_clip_switch() {
    use ember::diffusion::{DdpmOptions, DdpmVariance, ddpm_sample, ddpm_sample_strided, ddpm_timesteps};
    use ember::train::sampling::{Sampler, sample_images};
    let model = UNet::new(&small_unet(), DType::F32, &mut Rng::new(5)).unwrap();
    let schedule = NoiseSchedule::linear(20, 1e-3, 0.2).unwrap();
    let variance = DdpmVariance::Posterior;
    let draw =
        |steps, clip| sample_images(&model, &schedule, 2, Sampler::Ddpm { variance, steps }, clip, &mut Rng::new(9), &mut |_, _| {}).unwrap().to_vec_f64();
    let mut direct = |x: &Tensor, t: &[f64]| model.forward(x, t, &mut ForwardContext { training: false, rng: &mut Rng::new(0) });
    // all T steps without clipping: Algorithm 2
    let shape = [2, 1, 16, 16];
    let algorithm2 = ddpm_sample(&mut direct, &schedule, &shape, DType::F32, variance, &mut Rng::new(9), &mut |_, _| {}).unwrap();
    assert_eq!(draw(20, false), algorithm2.to_vec_f64());
    // 5 strided steps with clipping: the library's strided sampler with clip_sample
    let mut rng = Rng::new(9);
    let x_t = Tensor::randn(&shape, 0.0, 1.0, DType::F32, &mut rng);
    let options = DdpmOptions { variance, clip_sample: true };
    let strided = ddpm_sample_strided(&mut direct, &schedule, x_t, &ddpm_timesteps(20, 5).unwrap(), options, &mut rng, &mut |_, _| {}).unwrap();
    assert_eq!(draw(5, true), strided.to_vec_f64());
    assert!(ember::tensor::testing::relative_error(&draw(5, false), &strided.to_vec_f64()) > 1e-3, "the clip switch reaches the sampler");
}

struct Quiet;
impl ember::train::run::Observer for Quiet {}

/// `eval_every`: the run logs the FID of its EMA samples (in a classifier's features) to
/// metrics.csv at those steps and the last, finite and the same in a resumed run as in the
/// uninterrupted one (the same samples from the same seed, the same test images).
#[test]
fn a_run_logs_fid_every_k_steps_to_metrics_csv_and_resumes_with_the_same_values() {
    use ember::train::classifier::{Classifier, ClassifierConfig};
    use ember::train::run::{RunDir, train};
    let dir = temp_dir("fid-every");
    let classifier_path = dir.join("classifier.safetensors");
    let names = procedural(4, 1, 16, 0).unwrap().class_names().to_vec();
    let classifier =
        Classifier::new(&ClassifierConfig { block_out_channels: vec![8, 16], norm_num_groups: 4, ..ClassifierConfig::small(1, 16, names) }, &mut Rng::new(3))
            .unwrap();
    classifier.save(&classifier_path, DType::F32, "procedural", None).unwrap();
    let config = |steps| TrainConfig {
        eval_every: 2,
        eval_samples: 8,
        eval_classifier: classifier_path.display().to_string(),
        sample_steps: 2,
        checkpoint_every: 2,
        ..small_config(steps)
    };
    let rows = |run: &RunDir| std::fs::read_to_string(run.root.join("metrics.csv")).unwrap().lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    let straight = RunDir::new(dir.join("straight"));
    train(Some(config(5)), None, &straight, ember::tensor::Device::Cpu, &mut Quiet).unwrap();
    let logged = rows(&straight);
    assert_eq!(logged.iter().map(|r| r.split(',').next().unwrap().to_string()).collect::<Vec<_>>(), ["2", "4", "5"], "{logged:?}");
    for row in &logged {
        let fid: f64 = row.strip_prefix(row.split(',').next().unwrap()).unwrap().trim_start_matches(",fid,").parse().unwrap();
        assert!(fid.is_finite() && fid >= 0.0, "{row}");
    }
    let stopped = RunDir::new(dir.join("stopped"));
    train(Some(config(2)), None, &stopped, ember::tensor::Device::Cpu, &mut Quiet).unwrap();
    train(Some(config(5)), Some(&stopped.checkpoint()), &stopped, ember::tensor::Device::Cpu, &mut Quiet).unwrap();
    assert_eq!(rows(&stopped), logged);
    // a run asked to measure without a classifier is refused before it starts
    assert!(Trainer::new(TrainConfig { eval_classifier: String::new(), ..config(2) }, procedural(32, 1, 16, 0).unwrap()).is_err());
}
