//! The loader fuzzer's engine, one copy shared by `cargo xtask fuzz` (the long form: ≥ 1M
//! inputs per loader, in a child process under a memory limit; `xtask/src/fuzz.rs`) and
//! `tests/fuzz_loaders.rs` (the short form CI runs).
//!
//! For each of ember's loaders ([`Loader`]) it holds valid files ([`Fuzzer::new`] checks that
//! the loader accepts every one), mutates them, at random (bit flips, interesting bytes and
//! words, truncation, extension, chunk duplication and deletion) and structurally (the
//! safetensors header's shapes, offsets and dtypes; IDX dimensions; PNG chunks with their CRC
//! recomputed so that they pass the CRC check; config values replaced by huge, negative or
//! wrong-typed ones), writes them where the loader reads them and calls it under
//! `catch_unwind`. Returning, `Ok` or a typed `Err`, passes; a panic fails, and the input is
//! saved with the panic's message under the failures folder.
//!
//! Input `index` of a loader depends on `(seed, loader, index)` only, so one input can be
//! made again without the ones before it (`cargo xtask fuzz --loader L --start INDEX
//! --iterations 1`).
#![allow(dead_code)]

pub mod images;
mod json;
mod safetensors;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use images::{cifar_seeds, gzip_stored, idx_seeds, mutate_cifar, mutate_idx, mutate_png, png_seeds};
use json::{config_seeds, mutate_json};
use safetensors::{checkpoint_seeds, mutate_checkpoint, mutate_safetensors, safetensors_seeds};

// ---- the loaders ----------------------------------------------------------------------------

/// A loader of ember's, and the files it is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// `ember_tensor::io::load_safetensors` on a `.safetensors` file.
    Safetensors,
    /// `ember_train::checkpoint::Checkpoint::load` (safetensors plus the `TrainConfig` JSON of
    /// its metadata), then the config's `unet.validate()`.
    Checkpoint,
    /// `ember_train::data::load_mnist` on raw IDX images and labels files.
    Idx,
    /// The same on gzipped IDX files.
    IdxGz,
    /// `ember_train::data::load_cifar10` on a CIFAR-10 binary batch.
    Cifar10,
    /// `Dataset::from_name("png:DIR")`: `read_png` and `load_png_folder` on one PNG.
    Png,
    /// `ember_unet::UNetConfig::from_json`.
    UnetConfig,
    /// `ember_unet::VaeConfig::from_json`.
    VaeConfig,
    /// `ember_unet::clip::ClipTextConfig::from_json`.
    ClipConfig,
}

pub const LOADERS: [Loader; 9] = [
    Loader::Safetensors,
    Loader::Checkpoint,
    Loader::Idx,
    Loader::IdxGz,
    Loader::Cifar10,
    Loader::Png,
    Loader::UnetConfig,
    Loader::VaeConfig,
    Loader::ClipConfig,
];

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::Safetensors => "safetensors",
            Loader::Checkpoint => "checkpoint",
            Loader::Idx => "idx",
            Loader::IdxGz => "idx-gz",
            Loader::Cifar10 => "cifar10",
            Loader::Png => "png",
            Loader::UnetConfig => "unet-config",
            Loader::VaeConfig => "vae-config",
            Loader::ClipConfig => "clip-config",
        }
    }

    pub fn from_name(name: &str) -> Option<Loader> {
        LOADERS.into_iter().find(|l| l.name() == name)
    }

    /// The names of the files an input of this loader consists of (in its folder).
    fn file_names(self) -> &'static [&'static str] {
        match self {
            Loader::Safetensors => &["model.safetensors"],
            Loader::Checkpoint => &["checkpoint.safetensors"],
            Loader::Idx => &["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
            Loader::IdxGz => &["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
            Loader::Cifar10 => &["test_batch.bin"],
            Loader::Png => &["image.png"],
            Loader::UnetConfig | Loader::VaeConfig | Loader::ClipConfig => &["config.json"],
        }
    }

    /// Runs the loader on the files in `dir`: `Ok(())` if it accepted them, `Err(message)` if
    /// it returned an error (the message is its `Display`).
    fn load(self, dir: &Path, index: u64) -> Result<(), String> {
        use ember_train::data::{Dataset, Split};
        let text = || std::fs::read(dir.join("config.json")).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).map_err(|e| e.to_string());
        match self {
            Loader::Safetensors => ember_tensor::io::load_safetensors(dir.join("model.safetensors")).map(drop).map_err(|e| e.to_string()),
            Loader::Checkpoint => {
                let checkpoint = ember_train::checkpoint::Checkpoint::load(&dir.join("checkpoint.safetensors")).map_err(|e| e.to_string())?;
                checkpoint.config.unet.validate().map_err(|e| e.to_string())
            }
            Loader::Idx | Loader::IdxGz => ember_train::data::load_mnist(dir, Split::Train).map(drop).map_err(|e| e.to_string()),
            Loader::Cifar10 => ember_train::data::load_cifar10(dir, Split::Test).map(drop).map_err(|e| e.to_string()),
            Loader::Png => {
                let channels = if index.is_multiple_of(2) { 3 } else { 1 };
                Dataset::from_name(&format!("png:{}", dir.display()), Split::Train, channels).map(drop).map_err(|e| e.to_string())
            }
            Loader::UnetConfig => ember_unet::UNetConfig::from_json(&text()?).map(drop).map_err(|e| e.to_string()),
            Loader::VaeConfig => ember_unet::VaeConfig::from_json(&text()?).map(drop).map_err(|e| e.to_string()),
            Loader::ClipConfig => ember_unet::clip::ClipTextConfig::from_json(&text()?).map(drop).map_err(|e| e.to_string()),
        }
    }
}

