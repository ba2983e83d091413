#!/usr/bin/env bash
# What `ember train` costs around the model's step (batch assembly, flips, noise, clipping,
# Adam, EMA, logging, progress): its wall time per step against the bench's bare step of the
# same model (`cargo bench --bench unet -- --case tiny_train_b32`: forward, backward and Adam
# on a fixed batch, median of 5 steps), on a quiet machine.
#
#   bash scripts/trainer_overhead.sh [N]      (default N = 100)
#
# The trainer's time per step is (time of a 2N-step run − time of an N-step run) / N, so that
# start-up, data loading and the last step's checkpoint and preview cancel out. The tiny
# preset at batch 32 on Fashion-MNIST when installed (else procedural images of one channel).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
cargo build --release --quiet --bin ember
cargo bench --bench unet --no-run --quiet 2>/dev/null
data=fashion-mnist
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || data=procedural:2000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() { # steps -> seconds
  local start end
  start=$(date +%s.%N)
  target/release/ember train --preset tiny --data "$data" --batch-size 32 --steps "$1" \
    --checkpoint-every 0 --sample-every 0 --sample-count 1 --sample-steps 2 --out "$tmp/run$1" > /dev/null 2>&1
  end=$(date +%s.%N)
  awk "BEGIN { print $end - $start }"
}
bench=$(cargo bench --bench unet --quiet -- --case tiny_train_b32 2>/dev/null | tail -1 | cut -d' ' -f1)
short=$(run "$N")
long=$(run $((2 * N)))
awk -v bench="$bench" -v short="$short" -v long="$long" -v n="$N" 'BEGIN {
  per_step = (long - short) / n
  printf "bench step (model only)      %8.1f ms\n", bench * 1000
  printf "ember train, per step        %8.1f ms   (%d steps: %.1f s, %d steps: %.1f s)\n", per_step * 1000, n, short, 2 * n, long
  printf "trainer overhead             %8.1f %%\n", (per_step / bench - 1) * 100
}'
