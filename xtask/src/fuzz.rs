//! `cargo xtask fuzz [--iterations N] [--loader NAME[,NAME...]] [--seed S] [--start I]
//! [--memory-mib M]`: the long form of `tests/fuzz_loaders.rs`. N mutants of valid files
//! (default 1,000,000) are fed to each of ember's loaders (default: all of them); 0 panics and 0
//! aborts is a pass, every error a typed `Err`.
//!
//! The mutation engine is `tests/common/fuzz/`, shared with the test. This command, std
//! only like the rest of the xtask, builds a worker (this crate with the `fuzz` feature, which
//! brings the loaders, optimized but with overflow checks and debug assertions on, in
//! `target/fuzz`), then runs it once per loader in a child process whose address space is
//! limited (`ulimit -v`, i.e. RLIMIT_AS; default 2048 MiB): a loader that allocates what a
//! file's header announces aborts there, and the abort is reported with the input that caused
//! it. Panicking inputs are saved by the worker, aborting ones by this parent, under
//! `target/fuzz-failures/`. Input `I` of a loader depends only on `(S, loader, I)`:
//! `--start I --iterations 1` makes it again.

use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T = ()> = std::result::Result<T, String>;

/// The worker's exit code when a loader panicked (1 is an error of the worker itself).
const PANICKED: i32 = 3;

/// The command's options, as the parent and the worker take them.
struct Options {
    iterations: u64,
    loaders: Vec<String>,
    seed: u64,
    start: u64,
    memory_mib: u64,
    /// Set in the worker: the folders for the inputs and for failing inputs.
    worker: Option<(PathBuf, PathBuf)>,
    /// `--list`: the worker prints the loaders' names.
    list: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options { iterations: 1_000_000, loaders: Vec::new(), seed: 0, start: 0, memory_mib: 2048, worker: None, list: false };
    let mut work_failures = (None, None);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| text.replace('_', "").parse::<u64>().map_err(|_| format!("{flag}: {text:?} is not a whole number"));
        match flag.as_str() {
            "--iterations" => options.iterations = number(value()?)?,
            "--loader" => options.loaders.extend(value()?.split(',').map(str::to_string)),
            "--seed" => options.seed = number(value()?)?,
            "--start" => options.start = number(value()?)?,
            "--memory-mib" => options.memory_mib = number(value()?)?,
            "--work" => work_failures.0 = Some(PathBuf::from(value()?)),
            "--failures" => work_failures.1 = Some(PathBuf::from(value()?)),
            "--list" => options.list = true,
            other => return Err(format!("fuzz: unknown option {other:?} (--iterations N, --loader NAME, --seed S, --start I, --memory-mib M)")),
        }
    }
    if let (Some(work), Some(failures)) = work_failures {
        options.worker = Some((work, failures));
    }
    Ok(options)
}