/// An input: one file's bytes per name of [`Loader::file_names`].
pub type Input = Vec<Vec<u8>>;

// ---- random numbers ---------------------------------------------------------------------------

/// SplitMix64: small, fast, and good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The random stream of input `index` of `loader` under `seed`.
fn input_rng(seed: u64, loader: Loader, index: u64) -> Rng {
    let tag = loader.name().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let mut mix = Rng::new(seed ^ tag);
    let base = mix.next_u64();
    let mut rng = Rng::new(base ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
    rng.next_u64();
    rng
}

// ---- generic byte mutations -------------------------------------------------------------------

const INTERESTING_BYTES: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x0a, b'"', b'9'];

/// Values worth writing into length, count, shape and offset fields.
const INTERESTING_WORDS: [u64; 18] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_ffff,
    0xffff_ffff_ffff_fff8,
];

/// One random mutation of `bytes`, any format.
pub fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let len = bytes.len();
    match rng.below(11) {
        0 | 1 if len > 0 => {
            // a few bit flips
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(len);
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        2 if len > 0 => {
            let at = rng.below(len);
            bytes[at] = *rng.pick(&INTERESTING_BYTES);
        }
        3 if len > 0 => bytes[rng.below(len)] = rng.next_u64() as u8,
        4 if len > 0 => {
            // an interesting word, 1 to 8 bytes wide, either byte order
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let value = *rng.pick(&INTERESTING_WORDS);
            let word = if rng.percent(50) { value.to_le_bytes() } else { value.to_be_bytes() };
            let word = if word[0] == 0 && width < 8 { &word[8 - width..] } else { &word[..width] };
            let at = rng.below(len);
            for (k, &b) in word.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + k) {
                    *slot = b;
                }
            }
        }
        5 => bytes.truncate(rng.below(len + 1)),
        6 => {
            let n = 1 + rng.below(64);
            let extra = if rng.percent(50) { vec![0; n] } else { rng.bytes(n) };
            bytes.extend(extra);
        }
        7 if len > 0 => {
            // duplicate a chunk somewhere else
            let start = rng.below(len);
            let end = (start + 1 + rng.below(256)).min(len);
            let chunk = bytes[start..end].to_vec();
            let at = rng.below(len + 1);
            bytes.splice(at..at, chunk);
        }
        8 if len > 0 => {
            // delete a chunk
            let start = rng.below(len);
            let end = (start + 1 + rng.below(256)).min(len);
            bytes.drain(start..end);
        }
        9 if len > 0 => {
            // insert random bytes
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let inserted = rng.bytes(n);
            bytes.splice(at..at, inserted);
        }
        _ if len > 1 => {
            // swap two bytes
            let (a, b) = (rng.below(len), rng.below(len));
            bytes.swap(a, b);
        }
        _ => bytes.push(rng.next_u64() as u8),
    }
}

// ---- the fuzzer -------------------------------------------------------------------------------

/// What became of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// The loader returned this error.
    Rejected(String),
    /// The loader panicked with this message.
    Panicked(String),
}

/// An input that made a loader panic, and where it was saved.
#[derive(Clone, Debug)]
pub struct Failure {
    pub index: u64,
    pub message: String,
    pub saved: Vec<PathBuf>,
}

/// The tally of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub inputs: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

thread_local! {
    /// While this thread runs a loader under `catch_unwind`: the message of its last panic.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that, on a thread running a loader, keeps the message for the
/// report instead of printing it; other panics are printed as usual.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught = CAUGHT.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        *slot = Some(info.to_string());
                        true
                    }
                    None => false,
                }
            });
            if !caught {
                previous(info);
            }
        }));
    });
}

/// Feeds mutants of valid files to one loader.
pub struct Fuzzer {
    pub loader: Loader,
    seed: u64,
    seeds: Vec<Input>,
    /// Where the loader reads each input.
    work: PathBuf,
    failures: PathBuf,
}

