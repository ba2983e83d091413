//! Nothing is lost when training dies: `ember train` is SIGKILLed again and again at random
//! moments and resumed each time, and the run still ends exactly as if it had never stopped.
//!
//! After every kill: the checkpoint is a complete one (old or new; it loads), `loss.csv` holds
//! only whole rows, numbered 1, 2, 3… and each equal to the uninterrupted run's row of that
//! step. At the end, the killed-and-resumed run's `loss.csv` equals the uninterrupted run's,
//! and so do the final weights, bit for bit: the CPU kernels are deterministic. One column is
//! compared to 1e-12 (relative) instead: the gradient norm, an f64 sum over the gradients in
//! the order of a `HashMap` (`Gradients::global_norm`), which differs from process to process
//! in the last bit. The kills cycle through three moments: while a
//! checkpoint is being written (its temporary file exists; at least one kill must land there),
//! just after a step's loss row is logged, and at a random time from the start (which also
//! hits start-up: loading the checkpoint, rewriting `config.json` and `loss.csv`).
//!
//! 20 kills by default (about 20 s in release on 2 cores); `EMBER_CRASH_KILLS=200 cargo test
//! --release --test crash_resume` is the long form. The kill times come from a seeded
//! generator (`EMBER_CRASH_SEED`, default 0), though where a kill lands also depends on timing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember::tensor::io::load_safetensors;
use ember::train::checkpoint::Checkpoint;

/// SplitMix64, for the kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A duration uniform in `[0, max)`.
    fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.next() % (max.as_nanos() as u64).max(1))
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `ember train` of the tiny model on 8 procedural images, a checkpoint after every step (so
/// that most kills land near a checkpoint write), no preview samples but the last step's.
fn train(run: &Path, steps: u64, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    command.args(["train", "--preset", "tiny", "--batch-size", "2", "--data", "procedural:8", "--seed", "7"]);
    command.args(["--steps", &steps.to_string(), "--checkpoint-every", "1", "--sample-every", "0", "--sample-count", "1", "--sample-steps", "1"]);
    command.arg("--out").arg(run);
    if resume {
        command.arg("--resume");
    }
    command
}

fn run_to_the_end(run: &Path, steps: u64, resume: bool) {
    let out = train(run, steps, resume).output().expect("run ember");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ember train (resume: {resume}) failed: {text}");
}

/// The rows of `loss.csv` (header excluded), after checking that the file holds only whole
/// rows: a header, then rows of four numbers, each ending in a newline.
fn whole_rows(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    assert!(text.is_empty() || text.ends_with('\n'), "{} ends with a cut-short row: {:?}", path.display(), text.lines().last());
    let mut lines = text.lines();
    if let Some(header) = lines.next() {
        assert_eq!(header, "step,loss,grad_norm,lr", "{}", path.display());
    }
    let rows: Vec<String> = lines.map(str::to_string).collect();
    for row in &rows {
        let fields: Vec<&str> = row.split(',').collect();
        let numbers = fields.len() == 4 && fields[0].parse::<u64>().is_ok() && fields[1..].iter().all(|f| f.parse::<f64>().is_ok());
        assert!(numbers, "{}: not a whole row: {row:?}", path.display());
    }
    rows
}

/// Whether two rows of `loss.csv` are the same: step, loss and learning rate exactly (as
/// printed: the shortest text that reads back as the same f64), the gradient norm to 1e-12.
fn same_row(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split(',').collect(), b.split(',').collect());
    let norm = |fields: &[&str]| fields[2].parse::<f64>().expect("a number");
    a.len() == 4 && b.len() == 4 && a[0] == b[0] && a[1] == b[1] && a[3] == b[3] && (norm(&a) - norm(&b)).abs() <= 1e-12 * norm(&b).abs()
}

/// The temporary file a checkpoint is written to before its rename, by process `pid`
/// (`ember_tensor::io::write_atomically`'s naming).
fn temporary_checkpoint(run: &Path, pid: u32) -> PathBuf {
    run.join(format!(".checkpoint.safetensors.tmp-{pid}"))
}

