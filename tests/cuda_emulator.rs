//! Proofs of the CUDA emulator itself (kernels/emu/): its test kernels
//! (kernels/emu/selftest.cu) use barriers, static and dynamic shared memory, warp shuffles,
//! votes and atomics, and break the rules on purpose; the emulator must run the first
//! exactly and report the second.
#![cfg(feature = "cuda-emu")]

use std::sync::Arc;

use ember::tensor::TensorError;
use ember::tensor::cuda::emu::Emulator;
use ember::tensor::cuda::{DeviceBuffer, GpuBackend, Kernel, KernelArg, LaunchConfig};

fn selftest(name: &'static str) -> Kernel {
    Kernel { file: "emu/selftest.cu", name }
}

fn input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect()
}

fn poisoned(device: &Arc<dyn GpuBackend>, bytes: usize) -> DeviceBuffer {
    let buffer = DeviceBuffer::new(device, bytes).unwrap();
    device.fill_bytes(buffer.ptr(), bytes, 0xff).unwrap();
    buffer
}

fn cuda_error(result: ember::tensor::Result<()>) -> String {
    match result {
        Err(TensorError::Cuda { what, msg }) => format!("{what}: {msg}"),
        other => panic!("expected a CUDA error, got {other:?}"),
    }
}

#[test]
fn a_block_reverses_through_static_and_dynamic_shared_memory() {
    let device = Emulator::new();
    let (blocks, threads) = (3usize, 256usize);
    let x = input(blocks * threads);
    let expected: Vec<f32> = (0..blocks * threads).map(|i| x[(i / threads) * threads + threads - 1 - i % threads]).collect();
    let x_dev = DeviceBuffer::from_slice(&device, &x).unwrap();
    for (kernel, shared) in [("emu_reverse_in_block", 0), ("emu_reverse_dynamic", threads * 4)] {
        let y = poisoned(&device, x.len() * 4);
        let config = LaunchConfig { shared_bytes: shared as u32, ..LaunchConfig::linear(blocks as u32, threads as u32) };
        device.launch(selftest(kernel), &config, &[x_dev.arg(), y.arg()]).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), expected, "{kernel}");
    }
}

#[test]
fn a_missing_barrier_shows_as_poisoned_reads() {
    let device = Emulator::new();
    let x = input(256);
    let x_dev = DeviceBuffer::from_slice(&device, &x).unwrap();
    let y = poisoned(&device, 256 * 4);
    device.launch(selftest("emu_reverse_missing_barrier"), &LaunchConfig::linear(1, 256), &[x_dev.arg(), y.arg()]).unwrap();
    let nan = y.to_vec::<f32>().unwrap().iter().filter(|v| v.is_nan()).count();
    // Threads run in a random order; about half read their partner's slot before it is written.
    assert!(nan > 32 && nan < 224, "{nan} of 256 threads read poison");
}

