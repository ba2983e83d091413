//! The `ember` command and the run folder, end to end: the spellings the issue requires,
//! the files a run writes, resuming (which trims the loss log back to the checkpoint), and the
//! refusal to overwrite a run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn ember(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ember")).args(args).output().expect("run ember");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn loss_rows(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("loss.csv")).unwrap().lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect()
}

#[test]
fn info_prints_the_papers_parameter_count() {
    let (ok, text) = ember(&["info", "--preset", "ddpm-cifar10"]);
    assert!(ok, "{text}");
    assert!(text.contains("35,746,307"), "{text}");
}

#[test]
fn train_sample_resume_and_refuse_to_overwrite() {
    let dir = temp_dir("train");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let common = ["--preset", "tiny", "--batch-size", "2", "--data", "procedural:8", "--out", run_s];
    let options = ["--checkpoint-every", "2", "--sample-every", "2", "--sample-count", "1", "--sample-steps", "2"];
    let (ok, text) = ember(&[&["train", "--steps", "3", "--accumulate", "2"][..], &common, &options].concat());
    assert!(ok, "{text}");
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(config.contains("\"accumulate\": 2"), "--accumulate reaches the run's config: {config}");
    for file in [
        "config.json",
        "loss.csv",
        "loss.png",
        "lr.png",
        "grad_norm.png",
        "report.html",
        "checkpoint.safetensors",
        "samples/step_0000002.png",
        "samples/step_0000003.png",
    ] {
        assert!(run.join(file).exists(), "{file} missing after training");
    }
    assert_eq!(loss_rows(&run), [1, 2, 3]);

    let (ok, text) = ember(&[&["train", "--steps", "3"][..], &common].concat());
    assert!(!ok && text.contains("already holds a run"), "a second run in the same folder must be refused: {text}");

    // pretend the process died after logging step 4 but before checkpointing it
    let mut csv = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    csv.push_str("4,0.5,1.0,0.0001\n");
    std::fs::write(run.join("loss.csv"), csv).unwrap();
    let (ok, text) = ember(&[&["train", "--steps", "5", "--resume"][..], &common, &options].concat());
    assert!(ok, "{text}");
    assert_eq!(loss_rows(&run), [1, 2, 3, 4, 5], "rows after the checkpoint are replaced by the resumed steps");

    let grid = dir.join("grid.png");
    let checkpoint = run.join("checkpoint.safetensors");
    let (ok, text) =
        ember(&["sample", "--checkpoint", checkpoint.to_str().unwrap(), "--sampler", "ddim", "--steps", "3", "--n", "4", "--out", grid.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(grid.exists());
    // strided DDPM (diffusers' set_timesteps): 5 of the 1000 steps; more steps than T is refused
    let ddpm = |steps: &str| {
        ember(&["sample", "--checkpoint", checkpoint.to_str().unwrap(), "--sampler", "ddpm", "--steps", steps, "--n", "2", "--out", grid.to_str().unwrap()])
    };
    let (ok, text) = ddpm("5");
    assert!(ok, "{text}");
    let (ok, text) = ddpm("1001");
    assert!(!ok && text.contains("steps = 1001"), "{text}");
    let (ok, text) = ember(&["sample", "--checkpoint", "/nonexistent/checkpoint.safetensors", "--out", grid.to_str().unwrap()]);
    assert!(!ok && text.contains("/nonexistent/checkpoint.safetensors"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_command_has_help() {
    for command in ["train", "sample", "eval", "info", "export", "train-classifier"] {
        let (ok, text) = ember(&[command, "--help"]);
        assert!(ok && text.contains("Usage"), "{command} --help: {text}");
    }
}

/// The shipped class-conditional model (docs/fashion-mnist-cond/) samples by class name, and
/// `eval --class-accuracy` finds the shipped Fashion-MNIST classifier on its own.
#[test]
fn the_shipped_conditional_model_samples_a_class_and_is_read_by_the_shipped_classifier() {
    let dir = temp_dir("shipped-cond");
    let checkpoint = concat!(env!("CARGO_MANIFEST_DIR"), "/checkpoints/tiny-cond-fashion-mnist-f16.safetensors");
    let out = dir.join("sneakers.png");
    let (ok, text) = ember(&["sample", "--checkpoint", checkpoint, "--class", "sneaker", "--n", "2", "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(ok && text.contains("2 images, class sneaker, guidance 3") && text.contains("step 5000"), "{text}");
    let (ok, text) = ember(&["eval", "--checkpoint", checkpoint, "--class-accuracy", "--n", "1", "--steps", "2", "--batch-size", "10"]);
    assert!(ok && text.contains("classifier-fashion-mnist-f16.safetensors (trained on fashion-mnist, 92.08% on its test split)"), "{text}");
    assert!(text.contains("ankle-boot") && text.contains("guidance 3: 1 images per class"), "{text}");
}

/// `ember sample --batch-size`: --n images drawn a batch at a time.
#[test]
fn sampling_in_batches_draws_the_images_of_one_batch_with_ddim() {
    let dir = temp_dir("batches");
    let png = |name: &str, batch: &str, eta: &str| {
        let out = dir.join(name);
        let (ok, text) = ember(&["sample", "--n", "3", "--batch-size", batch, "--steps", "2", "--eta", eta, "--out", out.to_str().unwrap()]);
        assert!(ok && text.contains("3 images"), "{text}");
        std::fs::read(out).unwrap()
    };
    // DDIM at eta 0 draws only x_T, from one stream: batches of 2 + 1 continue where the first stopped
    assert_eq!(png("a.png", "2", "0"), png("b.png", "3", "0"));
    // at eta 1 each step's noise comes between the batches' draws, so the images differ
    assert_ne!(png("c.png", "1", "1"), png("d.png", "3", "1"));
    // diffusers' trailing spacing starts at T - 1: other timesteps, other images
    let trailing = dir.join("trailing.png");
    let (ok, text) = ember(&["sample", "--n", "3", "--steps", "2", "--spacing", "trailing", "--out", trailing.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert_ne!(std::fs::read(trailing).unwrap(), png("f.png", "3", "0"));
    let (ok, text) = ember(&["sample", "--n", "3", "--batch-size", "0", "--out", dir.join("e.png").to_str().unwrap()]);
    assert!(!ok && text.contains("--batch-size must be at least 1"), "{text}");
}

/// `--device cuda` runs the shipped model on a CUDA device (the emulator when there is no
/// GPU) and draws the same image; an unknown device is refused with the spellings, and so is
/// `--precision tf32` on the CPU.
#[cfg(feature = "cuda-emu")]
#[test]
fn sample_on_a_cuda_device_draws_the_cpu_image() {
    let dir = temp_dir("sample-device");
    let (cpu, gpu) = (dir.join("cpu.png"), dir.join("gpu.png"));
    let args = ["sample", "--sampler", "ddim", "--steps", "2", "--n", "1", "--out"];
    let (ok, text) = ember(&[&args[..], &[cpu.to_str().unwrap()]].concat());
    assert!(ok, "{text}");
    let (ok, text) = ember(&[&args[..], &[gpu.to_str().unwrap(), "--device", "cuda"]].concat());
    assert!(ok, "{text}");
    assert_eq!(std::fs::read(&gpu).unwrap(), std::fs::read(&cpu).unwrap(), "the PNGs differ");
    let (ok, text) = ember(&[&args[..], &[gpu.to_str().unwrap(), "--device", "tpu"]].concat());
    assert!(!ok && text.contains("use cpu, cuda or cuda:N"), "{text}");
    // TF32 products on the device draw an image too; on the CPU the switch is refused
    let tf32 = dir.join("tf32.png");
    let (ok, text) = ember(&[&args[..], &[tf32.to_str().unwrap(), "--device", "cuda", "--precision", "tf32"]].concat());
    assert!(ok && text.contains("(tf32 products)") && tf32.exists(), "{text}");
    let (ok, text) = ember(&[&args[..], &[tf32.to_str().unwrap(), "--precision", "tf32"]].concat());
    assert!(!ok && text.contains("--precision tf32 is for CUDA devices"), "{text}");
    let (ok, text) = ember(&[&args[..], &[tf32.to_str().unwrap(), "--precision", "bf8"]].concat());
    assert!(!ok && text.contains("f32, tf32 or bf16"), "{text}");
}

#[test]
fn a_class_conditional_run_trains_from_labels_and_samples_by_class_with_guidance() {
    let dir = temp_dir("conditional");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let (ok, text) = ember(&[
        "train",
        "--preset",
        "tiny-cond",
        "--data",
        "procedural:16",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--out",
        run_s,
        "--checkpoint-every",
        "0",
        "--sample-every",
        "0",
        "--sample-count",
        "3",
        "--sample-steps",
        "2",
        "--lr-decay",
        "cosine",
        "--weight-decay",
        "0.01",
    ]);
    assert!(ok, "{text}");
    // not a terminal: the progress comes as plain lines, not a hidden bar
    assert!(text.contains("training from step 0 to 2") && text.contains("step 2/2 loss"), "{text}");
    // the table was sized to the data's 3 shapes and the null class
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(config.contains("\"num_class_embeds\": 4") && config.contains("\"stripes\""), "{config}");
    assert!(config.contains("\"lr_decay\": \"cosine\"") && config.contains("\"weight_decay\": 0.01"), "{config}");
    let checkpoint = run.join("checkpoint.safetensors");
    let checkpoint_s = checkpoint.to_str().unwrap();
    let out = dir.join("square.png");
    let (ok, text) =
        ember(&["sample", "--checkpoint", checkpoint_s, "--class", "square", "--guidance", "2", "--n", "2", "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(ok && text.contains("class square, guidance 2") && out.exists(), "{text}");
    let (ok, text) = ember(&["sample", "--checkpoint", checkpoint_s, "--class", "all", "--n", "1", "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(ok && text.contains("3 images, one row of 1 per class"), "{text}");
    let (ok, text) = ember(&["sample", "--checkpoint", checkpoint_s, "--class", "sneaker", "--n", "1", "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(!ok && text.contains("disc, square, stripes"), "{text}");
    // eval gives the conditional bound, on the test images' own labels
    let (ok, text) = ember(&["eval", "--checkpoint", checkpoint_s, "--n", "1", "--batch-size", "1"]);
    assert!(ok && text.contains("bits/dim"), "{text}");
    // guidance measured: a classifier of the shapes, then the share of samples it reads right
    let (ok, text) = ember(&["eval", "--checkpoint", checkpoint_s, "--class-accuracy", "--n", "1", "--steps", "2"]);
    assert!(!ok && text.contains("ember train-classifier --data procedural:16"), "no classifier ships for procedural data: {text}");
    let classifier = dir.join("classifier.safetensors");
    let classifier_s = classifier.to_str().unwrap();
    let (ok, text) =
        ember(&["train-classifier", "--data", "procedural:64", "--widths", "8", "--epochs", "1", "--batch-size", "16", "--warmup", "2", "--out", classifier_s]);
    assert!(ok && text.contains("test accuracy per class (64 images)") && text.contains("with the weights rounded to F16") && classifier.exists(), "{text}");
    let (ok, text) =
        ember(&["eval", "--checkpoint", checkpoint_s, "--class-accuracy", "--classifier", classifier_s, "--guidance", "0,3", "--n", "2", "--steps", "2"]);
    assert!(ok && text.contains("guidance 0: 2 images per class") && text.contains("guidance 3: 2 images per class"), "{text}");
    assert!(text.matches("/2 ").count() >= 6 && text.matches("overall").count() == 2, "a row per class and guidance: {text}");
    // FID/KID in the classifier's features, beside the training images' floor
    let (ok, text) = ember(&["eval", "--checkpoint", checkpoint_s, "--fid", "--classifier", classifier_s, "--n", "6", "--steps", "2", "--batch-size", "4"]);
    assert!(ok && text.contains("6 images each") && text.contains("in the classifier's 8 features"), "{text}");
    assert!(text.contains("samples") && text.contains("training images (floor)") && text.matches("FID").count() >= 3, "{text}");
    let (ok, text) = ember(&["info", "--preset", "tiny-cond"]);
    assert!(ok && text.contains("11 class embeddings"), "{text}");
    // the shipped unconditional model refuses a class
    let (ok, text) = ember(&["sample", "--class", "square", "--n", "1", "--steps", "1", "--out", out.to_str().unwrap()]);
    assert!(!ok && text.contains("not class-conditional"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn info_describes_a_diffusers_cross_attention_config() {
    // the config.json diffusers wrote for the cross-attention parity fixture
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unet/unet_cross_attn_conv_io.safetensors");
    let file = ember::tensor::io::load_safetensors(fixture).unwrap();
    let dir = temp_dir("cross-attn-info");
    let config = dir.join("config.json");
    std::fs::write(&config, &file.metadata["config"]).unwrap();
    let (ok, text) = ember(&["info", "--unet-config", config.to_str().unwrap()]);
    assert!(ok && text.contains("context tokens of 32 dims") && text.contains("2 per transformer"), "{text}");
    assert!(text.contains("272,226"), "diffusers counts 272,226 parameters: {text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pytorch_pickle_is_refused_with_how_to_convert_it() {
    let dir = temp_dir("pickle");
    let path = dir.join("model.ckpt");
    std::fs::write(&path, b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl").unwrap();
    let out = dir.join("grid.png");
    let (ok, text) = ember(&["sample", "--checkpoint", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && text.contains("PyTorch pickle") && text.contains("torch.load('model.ckpt'") && text.contains("safetensors"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Text to image from the command line: the three stages on the fixture's 500 real garments
/// (copied as both splits), two steps each, then the pipeline they make draws a grid, converts
/// to f16 and is measured; a stage refuses to start over a run, and latent diffusion needs its
/// two frozen parts.
#[test]
fn the_three_text_to_image_stages_train_and_their_pipeline_draws() {
    let dir = temp_dir("txt2img");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-mnist-test-500");
    for kind in ["images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"] {
        for split in ["train", "t10k"] {
            std::fs::copy(fixture.join(format!("t10k-{kind}")), dir.join(format!("{split}-{kind}"))).unwrap();
        }
    }
    let data = format!("fashion-mnist:{}", dir.display());
    let path = |name: &str| dir.join(name).display().to_string();
    let stage = ["--data", &data, "--steps", "2", "--batch-size", "4", "--sample-every", "2", "--checkpoint-every", "2"];
    let (ok, text) = ember(&[&["train-vae", "--out", &path("vae")][..], &stage].concat());
    assert!(ok && text.contains("test PSNR") && text.contains("latent scaling factor"), "{text}");
    assert!(dir.join("vae/samples/step_0000002.png").exists() && dir.join("vae/metrics.csv").exists());
    let (ok, text) = ember(&[&["train-vae", "--out", &path("vae")][..], &stage].concat());
    assert!(!ok && text.contains("already holds a run"), "{text}");
    let (ok, text) = ember(&[&["train-clip", "--out", &path("clip")][..], &stage].concat());
    assert!(ok && text.contains("retrieval among 100 canvases"), "{text}");
    let latent = ["--data", &data, "--steps", "2", "--batch-size", "2", "--sample-every", "2", "--checkpoint-every", "2", "--sample-steps", "2"];
    let (ok, text) = ember(&[&["train", "--pipeline", "txt2img", "--out", &path("ldm")][..], &latent].concat());
    assert!(!ok && text.contains("--vae"), "{text}");
    let (vae, clip) = (path("vae/checkpoint.safetensors"), path("clip/checkpoint.safetensors"));
    let (ok, text) = ember(&[&["train", "--pipeline", "txt2img", "--vae", &vae, "--text-encoder", &clip, "--out", &path("ldm")][..], &latent].concat());
    assert!(ok && text.contains("pipeline.safetensors"), "{text}");
    let (ok, text) = ember(&["export", "--checkpoint", &path("ldm/pipeline.safetensors"), "--out", &path("small.safetensors")]);
    assert!(ok && text.contains("text-to-image pipeline"), "{text}");
    let grid = path("grid.png");
    let (ok, text) =
        ember(&["txt2img", "--pipeline", &path("small.safetensors"), "--prompt", "a bag left of a frog", "--n", "2", "--steps", "2", "--out", &grid]);
    assert!(ok && text.contains("does not know frog"), "{text}");
    assert!(Path::new(&grid).exists());
    let (ok, text) =
        ember(&["eval", "--checkpoint", &path("small.safetensors"), "--prompt-fidelity", "--guidance", "1", "--n", "1", "--steps", "2", "--data", &data]);
    assert!(ok && text.contains("| generated, guidance 1 |") && text.contains("| real, "), "{text}");
}

/// The shipped text-to-image pipeline (docs/txt2img/) answers a prompt on a fresh clone, with
/// no --pipeline.
#[test]
fn the_shipped_pipeline_answers_a_prompt() {
    let grid = temp_dir("shipped-txt2img").join("grid.png");
    let (ok, text) = ember(&["txt2img", "--prompt", "two bags", "--n", "2", "--steps", "5", "--out", grid.to_str().unwrap()]);
    assert!(ok && text.contains("txt2img-fashion-mnist-f16.safetensors"), "{text}");
    assert!(grid.exists());
}

/// The text-to-image stage 3 and the prompt-fidelity evaluation run on the CPU only: a CUDA
/// device or TF32 is refused with a message, not ignored.
#[test]
fn txt2img_training_and_prompt_fidelity_refuse_a_cuda_device_or_tf32() {
    let dir = temp_dir("txt2img-device");
    let out = dir.join("run");
    for device in [["--device", "cuda"], ["--precision", "tf32"]] {
        let (ok, text) = ember(&[&["train", "--pipeline", "txt2img", "--out", out.to_str().unwrap()][..], &device[..]].concat());
        assert!(!ok && text.contains("--pipeline txt2img trains on the CPU (in f32) for now"), "{text}");
        let (ok, text) =
            ember(&[&["eval", "--checkpoint", "checkpoints/txt2img-fashion-mnist-f16.safetensors", "--prompt-fidelity"][..], &device[..]].concat());
        assert!(!ok && text.contains("--prompt-fidelity runs on the CPU (in f32) for now"), "{text}");
    }
}
