#!/usr/bin/env bash
# The one script for a lent GPU machine: proves every CUDA kernel on the real GPU against the
# CPU, then times them. From the repo root:
#
#   bash scripts/gpu_check.sh
#
# It prints nvidia-smi, puts NVRTC (libnvrtc.so.13) on LD_LIBRARY_PATH, and runs
#   cargo test --release --workspace --features cuda,cuda-emu
#   cargo bench --bench cuda_kernels --features cuda     (skipped if the bench does not exist)
# and fails if a test reports "SKIPPED on a real GPU" (a GPU test must run, not pass unseen;
# `--show-output` makes libtest print what passing tests wrote).
#
# The device machines have no Rust toolchain. Then it runs instead the CUDA test binaries
# and the bench staged in target/gpu-check by `bash scripts/gpu_check.sh build`, run first on
# a machine with cargo (x86-64; about 5 minutes); carry `target/gpu-check` with the call.
# Output is also written to $OUT/gpu_check.log (or target/gpu_check.log). Idempotent.
set -uo pipefail
export EMBER_CUDA_POISON=1  # device buffers start as NaN bytes, as in the emulator
cd "$(dirname "$0")/.."

stage=target/gpu-check

# Builds the CUDA tests and the bench for any x86-64-v3 CPU (not only this one), with symbols
# (AddressSanitizer reports name the kernel) but no debug info,
# and copies them with the package directory each runs in.
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
      if [ -f benches/cuda_kernels.rs ]; then
          cargo bench --no-run --message-format=json --features cuda --bench cuda_kernels
      fi; } > "$json"
    python3 - "$json" "$stage" "$PWD" <<'EOF'
import json, os, shutil, sys
artifacts, stage, root = sys.argv[1:]
with open(os.path.join(stage, "list"), "w") as listing:
    for line in open(artifacts):
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["profile"]["test"]:
            name = os.path.basename(message["executable"])
            package = os.path.relpath(os.path.dirname(message["manifest_path"]), root)
            kind = "bench" if message["target"]["kind"] == ["bench"] else "test"
            shutil.copy2(message["executable"], os.path.join(stage, "bin", name))
            listing.write(f"{kind} {name} {package}\n")
EOF
    echo "$PWD" > "$stage/root"
    cat "$stage/list" && du -sh "$stage"
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
    echo "warning: libnvrtc.so.13 not found (set EMBER_NVRTC_DIR): no kernel can compile" >&2
}

# Runs the staged binaries, each in its package's directory, as cargo would.
run_staged() {
    local status=0 kind name package built_in
    built_in=$(cat "$stage/root")
    # Tests find their fixtures through the path they were built in.
    [ -e "$built_in" ] || { mkdir -p "$(dirname "$built_in")" && ln -s "$PWD" "$built_in"; }
    while read -r kind name package; do
        [ "$kind" = "$1" ] || continue
        echo "== $kind $name"
        (cd "$package" && CARGO_MANIFEST_DIR="$PWD" "$OLDPWD/$stage/bin/$name" \
            "$([ "$kind" = bench ] && echo --bench || echo --show-output)") || status=1
    done < "$stage/list"
    return $status
}

check() {
    local log="${OUT:-target}/gpu_check.log" status=0
    mkdir -p "$(dirname "$log")"
    echo "== nvidia-smi"
    nvidia-smi || echo "nvidia-smi failed: is there a GPU?"
    find_nvrtc
    # The emulator's AddressSanitizer must leave the CUDA driver its address range.
    export ASAN_OPTIONS="protect_shadow_gap=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    if command -v cargo >/dev/null; then
        cargo test --release --workspace --features cuda,cuda-emu -- --show-output 2>&1 |
            tee "$log" || status=1
        if [ -f benches/cuda_kernels.rs ]; then
            cargo bench --bench cuda_kernels --features cuda 2>&1 | tee -a "$log" || status=1
        else
            echo "benches/cuda_kernels.rs does not exist: benchmark skipped" | tee -a "$log"
        fi
    elif [ -f "$stage/list" ]; then
        run_staged test 2>&1 | tee "$log" || status=1
        if grep -q '^bench ' "$stage/list"; then
            run_staged bench 2>&1 | tee -a "$log" || status=1
        else
            echo "no staged benchmark (benches/cuda_kernels.rs): skipped" | tee -a "$log"
        fi
    else
        echo "no cargo here and no $stage: run 'bash scripts/gpu_check.sh build' where cargo" \
            "is, and carry $stage" >&2
        return 1
    fi
    if grep -q "SKIPPED on a real GPU" "$log"; then
        echo "FAILED: GPU tests were skipped (see 'SKIPPED on a real GPU' in $log)" >&2
        status=1
    fi
    [ $status -eq 0 ] && echo "gpu_check: all passed" || echo "gpu_check: FAILED" >&2
    return $status
}

case "${1:-check}" in
    build) build ;;
    check) check ;;
    *) echo "usage: bash scripts/gpu_check.sh [build|check]" >&2; exit 2 ;;
esac
