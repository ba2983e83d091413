#!/usr/bin/env bash
# The one script for a lent GPU machine: proves every CUDA kernel on the real GPU against the
# CPU, then times the kernels and the UNet, and trains on the GPU. From the repo root:
#
#   bash scripts/gpu_check.sh            (or: bash scripts/gpu_check.sh check STEP..., a subset of
#                                          tests kernels unet train profile)
#
# It prints nvidia-smi, puts NVRTC (libnvrtc.so.13) on LD_LIBRARY_PATH, and runs these steps,
# each under its own time limit so that one slow step cannot eat the others' device time:
#   1. the CUDA tests: cargo test --release --workspace --features cuda,cuda-emu, with
#      EMBER_CUDA_POISON=1 (device buffers start as NaN bytes, as in the emulator); fails if a
#      test reports "SKIPPED on a real GPU" (a GPU test must run, not pass unseen;
#      `--show-output` makes libtest print what passing tests wrote); the TF32 and bf16
#      loss-curve test over 300 steps (EMBER_CURVE_STEPS)
#   2. benches/cuda_kernels.rs: every kernel against PyTorch (cuBLAS, cuDNN, SDPA) in f32, then
#      the quick set (a few cases of each family) with --precision tf32 (GEMM, convolutions
#      and attention on tensor cores, PyTorch's allow_tf32 on) and with --precision bf16 (their
#      inputs in bf16; PyTorch's in bf16 tensors)
#   3. benches/unet.rs --device cuda: the ddpm-cifar10 training step and forward at batch 128
#      against diffusers/PyTorch eager on the same GPU, in f32, tf32 and bf16 (PyTorch: autocast)
#   4. `ember train --preset ddpm-cifar10 --device cuda` on the procedural data, a short run;
#      its loss.csv and last sample grid are copied next to the log
#   5. the op profile of one ddpm-cifar10 B128 training step on the GPU (EMBER_PROFILE=1: the
#      device is synchronized at each op, so each op's row holds its kernels' time)
# Output goes to $OUT/gpu_check.log (or target/gpu_check.log). Idempotent.
#
# The device machines have no Rust toolchain and no diffusers. There it runs instead the
# binaries staged in target/gpu-check by `bash scripts/gpu_check.sh build`, run first on a
# machine with cargo (x86-64; about 5 minutes), which also downloads diffusers' wheels into
# .whl (git-ignored), and packs the stage into target/gpu-check.tgz (the binaries unpacked are
# too large to travel beside the tree). Carry both:
#   run(command="bash scripts/gpu_check.sh check tests kernels", carry=["target/gpu-check.tgz", ".whl"])
#   run(command="bash scripts/gpu_check.sh check unet train profile", carry=[...the same])
# (two calls: the steps' limits add up to more than the 600 s one call may run).
set -uo pipefail
export EMBER_CUDA_POISON=1
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

stage=target/gpu-check
out_dir=${OUT:-target}
log="$out_dir/gpu_check.log"