#[test]
fn uninitialized_shared_memory_reads_as_nan() {
    let device = Emulator::new();
    let y = DeviceBuffer::from_slice(&device, &[0.0f32; 32]).unwrap();
    device.launch(selftest("emu_read_uninitialized_shared"), &LaunchConfig::linear(1, 32), &[y.arg()]).unwrap();
    assert!(y.to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn a_barrier_half_the_block_skips_is_an_error_not_a_hang() {
    let device = Emulator::new();
    let y = poisoned(&device, 64 * 4);
    let message = cuda_error(device.launch(selftest("emu_barrier_in_branch"), &LaunchConfig::linear(2, 64), &[y.arg()]));
    assert!(message.contains("emu_barrier_in_branch"), "{message}");
    assert!(message.contains("__syncthreads() not reached by every thread"), "{message}");
    assert!(message.contains("block ("), "{message}");
}

#[test]
fn warp_shuffles_and_ballots_follow_cuda() {
    let device = Emulator::new();
    let n = 96; // three warps
    let x = input(n);
    let x_dev = DeviceBuffer::from_slice(&device, &x).unwrap();
    let (sum, prefix, down, ballot) = (poisoned(&device, n * 4), poisoned(&device, n * 4), poisoned(&device, n * 4), poisoned(&device, n * 4));
    device.launch(selftest("emu_warp_ops"), &LaunchConfig::linear(1, n as u32), &[x_dev.arg(), sum.arg(), prefix.arg(), down.arg(), ballot.arg()]).unwrap();
    let (sum, prefix, down, ballot) =
        (sum.to_vec::<f32>().unwrap(), prefix.to_vec::<f32>().unwrap(), down.to_vec::<f32>().unwrap(), ballot.to_vec::<u32>().unwrap());
    for warp in 0..3 {
        let lanes = &x[warp * 32..warp * 32 + 32];
        let bits = lanes.iter().enumerate().fold(0u32, |b, (l, &v)| if v > 0.0 { b | 1 << l } else { b });
        for lane in 0..32 {
            let i = warp * 32 + lane;
            let total: f32 = lanes.iter().sum();
            let running: f32 = lanes[..=lane].iter().sum();
            assert!((sum[i] - total).abs() < 1e-4, "sum at {i}");
            assert!((prefix[i] - running).abs() < 1e-4, "prefix at {i}");
            // shfl_down past the warp's end reads the lane itself.
            assert_eq!(down[i], if lane < 31 { x[i + 1] } else { x[i] }, "down at {i}");
            assert_eq!(ballot[i], bits, "ballot at {i}");
        }
    }
}

#[test]
fn lanes_disagreeing_on_a_mask_are_reported() {
    let device = Emulator::new();
    let y = poisoned(&device, 32 * 4);
    let message = cuda_error(device.launch(selftest("emu_mask_mismatch"), &LaunchConfig::linear(1, 32), &[y.arg()]));
    assert!(message.contains("emu_mask_mismatch"), "{message}");
}

#[test]
fn atomics_count_every_thread_of_the_grid() {
    let device = Emulator::new();
    let count = DeviceBuffer::from_slice(&device, &[0i32]).unwrap();
    let config = LaunchConfig { grid: [3, 2, 2], block: [8, 4, 2], shared_bytes: 0 };
    device.launch(selftest("emu_count_threads"), &config, &[count.arg()]).unwrap();
    assert_eq!(count.to_vec::<i32>().unwrap(), vec![3 * 2 * 2 * 8 * 4 * 2]);
}

#[test]
fn bad_launches_and_arguments_are_typed_errors() {
    let device = Emulator::new();
    let y = poisoned(&device, 64);
    let too_big = LaunchConfig::linear(1, 2048);
    assert!(cuda_error(device.launch(selftest("emu_count_threads"), &too_big, &[y.arg()])).contains("invalid launch configuration"));
    let message = cuda_error(device.launch(selftest("emu_count_threads"), &LaunchConfig::linear(1, 1), &[KernelArg::F32(1.0)]));
    assert!(message.contains("given (f), declared (p)"), "{message}");
    let missing = Kernel { file: "emu/selftest.cu", name: "no_such_kernel" };
    assert!(cuda_error(device.launch(missing, &LaunchConfig::linear(1, 1), &[])).contains("no such kernel"));
}

/// Runs `kernel` in a child process (this test binary, filtered to `child_test`), which
/// AddressSanitizer must stop with a report.
fn asan_stops(child_test: &str) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env("EMBER_EMU_CHILD", "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the out-of-bounds kernel ran to its end");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn out_of_bounds_shared_and_global_accesses_are_caught() {
    if option_env!("EMBER_EMU_ASAN") == Some("0") {
        eprintln!("SKIPPED: the emulator was built without AddressSanitizer (EMBER_EMU_ASAN=0)");
        return;
    }
    let shared = asan_stops("child_shared_out_of_bounds");
    assert!(shared.contains("AddressSanitizer") && shared.contains("emu_shared_out_of_bounds"), "{shared}");
    let global = asan_stops("child_global_out_of_bounds");
    assert!(global.contains("AddressSanitizer: heap-buffer-overflow") && global.contains("emu_global_out_of_bounds"), "{global}");
}

#[test]
fn child_shared_out_of_bounds() {
    if std::env::var_os("EMBER_EMU_CHILD").is_none() {
        return; // only run as the child of the test above
    }
    let device = Emulator::new();
    let y = poisoned(&device, 32 * 4);
    let _ = device.launch(selftest("emu_shared_out_of_bounds"), &LaunchConfig::linear(1, 32), &[y.arg()]);
}

#[test]
fn child_global_out_of_bounds() {
    if std::env::var_os("EMBER_EMU_CHILD").is_none() {
        return;
    }
    let device = Emulator::new();
    let y = poisoned(&device, 32 * 4);
    let _ = device.launch(selftest("emu_global_out_of_bounds"), &LaunchConfig::linear(1, 32), &[y.arg(), KernelArg::I32(32)]);
}
