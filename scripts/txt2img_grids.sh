#!/usr/bin/env bash
# The recorded run's grids: 8 canvases per prompt, guidance 4, DDIM 50 steps, seed 0.
set -euo pipefail
ember=${EMBER:-target/release/ember}
pipeline=${1:-checkpoints/txt2img-fashion-mnist-f16.safetensors}
out=${2:-docs/txt2img}
while IFS= read -r prompt; do
    slug=$(echo "$prompt" | tr ' ' '-')
    "$ember" txt2img --pipeline "$pipeline" --prompt "$prompt" --guidance 4 --steps 50 --n 8 --seed 0 --out "$out/grid-$slug.png"
done <<'PROMPTS'
a sneaker
two bags
a t-shirt left of a pair of trousers
a dress to the right of a bag
a coat left of a sandal
a sandal left of a coat
a dress left of an ankle boot
a bag to the left of a shirt
PROMPTS