# Builds the CUDA tests, the benches and `ember` for any x86-64-v3 CPU (not only this one),
# with symbols (AddressSanitizer reports name the kernel) but no debug info, and copies them
# with the package directory each runs in.
build() {
    set -e
    export CARGO_TARGET_DIR=target/gpu-check-build RUSTFLAGS="-C target-cpu=x86-64-v3"
    export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo
    export CARGO_PROFILE_BENCH_DEBUG=false CARGO_PROFILE_BENCH_STRIP=debuginfo
    rm -rf "$stage" && mkdir -p "$stage/bin" "$CARGO_TARGET_DIR"
    local json="$CARGO_TARGET_DIR/artifacts.json" tests=()
    for file in tests/*cuda*.rs; do tests+=(--test "$(basename "$file" .rs)"); done
    { cargo test --release --no-run --message-format=json --features cuda,cuda-emu -p ember-tensor --lib
      cargo test --release --no-run --message-format=json --features cuda,cuda-emu -p ember "${tests[@]}"
      cargo bench --no-run --message-format=json --features cuda --bench cuda_kernels --bench unet
      cargo build --release --message-format=json --features cuda --bin ember; } > "$json"
    python3 - "$json" "$stage" "$PWD" <<'PY'
import json, os, shutil, sys
artifacts, stage, root = sys.argv[1:]
staged = {}  # name -> (kind, package); a later build of the same name replaces an earlier one
for line in open(artifacts):
    message = json.loads(line) if line.startswith("{") else {}
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    kinds = message["target"]["kind"]
    kind = "bench" if kinds == ["bench"] else "test" if message["profile"]["test"] else "bin" if kinds == ["bin"] else None
    if kind:
        name = os.path.basename(message["executable"])
        shutil.copy2(message["executable"], os.path.join(stage, "bin", name))
        staged[name] = (kind, os.path.relpath(os.path.dirname(message["manifest_path"]), root))
with open(os.path.join(stage, "list"), "w") as listing:
    listing.writelines(f"{kind} {name} {package}\n" for name, (kind, package) in staged.items())
PY
    echo "$PWD" > "$stage/root"
    # diffusers for the PyTorch side of benches/unet.rs (the device image has torch but not
    # diffusers): Python 3.12 wheels, with the two needs the image lacks
    rm -rf .whl && mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 ||
        echo "warning: diffusers' wheels not downloaded: the GPU UNet bench will have no PyTorch column" >&2
    tar -C "$(dirname "$stage")" -czf "$stage.tgz" "$(basename "$stage")"
    cat "$stage/list" && du -sh "$stage" "$stage.tgz" .whl
}

# Puts the first libnvrtc.so.13 found on LD_LIBRARY_PATH (cudarc looks nowhere else).
find_nvrtc() {
    local site dir
    site=$(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
    for dir in ${EMBER_NVRTC_DIR:-} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        $(printf '%s/nvidia/cu13/lib\n' $site) target/nvrtc-venv/lib/python3*/site-packages/nvidia/cu13/lib; do
        if [ -e "$dir/libnvrtc.so.13" ]; then
            export LD_LIBRARY_PATH="$(cd "$dir" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "NVRTC: $dir"
            return
        fi
    done
    echo "warning: libnvrtc.so.13 not found (set EMBER_NVRTC_DIR): no kernel can compile"
}

have_cargo() {
    command -v cargo >/dev/null
}

# Runs the staged binaries of kind `$1` whose names start with `$2` (all of that kind when it
# is empty), each in its package's directory as cargo would, with the arguments after `$2`.
run_staged() {
    local want_kind=$1 want_name=$2 status=0 kind name package built_in
    shift 2
    built_in=$(cat "$stage/root")
    # Tests find their fixtures through the path they were built in.
    [ -e "$built_in" ] || { mkdir -p "$(dirname "$built_in")" && ln -s "$PWD" "$built_in"; }
    while read -r kind name package; do
        [ "$kind" = "$want_kind" ] && [[ "$name" == "$want_name"* ]] || continue
        echo "== $kind $name $*"
        (cd "$package" && CARGO_MANIFEST_DIR="$PWD" "$OLDPWD/$stage/bin/$name" "$@") || status=1
    done < "$stage/list"
    return $status
}

# The steps, each run by `step` in a child of this script (`timeout` runs commands, not functions).
run_tests() {
    # the TF32 and bf16 loss-curve test's full length (25 steps on the emulator)
    export EMBER_CURVE_STEPS=300
    if have_cargo; then
        cargo test --release --workspace --features cuda,cuda-emu -- --show-output
    else
        run_staged test "" --show-output
    fi
}

# Benchmarks time without poisoned allocations.
run_bench() {
    local name=$1
    shift
    unset EMBER_CUDA_POISON
    if have_cargo; then
        cargo bench --features cuda --bench "$name" -- "$@"
    else
        run_staged bench "$name-" --bench "$@"
    fi
}

run_profile() {
    EMBER_PROFILE=1 run_bench unet --case ddpm_cifar10_train_b128_cuda
}

run_train() {
    local run=/tmp/ember-gpu-run ember=(cargo run --release --features cuda --bin ember --)
    have_cargo || ember=("$stage/bin/ember")
    unset EMBER_CUDA_POISON
    rm -rf "$run"
    "${ember[@]}" train --preset ddpm-cifar10 --device cuda --data procedural --steps 20 --batch-size 128 \
        --warmup 5 --checkpoint-every 20 --sample-every 20 --sample-count 16 --sample-steps 20 --out "$run" || return 1
    cat "$run/loss.csv"
    cp "$run/loss.csv" "$out_dir/train_loss.csv"
    cp "$(ls "$run"/samples/*.png | tail -n 1)" "$out_dir/train_samples.png"
}

