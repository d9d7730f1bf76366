#!/usr/bin/env bash
# The main job end to end, with no camera and no internet: make a BiT-S-R50x1 checkpoint in
# the exact official npz layout (random weights: real ones cannot be downloaded here), import
# it (weight standardization folded, labels and preprocessing contract in the model),
# classify the sample photos, then quantize to int8, compare it with the float model and
# classify again; finally run the camera-classifier daemon on the int8 model with the photos
# replayed as camera frames (one JSON line per frame). Outputs go to ./demo-out (override
# with DEMO_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-demo-out}
mkdir -p "$out"
run() { printf '+ %s\n' "$*"; "$@"; }
run cargo build --release --quiet -p bit-tools --bin bit-tool -p camera-classifier --bin camera-classifier
tool="${CARGO_TARGET_DIR:-target}/release/bit-tool"
daemon="${CARGO_TARGET_DIR:-target}/release/camera-classifier"
[ -f "$out/BiT-S-R50x1-synthetic.npz" ] ||
  run "$tool" synth --out "$out/BiT-S-R50x1-synthetic.npz" --depths 3,4,6,3 --width 1 --classes 1000 --seed 0
run "$tool" import "$out/BiT-S-R50x1-synthetic.npz" --out "$out/bit-s-r50x1.onnx"
run "$tool" info "$out/bit-s-r50x1.onnx"
run "$tool" classify --model "$out/bit-s-r50x1.onnx" --top-k 3 samples/images/*.png samples/images/*.jpg
# int8: calibration and held-out frames augmented from the photos with different seeds.
run "$tool" augment --from samples/images --out "$out/calib" --count 30 --seed 1
run "$tool" augment --from samples/images --out "$out/held-out" --count 30 --seed 2
run "$tool" quantize "$out/bit-s-r50x1.onnx" --calib "$out/calib" --out "$out/bit-s-r50x1-int8.onnx"
run "$tool" eval --float "$out/bit-s-r50x1.onnx" --int8 "$out/bit-s-r50x1-int8.onnx" --images "$out/held-out" --worst 5
run "$tool" classify --model "$out/bit-s-r50x1-int8.onnx" --top-k 3 samples/images/chelsea.png samples/images/coffee.png
# The device daemon, without a camera: the photos replayed as frames at 5 fps, once.
cat > "$out/camera-classifier.toml" <<EOF
[model]
path = "bit-s-r50x1-int8.onnx"
# One thread: at 5 fps the cores idle between frames, and there two threads measured slower
# than one (README, speed).
threads = 1
top_k = 3
[replay]
path = "$PWD/samples/images"
fps = 5
at_end = "stop"
[mode]
kind = "continuous"
[output]
status_interval_s = 1
EOF
run "$daemon" --config "$out/camera-classifier.toml" --check-config
run "$daemon" --config "$out/camera-classifier.toml"
echo "(random weights: the labels above are meaningless; import a real BiT-S-R50x1.npz for real ones, see README)"