/// Waits until `done()` or the child exits or `limit` passes, polling every millisecond.
fn wait_for(child: &mut Child, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < limit && child.try_wait().expect("poll the child").is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn killed_and_resumed_training_loses_nothing_and_matches_the_uninterrupted_run() {
    let kills_wanted = env_number("EMBER_CRASH_KILLS", 20);
    let mut rng = Rng(env_number("EMBER_CRASH_SEED", 0));
    // enough steps that the kills (about one step of progress each, at most) end before the run
    let steps = 2 * kills_wanted + 10;
    let dir = std::env::temp_dir().join(format!("ember-crash-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (reference, crashed) = (dir.join("reference"), dir.join("crashed"));

    // the uninterrupted run, and how long a step takes here (to scale the random kill times)
    let start = Instant::now();
    run_to_the_end(&reference, steps, false);
    let step_time = start.elapsed() / steps as u32;
    let expected = whole_rows(&reference.join("loss.csv"));
    assert_eq!(expected.len() as u64, steps);

    let (checkpoint, loss_csv) = (crashed.join("checkpoint.safetensors"), crashed.join("loss.csv"));
    let (mut kills, mut in_a_write, mut runs) = (0u64, 0u64, 0u64);
    while kills < kills_wanted {
        let resume = checkpoint.exists();
        let rows_before = whole_rows(&loss_csv).len();
        let mut child = train(&crashed, steps, resume).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("run ember");
        runs += 1;
        let temporary = temporary_checkpoint(&crashed, child.id());
        let limit = Duration::from_secs(60);
        match kills % 3 {
            // while a checkpoint is being written
            0 => {
                wait_for(&mut child, limit, || temporary.exists());
                std::thread::sleep(rng.duration(Duration::from_millis(3)));
            }
            // soon after a new loss row (the checkpoint of that step follows it)
            1 => {
                wait_for(&mut child, limit, || std::fs::read_to_string(&loss_csv).is_ok_and(|t| t.lines().count() > rows_before + 1));
                std::thread::sleep(rng.duration(step_time / 2));
            }
            // at any time from the start
            _ => std::thread::sleep(rng.duration(step_time * 2)),
        }
        let finished = child.try_wait().expect("poll the child");
        if finished.is_none() {
            child.kill().expect("SIGKILL the training process");
            kills += 1;
        }
        child.wait().expect("reap the child");
        if let Some(status) = finished {
            assert!(status.success(), "ember train exited with {status} before it could be killed");
        }
        if temporary.exists() {
            in_a_write += 1;
            std::fs::remove_file(&temporary).unwrap(); // a killed writer's leftover, 26 MB
        }

        // what a crash may leave: a complete checkpoint, whole loss rows equal to the reference's
        let saved_step = match checkpoint.exists() {
            true => Checkpoint::load(&checkpoint).unwrap_or_else(|e| panic!("after kill {kills}, the checkpoint does not load: {e}")).step,
            false => 0,
        };
        let rows = whole_rows(&loss_csv);
        assert!(rows.len() as u64 >= saved_step, "after kill {kills}: {} loss rows, but the checkpoint is at step {saved_step}", rows.len());
        for (k, row) in rows.iter().enumerate() {
            let theirs = expected.get(k).map_or("(none)", String::as_str);
            assert!(same_row(row, theirs), "after kill {kills}: row {} of loss.csv is {row:?}, the uninterrupted run's {theirs:?}", k + 1);
        }
        if finished.is_some() {
            break;
        }
    }
    if checkpoint.exists() && Checkpoint::load(&checkpoint).unwrap().step == steps {
        panic!("the run ended after {kills} of {kills_wanted} kills: raise the steps per kill");
    }
    run_to_the_end(&crashed, steps, checkpoint.exists());
    eprintln!("{kills} kills over {runs} runs ({in_a_write} during a checkpoint write), then resumed to step {steps}");
    assert!(kills >= kills_wanted);
    assert!(in_a_write > 0, "no kill landed during a checkpoint write (is the temporary file still named as temporary_checkpoint says?)");

    let rows = whole_rows(&loss_csv);
    assert_eq!(rows.len(), expected.len(), "the resumed run has {} loss rows, the uninterrupted one {}", rows.len(), expected.len());
    for (row, theirs) in rows.iter().zip(&expected) {
        assert!(same_row(row, theirs), "the loss curves differ: {row:?} after the kills, {theirs:?} uninterrupted");
    }
    let (resumed, uninterrupted) = (load_safetensors(&checkpoint).unwrap(), load_safetensors(reference.join("checkpoint.safetensors")).unwrap());
    assert_eq!(resumed.tensors.keys().collect::<Vec<_>>(), uninterrupted.tensors.keys().collect::<Vec<_>>());
    for (name, tensor) in &resumed.tensors {
        let (a, b) = (tensor.to_vec::<f32>().unwrap(), uninterrupted.tensors[name].to_vec::<f32>().unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs from the uninterrupted run's");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