# Runs step `$1` (a label) for at most `$2` seconds: this script again with the rest as its
# arguments. Its output goes to the terminal and the log.
failures=()
step() {
    local label=$1 seconds=$2 started=$SECONDS status
    shift 2
    echo "==== $label (at most ${seconds}s)" | tee -a "$log"
    timeout -k 10 "$seconds" bash "$self" "$@" 2>&1 | tee -a "$log"
    status=${PIPESTATUS[0]}
    echo "==== $label: exit $status after $((SECONDS - started))s" | tee -a "$log"
    [ "$status" -eq 0 ] || failures+=("$label (exit $status)")
}

check() {
    mkdir -p "$out_dir" && : > "$log"
    if ! have_cargo && [ ! -f "$stage/list" ] && [ -f "$stage.tgz" ]; then
        tar -C "$(dirname "$stage")" -xzf "$stage.tgz"
    fi
    if ! have_cargo && [ ! -f "$stage/list" ]; then
        echo "no cargo here and no $stage.tgz: run 'bash scripts/gpu_check.sh build' where cargo" \
            "is, and carry $stage.tgz" >&2
        return 1
    fi
    { nvidia-smi || echo "nvidia-smi failed: is there a GPU?"; } 2>&1 | tee -a "$log"
    find_nvrtc >> "$log" 2>&1  # not in a pipe: its export must stay in this shell
    tail -n 1 "$log"
    if [ -d .whl ] && ! python3 -c 'import diffusers' 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/ember-site .whl/*.whl 2>&1 | tee -a "$log"
        export PYTHONPATH=/tmp/ember-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    # The emulator's AddressSanitizer must leave the CUDA driver its address range.
    export ASAN_OPTIONS="protect_shadow_gap=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    # Compiled kernels kept on disk for the next process (each test binary and bench case is one).
    export EMBER_CUDA_CACHE=${EMBER_CUDA_CACHE:-/tmp/ember-cuda-cache}
    local steps=" ${*:-tests kernels unet train profile} "
    if [[ "$steps" == *" tests "* ]]; then
        step "CUDA tests" "${GPU_CHECK_TEST_SECONDS:-200}" run-tests
        if grep -q "SKIPPED on a real GPU" "$log"; then
            failures+=("GPU tests were skipped (see 'SKIPPED on a real GPU' in $log)")
        fi
    fi
    # Every precision, f32 first. The tf32 and bf16 passes of the kernel benchmark are the
    # quick set (27 cases, against 68): more full passes, each as long as the first, would not
    # fit the device window, and the quick set keeps what the precision changes: the large
    # GEMM, a linear layer, five convolution shapes (forward and both gradients) and three
    # attention shapes.
    if [[ "$steps" == *" kernels "* ]]; then
        step "kernel benchmark, f32" "${GPU_CHECK_BENCH_SECONDS:-150}" run-bench cuda_kernels --runs 7 --precision f32
        step "kernel benchmark, tf32 (quick set)" "${GPU_CHECK_BENCH_TF32_SECONDS:-90}" run-bench cuda_kernels --quick --runs 7 --precision tf32
        step "kernel benchmark, bf16 (quick set)" "${GPU_CHECK_BENCH_BF16_SECONDS:-90}" run-bench cuda_kernels --quick --runs 7 --precision bf16
    fi
    if [[ "$steps" == *" unet "* ]]; then
        local precision
        for precision in f32 tf32 bf16; do
            step "UNet benchmark, $precision" "${GPU_CHECK_UNET_SECONDS:-150}" run-bench unet --device cuda --rounds 1 --precision "$precision"
        done
    fi
    [[ "$steps" == *" train "* ]] && step "ember train ddpm-cifar10 on cuda" "${GPU_CHECK_TRAIN_SECONDS:-100}" run-train
    [[ "$steps" == *" profile "* ]] && step "op profile of a training step" "${GPU_CHECK_PROFILE_SECONDS:-60}" run-profile
    if [ ${#failures[@]} -eq 0 ]; then
        echo "gpu_check: all passed" | tee -a "$log"
    else
        printf 'gpu_check: FAILED: %s\n' "${failures[@]}" | tee -a "$log" >&2
        return 1
    fi
}

case "${1:-check}" in
    build) build ;;
    check) shift; check "$@" ;;
    run-tests) run_tests ;;
    run-bench) shift && run_bench "$@" ;;
    run-train) run_train ;;
    run-profile) run_profile ;;
    *) echo "usage: bash scripts/gpu_check.sh [build | check [tests] [kernels] [unet] [train] [profile]]" >&2; exit 2 ;;
esac
