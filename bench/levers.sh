#!/usr/bin/env bash
# Runs the voice benchmark once per lever configuration (bench/levers/*.toml), each beside
# the naive pipeline in the same run; results in bench/levers/*.json and *.png.
set -euo pipefail
cd "$(dirname "$0")/.."
for config in bench/levers/*.toml; do
  name=$(basename "$config" .toml)
  .venv/bin/python -m bench.voice_latency --config "$config" --label "$name" \
    --out "bench/levers/$name.json" --chart "bench/levers/$name.png"
done
