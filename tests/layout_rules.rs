//! The engine's layout rules, checked on its sources (the "One op, one place" shape,
//! ARCHITECTURE.md): an op never branches on the device, the two backends' primitives never
//! import each other, an op's CPU kernels never reach for CUDA nor its CUDA host side for the
//! CPU's, and every kernel file at `kernels/` belongs to an op folder of the same name.

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tensor_src() -> PathBuf {
    Path::new(ROOT).join("crates/tensor/src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The op folders of `ops/`.
fn op_folders() -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = fs::read_dir(tensor_src().join("ops")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    folders.sort();
    folders
}

/// The lines of `path` (comments included: a rule broken in a doc comment is also worth a look)
/// that contain any of `needles`, as "file:line: text".
fn offending_lines(path: &Path, needles: &[&str]) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| needles.iter().any(|n| line.contains(n)))
        .map(|(i, line)| format!("{}:{}: {}", path.display(), i + 1, line.trim()))
        .collect()
}

fn assert_none(what: &str, offending: Vec<String>) {
    assert!(offending.is_empty(), "{what}:\n{}", offending.join("\n"));
}

/// The patterns by which code picks a device by hand.
const DEVICE_BRANCHES: &[&str] = &[
    "Device::Cpu",
    "Device::Cuda",
    "Storage::Cpu",
    "Storage::Cuda",
    ".gpu()",
    ".cpu(",
    "crate::cpu",
    "crate::cuda",
    "dispatch::Cpu",
    "dispatch::Cuda",
    "on_gpu",
];

#[test]
fn every_op_folder_has_a_mod_rs_that_does_not_branch_on_the_device() {
    let folders = op_folders();
    assert!(folders.len() >= 10, "expected the op folders under ops/, found {folders:?}");
    let mut offending = Vec::new();
    for folder in &folders {
        let module = folder.join("mod.rs");
        assert!(module.exists(), "{} has no mod.rs", folder.display());
        offending.extend(offending_lines(&module, DEVICE_BRANCHES));
    }
    assert_none("ops/*/mod.rs must call dispatch::kernels, not pick a device", offending);
}

#[test]
fn the_cpu_and_cuda_primitives_never_import_each_other() {
    let src = tensor_src();
    let cpu: Vec<String> = rust_files(&src.join("cpu")).iter().flat_map(|f| offending_lines(f, &["crate::cuda", "super::cuda"])).collect();
    assert_none("cpu/ imports cuda/", cpu);
    let cuda: Vec<String> = rust_files(&src.join("cuda")).iter().flat_map(|f| offending_lines(f, &["crate::cpu", "super::cpu"])).collect();
    assert_none("cuda/ imports cpu/", cuda);
}

#[test]
fn an_ops_cpu_kernels_and_cuda_host_side_stay_apart() {
    let mut offending = Vec::new();
    for folder in op_folders() {
        let cpu_files = match folder.join("cpu") {
            dir if dir.is_dir() => rust_files(&dir),
            _ => vec![folder.join("cpu.rs")].into_iter().filter(|p| p.exists()).collect(),
        };
        for file in cpu_files {
            offending.extend(offending_lines(&file, &["crate::cuda", "dispatch::device", "dispatch::Cuda"]));
        }
        let cuda = folder.join("cuda.rs");
        if cuda.exists() {
            offending.extend(offending_lines(&cuda, &["crate::cpu", "dispatch::host", "dispatch::Cpu"]));
        }
    }
    assert_none("an op's cpu.rs reaches for CUDA or its cuda.rs for the CPU", offending);
}

#[test]
fn every_kernel_file_belongs_to_an_op_folder_of_its_name() {
    // The kernels of no op: the optimizers' updates, the Philox draws, the benchmarks' f16
    // GEMM and peak kernels (their host side is cuda/kernels.rs or the benchmark).
    const NOT_OPS: &[&str] = &["optim", "rng", "gemm_f16", "peak"];
    let ops: Vec<String> = op_folders().iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let kernels = Path::new(ROOT).join("kernels");
    let mut stray = Vec::new();
    let mut count = 0;
    for entry in fs::read_dir(&kernels).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            count += 1;
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !ops.contains(&stem) && !NOT_OPS.contains(&stem.as_str()) {
                stray.push(stem);
            } else if ops.contains(&stem) {
                assert!(Path::new(ROOT).join(format!("crates/tensor/src/ops/{stem}/cuda.rs")).exists(), "kernels/{stem}.cu has no ops/{stem}/cuda.rs");
            }
        }
    }
    assert!(count >= 10, "expected the kernels at {}, found {count}", kernels.display());
    assert!(stray.is_empty(), "kernel files with no op folder of their name: {stray:?}");
    assert!(!Path::new(ROOT).join("crates/tensor/kernels").exists(), "the kernels live at the repository root now");
}

#[test]
fn the_kernels_take_the_op_numbers_from_the_generated_header() {
    let kernels = Path::new(ROOT).join("kernels");
    for entry in fs::read_dir(&kernels).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu" || e == "h") {
            assert_none(
                "op numbers are generated from crates/tensor/src/ops/op_codes.rs, not declared in a kernel file",
                offending_lines(&path, &["enum UnaryCode", "enum BinaryCode", "U_NEG =", "B_ADD ="]),
            );
        }
    }
    for file in ["unary.cu", "binary.cu"] {
        let text = fs::read_to_string(kernels.join(file)).unwrap();
        assert!(text.contains("#include \"ember_op_codes.h\""), "kernels/{file} must include the generated ember_op_codes.h");
    }
}
