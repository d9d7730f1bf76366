#!/usr/bin/env bash
# The main job end to end, with no camera and no internet: make a BiT-S-R50x1 checkpoint in
# the exact official npz layout (random weights: real ones cannot be downloaded here), import
# it (weight standardization folded, labels and preprocessing contract in the model), and
# classify the sample photos. Outputs go to ./demo-out (override with DEMO_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-demo-out}
mkdir -p "$out"
run() { printf '+ %s\n' "$*"; "$@"; }
run cargo build --release --quiet -p bit-tools --bin bit-tool
tool=target/release/bit-tool
[ -f "$out/BiT-S-R50x1-synthetic.npz" ] ||
  run "$tool" synth --out "$out/BiT-S-R50x1-synthetic.npz" --depths 3,4,6,3 --width 1 --classes 1000 --seed 0
run "$tool" import "$out/BiT-S-R50x1-synthetic.npz" --out "$out/bit-s-r50x1.onnx"
run "$tool" info "$out/bit-s-r50x1.onnx"
run "$tool" classify --model "$out/bit-s-r50x1.onnx" --top-k 3 samples/images/*.png samples/images/*.jpg
echo "(random weights: the labels above are meaningless; import a real BiT-S-R50x1.npz for real ones, see README)"
