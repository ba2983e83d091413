//! Developer tasks for the ember workspace, run as `cargo xtask <command>`
//! (the alias lives in `.cargo/config.toml`).
//!
//! std only, so that it builds in a moment. To add a command: write a
//! `fn name(args: &[String]) -> Result` below, add it to `COMMANDS` and to the
//! `match` in `main`.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod fuzz;

/// An error is a message for the user; `main` prints it and exits non-zero.
type Result<T = ()> = std::result::Result<T, String>;

/// `(name, one-line description)` of every command, for the usage text.
const COMMANDS: &[(&str, &str)] = &[
    ("fixtures", "regenerate tests/fixtures/*.safetensors with PyTorch (sets up .venv if needed)"),
    ("bench", "benchmarks side by side with PyTorch: `bench` (all), `bench kernels`, `bench unet`"),
    ("ci", "what CI runs (.ci/run): fmt, clippy -D warnings, the README's test command, the NVRTC kernel check, a bench build"),
    ("kernels", "compile every CUDA kernel with NVRTC for sm_80 and sm_90; fail on error, warning, spill"),
    ("fuzz", "feed mutated files to every loader (`fuzz [--iterations N] [--loader NAME]`, 1M each by default) under a memory limit"),
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        print_usage();
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "fixtures" => fixtures(rest),
        "bench" => bench(rest),
        "ci" => ci(rest),
        "kernels" => kernels(rest),
        "fuzz" => fuzz::fuzz(rest),
        "help" | "-h" | "--help" => {
            print!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{}", usage())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    let mut text = String::from("usage: cargo xtask <command> [args...]\n\ncommands:\n");
    for (name, description) in COMMANDS.iter().chain([&("help", "print this message")]) {
        text += &format!("  {name:<10} {description}\n");
    }
    text
}

fn print_usage() {
    eprint!("{}", usage());
}

// ---------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------

/// `cargo xtask fixtures [args...]`: make sure `.venv` has torch + safetensors,
/// then run `scripts/make_fixtures.py --out tests/fixtures [args...]`.
fn fixtures(args: &[String]) -> Result {
    let root = repo_root();
    let python = ensure_venv()?;

    println!("xtask: generating fixtures into tests/fixtures");
    run(Command::new(&python).current_dir(&root).args(["scripts/make_fixtures.py", "--out", "tests/fixtures"]).args(args))
        .map_err(|e| format!("scripts/make_fixtures.py failed: {e}"))?;
    if args.is_empty() {
        println!("xtask: generating UNet fixtures (diffusers) into tests/fixtures/unet");
        run(Command::new(&python).current_dir(&root).args(["scripts/make_unet_fixtures.py", "--out", "tests/fixtures/unet"]))
            .map_err(|e| format!("scripts/make_unet_fixtures.py failed: {e}"))?;
        println!("xtask: generating CLIP text encoder fixtures (transformers) into tests/fixtures/clip");
        run(Command::new(&python).current_dir(&root).args(["scripts/make_clip_fixtures.py", "--out", "tests/fixtures/clip"]))
            .map_err(|e| format!("scripts/make_clip_fixtures.py failed: {e}"))?;
        println!("xtask: generating sampler fixtures (diffusers) into tests/fixtures/diffusion");
        run(Command::new(&python).current_dir(&root).args(["scripts/make_sampler_fixtures.py", "--out", "tests/fixtures/diffusion"]))
            .map_err(|e| format!("scripts/make_sampler_fixtures.py failed: {e}"))?;
    }
    println!("xtask: fixtures written to {}", root.join("tests/fixtures").display());
    Ok(())
}

/// Makes sure `.venv` exists with torch, safetensors, numpy, diffusers and transformers (creating it and
/// installing them from PyPI if needed); returns its Python.
fn ensure_venv() -> Result<PathBuf> {
    let root = repo_root();
    let venv = root.join(".venv");
    let python = venv_python(&venv);
    if !python.exists() {
        println!("xtask: creating virtualenv at {}", venv.display());
        let host = host_python()?;
        run(Command::new(host).args([OsStr::new("-m"), OsStr::new("venv"), venv.as_os_str()])).map_err(|e| format!("could not create the virtualenv: {e}"))?;
    }
    let check = ["-c", "import torch, safetensors, numpy, diffusers, transformers"];
    if quiet_ok(Command::new(&python).args(check)) {
        println!("xtask: {} already has torch, safetensors, numpy, diffusers and transformers", venv.display());
    } else {
        println!("xtask: installing torch safetensors numpy diffusers transformers into {} (this can take a while)", venv.display());
        run(Command::new(&python).args(["-m", "pip", "install", "torch", "safetensors", "numpy", "diffusers", "transformers"]))
            .map_err(|e| format!("pip install failed: {e}"))?;
        if !quiet_ok(Command::new(&python).args(check)) {
            return Err("`import torch, safetensors, numpy, diffusers, transformers` still fails after pip install".into());
        }
    }
    Ok(python)
}

/// `cargo xtask bench [kernels|unet]`: the benchmarks side by side with PyTorch (both by
/// default). The PyTorch side needs `.venv`; if it cannot be set up, it is skipped with a
/// message and ember's side still runs.
fn bench(args: &[String]) -> Result {
    let which: Vec<&str> = match args.first().map(String::as_str) {
        None => vec!["kernels", "unet"],
        Some(name @ ("kernels" | "unet")) => vec![name],
        Some(other) => return Err(format!("unknown benchmark `{other}` (kernels or unet)")),
    };
    if let Err(e) = ensure_venv() {
        println!("xtask: the PyTorch side will be skipped: {e}");
    }
    for name in which {
        run(Command::new(cargo()).current_dir(repo_root()).args(["bench", "--bench", name]))?;
    }
    Ok(())
}

/// `cargo xtask ci`: everything CI checks, in order, stopping at the first failure:
/// 1. `cargo fmt --check` (rustfmt.toml);
/// 2. `cargo clippy --workspace --all-targets --features cuda,cuda-emu -- -D warnings`;
/// 3. the README's test command, `cargo test --workspace --release --features cuda,cuda-emu`
///    (the CUDA kernels run on the emulator; the GPU tests report themselves skipped);
/// 4. every kernel compiled with NVRTC for sm_80 and sm_90, no error, warning or spill
///    (`cargo xtask kernels`);
/// 5. a build of every benchmark, so that they cannot rot.
fn ci(args: &[String]) -> Result {
    if !args.is_empty() {
        return Err(format!("`ci` takes no arguments (got {args:?})"));
    }
    let root = repo_root();
    println!("xtask ci: 1/5 rustfmt");
    run(Command::new(cargo()).current_dir(&root).args(["fmt", "--all", "--", "--check"]))?;
    println!("xtask ci: 2/5 clippy");
    run(Command::new(cargo()).current_dir(&root).args(["clippy", "--workspace", "--all-targets", "--features", "cuda,cuda-emu", "--", "-D", "warnings"]))?;
    println!("xtask ci: 3/5 tests");
    run(Command::new(cargo()).current_dir(&root).args(["test", "--workspace", "--release", "--features", "cuda,cuda-emu"]))?;
    println!("xtask ci: 4/5 NVRTC kernel check");
    kernels(&[])?;
    println!("xtask ci: 5/5 benchmark build");
    run(Command::new(cargo()).current_dir(&root).args(["bench", "--workspace", "--no-run"]))?;
    println!("xtask ci: all green");
    Ok(())
}

/// The NVRTC wheel: CUDA 13, matching cudarc's `cuda-13000` bindings. It installs
/// `libnvrtc.so.13` and `libnvrtc-builtins.so.13.*` under `site-packages/nvidia/cu13/lib`.
const NVRTC_PACKAGE: &str = "nvidia-cuda-nvrtc==13.*";
const NVRTC_LIBRARY: &str = "libnvrtc.so.13";

/// `cargo xtask kernels [extra.cu ...]`: makes sure `target/nvrtc-venv` holds NVRTC from PyPI,
/// then runs the `check_kernels` example with it on `LD_LIBRARY_PATH` (the only place cudarc
/// looks). Extra `.cu` files are checked along with the embedded ones. Needs no GPU.
fn kernels(args: &[String]) -> Result {
    let root = repo_root();
    let library_dir = ensure_nvrtc(&root.join("target").join("nvrtc-venv"))?;
    println!("xtask: NVRTC from {}", library_dir.display());
    let mut library_path = env::split_paths(&env::var_os("LD_LIBRARY_PATH").unwrap_or_default()).collect::<Vec<_>>();
    library_path.insert(0, library_dir);
    let library_path = env::join_paths(library_path).map_err(|e| format!("cannot build LD_LIBRARY_PATH: {e}"))?;
    // The example runs in the workspace root: extra files are named from here.
    let here = env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let extra: Vec<PathBuf> = args.iter().map(|file| here.join(file).canonicalize().unwrap_or_else(|_| here.join(file))).collect();
    run(Command::new(cargo())
        .current_dir(&root)
        .env("LD_LIBRARY_PATH", library_path)
        .args(["run", "--release", "-p", "ember-tensor", "--features", "cuda"])
        .args(["--example", "check_kernels", "--"])
        .args(&extra))
    .map_err(|e| format!("the kernel check failed: {e}"))
}

/// Makes sure the virtualenv at `venv` has NVRTC (creating it and installing
/// [`NVRTC_PACKAGE`] if needed); returns the directory holding [`NVRTC_LIBRARY`].
fn ensure_nvrtc(venv: &Path) -> Result<PathBuf> {
    if let Some(dir) = find_file(venv, NVRTC_LIBRARY) {
        return Ok(dir);
    }
    let python = venv_python(venv);
    if !python.exists() {
        println!("xtask: creating virtualenv at {}", venv.display());
        let host = host_python()?;
        run(Command::new(host).args([OsStr::new("-m"), OsStr::new("venv"), venv.as_os_str()]))
            .map_err(|e| format!("could not create the virtualenv (python3-venv?): {e}"))?;
    }
    println!("xtask: installing {NVRTC_PACKAGE} into {}", venv.display());
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", NVRTC_PACKAGE]))
        .map_err(|e| format!("pip could not install {NVRTC_PACKAGE} (is PyPI reachable?): {e}"))?;
    find_file(venv, NVRTC_LIBRARY).ok_or_else(|| format!("{NVRTC_PACKAGE} installed, but no {NVRTC_LIBRARY} under {}", venv.display()))
}

/// The directory under `dir` (searched depth first) holding a file named `name`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|entry| entry.path()).collect();
    entries.sort();
    if entries.iter().any(|p| p.file_name() == Some(OsStr::new(name)) && p.is_file()) {
        return Some(dir.to_path_buf());
    }
    entries.iter().filter(|p| p.is_dir() && !p.is_symlink()).find_map(|p| find_file(p, name))
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// The workspace root: the parent of this crate's directory.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the workspace root").to_path_buf()
}

/// The cargo that invoked us (cargo sets `$CARGO` for `cargo run`), else `cargo`.
fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) { venv.join("Scripts").join("python.exe") } else { venv.join("bin").join("python") }
}

/// A Python 3 on PATH to create the virtualenv with.
fn host_python() -> Result<&'static str> {
    ["python3", "python"]
        .into_iter()
        .find(|p| quiet_ok(Command::new(p).args(["-c", "import sys, venv; assert sys.version_info >= (3, 8)"])))
        .ok_or_else(|| "no Python >= 3.8 with the `venv` module found on PATH (tried python3, python)".into())
}

/// Runs `cmd` with inherited stdio; an error if it cannot start or exits non-zero.
fn run(cmd: &mut Command) -> Result {
    let shown = describe(cmd);
    println!("xtask: $ {shown}");
    let status = cmd.status().map_err(|e| format!("could not run `{shown}`: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`{shown}` exited with {status}")) }
}

/// Whether `cmd` runs and exits zero, with its output discarded.
fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|s| s.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}
