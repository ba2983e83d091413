//! ember's loaders survive malformed files: the short form of `cargo xtask fuzz`, run by CI.
//!
//! Each test feeds a few thousand mutants of valid files (random and structural mutations;
//! the engine is `tests/common/fuzz/`, shared with the xtask) to one loader, each under
//! `catch_unwind`, and proves that every one comes back as `Ok` or a typed `Err`: no panic
//! (a panicking input is saved under `target/fuzz-failures/` and named in the failure), and no
//! allocation beyond [`ALLOCATION_LIMIT`] (the test binary's allocator refuses it, which
//! aborts the test, so a loader that trusts a size read from a file fails here instead of
//! swapping). `EMBER_FUZZ_INPUTS=N` runs N inputs per loader instead of the default; the long
//! form, ≥ 1M inputs per loader under a memory limit, is `cargo xtask fuzz`.

#[path = "common/fuzz/mod.rs"]
mod fuzz;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

use fuzz::{Fuzzer, Loader, Outcome};

/// The largest single allocation the test binary serves (1 GiB). The loaders cap what they
/// allocate from a file's header well below it (a PNG's pixel count, for one).
const ALLOCATION_LIMIT: usize = 1 << 30;

struct CappedAllocator;

// SAFETY: forwards to the system allocator, or returns null (allocation failure) for requests
// above the limit, which the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT { std::ptr::null_mut() } else { unsafe { System.alloc(layout) } }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT { std::ptr::null_mut() } else { unsafe { System.alloc_zeroed(layout) } }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT { std::ptr::null_mut() } else { unsafe { System.realloc(ptr, layout, new_size) } }
    }
}

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// Inputs per loader: enough to reach every mutation many times, small enough for CI.
const DEFAULT_INPUTS: u64 = 20_000;

fn fuzz(loader: Loader) {
    let inputs = std::env::var("EMBER_FUZZ_INPUTS").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_INPUTS);
    let work = fuzz::default_work_dir("test");
    let failures = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("fuzz-failures");
    let fuzzer = Fuzzer::new(loader, 0, &work, &failures).unwrap_or_else(|e| panic!("{e}"));
    let report = fuzzer.run(0, inputs, 0, &mut |_| {});
    let _ = std::fs::remove_dir_all(fuzzer.work_dir());
    let _ = std::fs::remove_dir(&work);
    eprintln!(
        "{}: {} inputs, {} accepted, {} rejected with an error, {} panics ({:.0} inputs/s)",
        loader.name(),
        report.inputs,
        report.accepted,
        report.rejected,
        report.failures.len(),
        report.per_second()
    );
    let listed: Vec<String> = report.failures.iter().take(5).map(|f| format!("input {}: {} (saved as {:?})", f.index, f.message, f.saved)).collect();
    assert!(report.failures.is_empty(), "{} of {} inputs made {} panic:\n{}", report.failures.len(), report.inputs, loader.name(), listed.join("\n"));
    // the mutants reach past the first check: some are still accepted, most are refused
    assert!(report.rejected > 0, "no input was refused: the mutations do not reach {}", loader.name());
}

#[test]
fn safetensors_loader_returns_errors_not_panics() {
    fuzz(Loader::Safetensors);
}

#[test]
fn checkpoint_loader_and_its_train_config_return_errors_not_panics() {
    fuzz(Loader::Checkpoint);
}

#[test]
fn idx_loader_returns_errors_not_panics() {
    fuzz(Loader::Idx);
}

#[test]
fn gzipped_idx_loader_returns_errors_not_panics() {
    fuzz(Loader::IdxGz);
}

#[test]
fn cifar10_loader_returns_errors_not_panics() {
    fuzz(Loader::Cifar10);
}

#[test]
fn png_loader_returns_errors_not_panics() {
    fuzz(Loader::Png);
}

#[test]
fn unet_config_parser_returns_errors_not_panics() {
    fuzz(Loader::UnetConfig);
}

#[test]
fn vae_config_parser_returns_errors_not_panics() {
    fuzz(Loader::VaeConfig);
}

#[test]
fn clip_config_parser_returns_errors_not_panics() {
    fuzz(Loader::ClipConfig);
}

/// Inputs that `cargo xtask fuzz` found crashing a loader, each now refused with an error.
#[test]
fn inputs_that_once_crashed_a_loader_are_errors() {
    let work = fuzz::default_work_dir("crashers");
    let failures = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("fuzz-failures");
    let refused = |loader: Loader, input: Vec<Vec<u8>>, what: &str| {
        let fuzzer = Fuzzer::new(loader, 0, &work, &failures).unwrap_or_else(|e| panic!("{e}"));
        let outcome = fuzzer.run_one(&input, 0);
        assert!(matches!(outcome, Outcome::Rejected(_)), "{what}: {outcome:?}");
    };
    // an IDX header whose dimensions multiply past u64::MAX (an overflow panic where overflow
    // is checked)
    let mut images: Vec<u8> = [0x803u32, u32::MAX, u32::MAX, u32::MAX].iter().flat_map(|w| w.to_be_bytes()).collect();
    images.extend([0; 16]);
    let labels: Vec<u8> = [0x801u32, 1].iter().flat_map(|w| w.to_be_bytes()).chain([0]).collect();
    refused(Loader::Idx, vec![images, labels], "IDX dimensions of 2^96 pixels");
    // a palette image whose PLTE chunk is not whole RGB entries (a panic in png 0.18's
    // palette expansion)
    let ragged = (*b"PLTE", vec![0x6e, 0xfd, 0xe0, 0x0c, 0xc6, 0x0c, 0xa7, 0xa9, 0x1f, 0x46, 0x9a, 0x6b, 0xf7]);
    refused(Loader::Png, vec![fuzz::images::png_file(5, 5, 8, 3, false, &[ragged])], "a PLTE chunk of 13 bytes");
    // a 100000x1 image first in a PNG folder: its width taken as the side of every image (an
    // abort reserving 120 GB for the dataset)
    refused(Loader::Png, vec![fuzz::images::png_file(100_000, 1, 8, 0, false, &[])], "a 100000x1 PNG");
    let _ = std::fs::remove_dir_all(&work);
}