impl Fuzzer {
    /// A fuzzer of `loader` writing its inputs under `work` (best on a tmpfs) and saving
    /// failing ones under `failures`. Checks first that the loader accepts every valid file it
    /// starts from (otherwise the mutants would test its error paths only).
    pub fn new(loader: Loader, seed: u64, work: &Path, failures: &Path) -> Result<Fuzzer, String> {
        let work = work.join(loader.name());
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let seeds = match loader {
            Loader::Safetensors => safetensors_seeds(&work)?,
            Loader::Checkpoint => checkpoint_seeds(),
            Loader::Idx | Loader::IdxGz => idx_seeds(),
            Loader::Cifar10 => cifar_seeds(),
            Loader::Png => png_seeds(&work)?,
            Loader::UnetConfig | Loader::VaeConfig | Loader::ClipConfig => config_seeds(loader),
        };
        let fuzzer = Fuzzer { loader, seed, seeds, work, failures: failures.to_path_buf() };
        install_panic_hook();
        for (k, seed_input) in fuzzer.seeds.iter().enumerate() {
            let input = fuzzer.finish(seed_input.clone());
            match fuzzer.run_one(&input, k as u64) {
                Outcome::Accepted => {}
                other => return Err(format!("{}: valid file {k} is not accepted: {other:?}", loader.name())),
            }
        }
        Ok(fuzzer)
    }

    /// The folder the loader reads from.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// The files of input `index`: a valid file, mutated structurally and at random.
    pub fn input(&self, index: u64) -> Input {
        let mut rng = input_rng(self.seed, self.loader, index);
        let mut input = rng.pick(&self.seeds).clone();
        let which = if input.len() > 1 && rng.percent(30) { 1 } else { 0 };
        let bytes = &mut input[which];
        let mutations = 1 + rng.below(3);
        for _ in 0..mutations {
            if rng.percent(35) {
                mutate_bytes(bytes, &mut rng);
                continue;
            }
            match self.loader {
                Loader::Safetensors => mutate_safetensors(bytes, &mut rng),
                Loader::Checkpoint => mutate_checkpoint(bytes, &mut rng),
                Loader::Idx | Loader::IdxGz => mutate_idx(bytes, &mut rng, which == 1),
                Loader::Cifar10 => mutate_cifar(bytes, &mut rng),
                Loader::Png => mutate_png(bytes, &mut rng),
                Loader::UnetConfig | Loader::VaeConfig | Loader::ClipConfig => mutate_json(bytes, &mut rng),
            }
        }
        let mut input = self.finish(input);
        // gzipped files: now and then the compressed stream itself is damaged
        if self.loader == Loader::IdxGz && rng.percent(30) {
            let k = rng.below(input.len());
            mutate_bytes(&mut input[k], &mut rng);
        }
        input
    }

    /// The files as the loader reads them (gzipped for [`Loader::IdxGz`]).
    fn finish(&self, input: Input) -> Input {
        match self.loader {
            Loader::IdxGz => input.iter().map(|file| gzip_stored(file)).collect(),
            _ => input,
        }
    }

    /// Writes `input` where the loader reads it and runs the loader on it.
    pub fn run_one(&self, input: &Input, index: u64) -> Outcome {
        for (name, bytes) in self.loader.file_names().iter().zip(input) {
            if let Err(e) = std::fs::write(self.work.join(name), bytes) {
                return Outcome::Panicked(format!("the fuzzer could not write its input {name}: {e}"));
            }
        }
        CAUGHT.with(|c| *c.borrow_mut() = Some(None));
        let result = catch_unwind(AssertUnwindSafe(|| self.loader.load(&self.work, index)));
        let message = CAUGHT.with(|c| c.borrow_mut().take()).flatten();
        match result {
            Ok(Ok(())) => Outcome::Accepted,
            Ok(Err(error)) => Outcome::Rejected(error),
            Err(_) => Outcome::Panicked(message.unwrap_or_else(|| "a panic without a message".into())),
        }
    }

    /// Saves a failing input under the failures folder: one file per input file, and the
    /// message beside them.
    fn save(&self, input: &Input, index: u64, message: &str) -> Vec<PathBuf> {
        let _ = std::fs::create_dir_all(&self.failures);
        let stem = format!("{}-seed{}-input{index}", self.loader.name(), self.seed);
        let mut saved = Vec::new();
        for (name, bytes) in self.loader.file_names().iter().zip(input) {
            let path = self.failures.join(format!("{stem}-{name}"));
            if std::fs::write(&path, bytes).is_ok() {
                saved.push(path);
            }
        }
        let _ = std::fs::write(self.failures.join(format!("{stem}.txt")), format!("{message}\n"));
        saved
    }

    /// Runs inputs `start .. start + count`, calling `progress` with the tally every
    /// `progress_every` inputs.
    pub fn run(&self, start: u64, count: u64, progress_every: u64, progress: &mut dyn FnMut(&Report)) -> Report {
        let began = Instant::now();
        let mut report = Report::default();
        for index in start..start + count {
            let input = self.input(index);
            match self.run_one(&input, index) {
                Outcome::Accepted => report.accepted += 1,
                Outcome::Rejected(_) => report.rejected += 1,
                Outcome::Panicked(message) => {
                    let saved = self.save(&input, index, &message);
                    report.failures.push(Failure { index, message, saved });
                }
            }
            report.inputs += 1;
            if progress_every > 0 && report.inputs % progress_every == 0 {
                report.elapsed = began.elapsed();
                progress(&report);
            }
        }
        report.elapsed = began.elapsed();
        report
    }
}

/// A folder for the inputs: on a tmpfs when there is one (`/dev/shm`), else the temp folder.
pub fn default_work_dir(tag: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    base.join(format!("ember-fuzz-{tag}-{}", std::process::id()))
}