/// `cargo xtask fuzz ...`: see the module doc.
pub fn fuzz(args: &[String]) -> Result {
    let options = parse(args)?;
    if options.list || options.worker.is_some() {
        return worker::run(&options);
    }
    let root = crate::repo_root();
    let worker = build_worker(&root)?;
    let names = String::from_utf8(Command::new(&worker).args(["fuzz", "--list"]).output().map_err(|e| format!("cannot run the worker: {e}"))?.stdout)
        .map_err(|e| e.to_string())?;
    let known: Vec<&str> = names.split_whitespace().collect();
    let loaders: Vec<String> = if options.loaders.is_empty() { known.iter().map(|n| n.to_string()).collect() } else { options.loaders.clone() };
    if let Some(unknown) = loaders.iter().find(|l| !known.contains(&l.as_str())) {
        return Err(format!("unknown loader {unknown:?} (known: {})", known.join(", ")));
    }
    let failures = root.join("target").join("fuzz-failures");
    let shm = Path::new("/dev/shm");
    let work = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }.join(format!("ember-fuzz-{}", std::process::id()));
    println!(
        "xtask fuzz: {} inputs per loader from input {} (seed {}), {} loaders, address space limited to {} MiB",
        options.iterations,
        options.start,
        options.seed,
        loaders.len(),
        options.memory_mib
    );
    let mut bad = Vec::new();
    for loader in &loaders {
        let mut child = limited(options.memory_mib, &worker);
        child.args(["fuzz", "--loader", loader]).args(["--iterations", &options.iterations.to_string()]);
        child.args(["--seed", &options.seed.to_string(), "--start", &options.start.to_string()]);
        child.arg("--work").arg(&work).arg("--failures").arg(&failures);
        let status = child.status().map_err(|e| format!("cannot run the worker: {e}"))?;
        match status.code() {
            Some(0) => {}
            Some(PANICKED) => bad.push(format!("{loader}: panics (inputs saved under {})", failures.display())),
            Some(1) => bad.push(format!("{loader}: the worker failed (its message is above)")),
            _ => {
                // an abort (allocation failure under the limit, stack overflow...): the input it
                // died on is still where the loader read it
                let saved = save_abort(&work.join(loader), &failures, loader, options.seed);
                bad.push(format!("{loader}: the worker died ({status}) on the input saved as {saved}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if bad.is_empty() {
        println!("xtask fuzz: 0 panics, 0 aborts in {} loaders", loaders.len());
        Ok(())
    } else {
        Err(format!("fuzzing failed:\n  {}", bad.join("\n  ")))
    }
}

/// Builds the worker: this crate with the loaders (`--features fuzz`), optimized, with
/// overflow checks and debug assertions (so that arithmetic overflow on a header's numbers is a
/// panic, as in a debug build), in its own target folder so that no other build is disturbed.
fn build_worker(root: &Path) -> Result<PathBuf> {
    let target = root.join("target").join("fuzz");
    println!("xtask fuzz: building the worker (release, overflow checks on) in {}", target.display());
    let mut build = Command::new(crate::cargo());
    build.current_dir(root).args(["build", "--release", "-p", "xtask", "--features", "fuzz", "--target-dir"]).arg(&target);
    build.env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true").env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "true");
    crate::run(&mut build)?;
    Ok(target.join("release").join(if cfg!(windows) { "xtask.exe" } else { "xtask" }))
}

/// `program` run with its address space limited to `mib` MiB (by the shell's `ulimit -v`,
/// which sets RLIMIT_AS), where there is a POSIX shell; without a limit elsewhere.
fn limited(mib: u64, program: &Path) -> Command {
    if cfg!(unix) {
        let mut command = Command::new("sh");
        command.args(["-c", "ulimit -v \"$0\" && exec \"$@\""]).arg((mib * 1024).to_string()).arg(program);
        command
    } else {
        println!("xtask fuzz: no POSIX shell, so no memory limit");
        Command::new(program)
    }
}

/// Copies the files of the input a worker died on into `failures`; says where.
fn save_abort(work: &Path, failures: &Path, loader: &str, seed: u64) -> String {
    let _ = std::fs::create_dir_all(failures);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut saved = Vec::new();
    for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
        let target = failures.join(format!("{loader}-seed{seed}-abort{stamp}-{}", entry.file_name().to_string_lossy()));
        if std::fs::copy(entry.path(), &target).is_ok() {
            saved.push(target.display().to_string());
        }
    }
    if saved.is_empty() { format!("(nothing found in {})", work.display()) } else { saved.join(", ") }
}

#[cfg(not(feature = "fuzz"))]
mod worker {
    pub fn run(_: &super::Options) -> super::Result {
        Err("this xtask was built without the `fuzz` feature; run `cargo xtask fuzz`, which builds the worker".into())
    }
}

#[cfg(feature = "fuzz")]
#[path = "../../tests/common/fuzz/mod.rs"]
mod engine;

/// The worker: one loader, `iterations` inputs, a line of progress every 10 s; exits with
/// [`PANICKED`] if the loader panicked (the inputs are saved by the engine).
#[cfg(feature = "fuzz")]
mod worker {
    use std::time::{Duration, Instant};

    use super::engine::{Fuzzer, LOADERS, Loader};

    pub fn run(options: &super::Options) -> super::Result {
        if options.list {
            println!("{}", LOADERS.map(Loader::name).join(" "));
            return Ok(());
        }
        let (work, failures) = options.worker.as_ref().expect("the worker is given its folders");
        for name in &options.loaders {
            let loader = Loader::from_name(name).ok_or_else(|| format!("unknown loader {name:?}"))?;
            let fuzzer = Fuzzer::new(loader, options.seed, work, failures)?;
            let mut last = Instant::now();
            let report = fuzzer.run(options.start, options.iterations, 1000, &mut |report| {
                if last.elapsed() >= Duration::from_secs(10) {
                    last = Instant::now();
                    println!("  {name}: {}/{} inputs, {:.0}/s, {} panics", report.inputs, options.iterations, report.per_second(), report.failures.len());
                }
            });
            println!(
                "{name}: {} inputs in {:.1} s ({:.0}/s): {} accepted, {} refused with an error, {} panics",
                report.inputs,
                report.elapsed.as_secs_f64(),
                report.per_second(),
                report.accepted,
                report.rejected,
                report.failures.len()
            );
            for failure in report.failures.iter().take(10) {
                println!("  input {}: {}\n    saved as {:?}", failure.index, failure.message.replace('\n', " "), failure.saved);
            }
            if !report.failures.is_empty() {
                std::process::exit(super::PANICKED);
            }
        }
        Ok(())
    }
}
