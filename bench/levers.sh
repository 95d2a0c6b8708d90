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

# Side by side in one run: the defaults against the defaults with one lever switched off
# (bench/levers/ab/*.toml), two passes over the recordings.
for config in bench/levers/ab/*.toml; do
  name=$(basename "$config" .toml)
  .venv/bin/python -m bench.voice_latency --rounds 2 --compare "$config" \
    --label "defaults vs $name" --out "bench/levers/ab/$name.json" --chart "bench/levers/ab/$name.png"
done
