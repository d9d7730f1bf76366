#!/usr/bin/env python3
"""tract (bit-tool) against ONNX Runtime on the same BiT model, side by side in one run.

    scripts/bench-vs-onnxruntime.py [--float demo-out/bit-s-r50x1.onnx]
        [--int8 demo-out/bit-s-r50x1-int8.onnx] [--calib demo-out/calib]
        [--runs 20] [--rounds 3] [--threads 1,2] [--out target/bench-ort]

Per thread count and round, in this order: tract f32 and tract int8 (the project's models,
`bit-tool bench`, one process each), then ONNX Runtime on the same float ONNX, on two int8
models of its own `quantize_static` ("conv": convolutions only, like the project; "all-ops":
ORT's default op set), and on the project's int8 file if ORT runs it. ORT calibrates on the
same images, preprocessed by the model's contract (`bit.preprocess` metadata). Each
configuration loads afresh every round, runs once to warm up, then --runs timed runs on
bit-tool's synthetic input. Then ratios, and tract's per-op profile of the int8 model.

The first run makes OUT/venv (onnxruntime, onnx, numpy, pillow from PyPI), pins what it got
in OUT/requirements.lock (a new venv installs from it) and re-runs itself inside it. ORT's
int8 models are cached in OUT, keyed by the inputs, the op set and the ORT version.
Needs bit-tool: cargo build --release -p bit-tools
"""

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
PACKAGES = ["onnxruntime", "onnx", "numpy", "pillow"]
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")  # the images bit-tool quantize reads

# ORT's int8 variants: op_types_to_quantize. ORT 1.32 has no GroupNormalization-21 kernel:
# it expands GN into Reshape/ReduceMean/Sub/Div/Sqrt/Mul/Add (so does quant_pre_process),
# and the default op set then puts Q/DQ around each of those (hundreds of pairs).
ORT_INT8 = {"ORT int8 conv": ["Conv"], "ORT int8 all-ops": None}
ORT_SETTINGS = ("quant_pre_process(skip_symbolic_shape=True), then quantize_static: QDQ, per_channel=True, "
                "weights QInt8 (symmetric), activations QInt8 (S8S8, ORT's first choice on CPU; its x86 "
                "kernels run it as U8S8), MinMax, reduce_range=False; op_types_to_quantize ['Conv'] / default")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo = os.path.join(ROOT, "demo-out")
    ap.add_argument("--float", dest="float_model", default=os.path.join(demo, "bit-s-r50x1.onnx"))
    ap.add_argument("--int8", default=os.path.join(demo, "bit-s-r50x1-int8.onnx"))
    ap.add_argument("--calib", default=os.path.join(demo, "calib"))
    ap.add_argument("--runs", type=int, default=20, help="timed runs per configuration and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all configurations")
    ap.add_argument("--threads", default=[1, 2], type=lambda v: [int(t) for t in v.split(",")],
                    help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench-ort"))
    a = ap.parse_args()
    if a.runs < 1 or a.rounds < 1 or not a.threads or min(a.threads) < 1:
        ap.error("--runs, --rounds and every --threads value must be at least 1")
    for attr in ("float_model", "int8", "calib", "out"):
        setattr(a, attr, os.path.abspath(getattr(a, attr)))
    return a


def ensure_venv(out):
    """Re-executes this script inside OUT/venv, making it (and pinning its packages) first."""
    venv = os.path.join(out, "venv")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if os.environ.get("BENCH_ORT_REEXEC"):
        sys.exit(f"{venv}: re-executed, but not running inside the virtualenv (remove it and retry)")
    python, lock = os.path.join(venv, "bin", "python"), os.path.join(out, "requirements.lock")
    marker = os.path.join(venv, ".bench-ort-installed")
    if not os.path.exists(marker):
        os.makedirs(out, exist_ok=True)
        print(f"setting up {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        reqs = ["-r", lock] if os.path.exists(lock) else PACKAGES  # the same versions as before
        if subprocess.run([python, "-m", "pip", "install", "-q", *reqs]).returncode != 0:
            sys.exit(f"{venv}: pip install {' '.join(reqs)} failed (is PyPI reachable?)")
        frozen = subprocess.run([python, "-m", "pip", "freeze"], check=True, capture_output=True, text=True)
        with open(lock, "w") as f:
            f.write(frozen.stdout)
        pins = [l for l in frozen.stdout.splitlines() if l.split("==")[0].lower() in PACKAGES]
        print(f"pinned in {lock}: {', '.join(pins)}", file=sys.stderr)
        open(marker, "w").close()
    os.environ["BENCH_ORT_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def host_versions(bit_tool):
    """ORT and friends, tract (from Cargo.lock), bit-tool, the CPU and its SIMD features."""
    import numpy, onnx, onnxruntime, PIL
    with open(os.path.join(ROOT, "Cargo.lock")) as f:
        m = re.search(r'name = "tract-onnx"\nversion = "([^"]+)"', f.read())
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        info = ""
    field = lambda k: (re.search(rf"^{k}\s*:\s*(.*)$", info, re.M) or [None, "?"])[1]
    cpu, flags = field("model name"), set(field("flags").split())
    tool = subprocess.run([bit_tool, "--version"], capture_output=True, text=True).stdout.strip()
    feats = [x for x in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if x in flags]
    print(f"onnxruntime {onnxruntime.__version__} (onnx {onnx.__version__}, numpy {numpy.__version__}, "
          f"pillow {PIL.__version__}); tract {m.group(1) if m else '?'} (Cargo.lock); {tool}")
    print(f"cpu: {cpu}, {os.cpu_count()} logical cores, {' '.join(feats) or 'no avx2'}; "
          f"python {platform.python_version()}")


def read_meta(path):
    """The ONNX model (without external data) and its metadata_props as a dict."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        sys.exit(f"{path}: cannot read the ONNX model: {e}")
    return model, {p.key: p.value for p in model.metadata_props}


# --- Preprocessing: a numpy port of the runtime's Resizer (runtime/src/preprocess.rs) ---

def axis_taps(start, extent, length, n, filt):
    """One axis: output i's centre at start + (i + 0.5) * extent / n, samples clamped to the
    edge pixels (half-pixel centres, no antialiasing). Returns tap indices and weights."""
    import numpy as np
    c = start + (np.arange(n, dtype=np.float64) + 0.5) * (extent / n)
    hi = length - 1
    if filt == "nearest":  # the pixel holding the centre, as a bilinear tap of weight 0
        return [np.clip(np.floor(c), 0, hi).astype(np.int64)] * 2, [np.zeros(n, np.float32)]
    if filt == "bilinear":
        s = np.clip(c - 0.5, 0, hi)
        lo = np.floor(s)
        return [lo.astype(np.int64), np.minimum(lo + 1, hi).astype(np.int64)], [(s - lo).astype(np.float32)]
    f = np.floor(c - 0.5)  # bicubic: Keys' kernel, a = -0.5; edge pixels repeated
    d = [np.abs(c - 0.5 - f - (k - 1)) for k in range(4)]
    keys = lambda d: np.where(d <= 1, (1.5 * d - 2.5) * d * d + 1, np.where(d < 2, ((-0.5 * d + 2.5) * d - 4) * d + 2, 0))
    return [np.clip(f + k - 1, 0, hi).astype(np.int64) for k in range(4)], [keys(x).astype(np.float32) for x in d]


def preprocess(path, pre, size):
    """An image file to the NCHW float32 tensor [1, 3, size, size], as the runtime makes it."""
    import numpy as np
    from PIL import Image
    try:
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    except Exception as e:
        sys.exit(f"{path}: cannot decode the image: {e}")
    h, w = img.shape[:2]
    x0, y0, cw, ch = 0.0, 0.0, float(w), float(h)
    if pre["resize"]["mode"] == "center_crop":  # shorter side to C / fraction, then a C x C crop
        c = float(size)
        s = max(np.floor(c / float(np.float32(pre["resize"]["crop_fraction"])) + 0.5), c)
        long = max(np.floor(s * max(w, h) / min(w, h)), c)
        w2, h2 = (s, long) if w <= h else (long, s)
        sx, sy = w / w2, h / h2
        x0, y0, cw, ch = np.floor((w2 - c) / 2) * sx, np.floor((h2 - c) / 2) * sy, c * sx, c * sy
    filt = pre["resample"]
    (xi, xw), (yi, yw) = axis_taps(x0, cw, w, size, filt), axis_taps(y0, ch, h, size, filt)
    if filt == "bicubic":  # each row's 4 taps across, then the 4 rows down, then clamp
        px = np.zeros((size, size, 3), np.float32)
        for j in range(4):
            hsum = np.zeros((size, size, 3), np.float32)
            for k in range(4):
                hsum += img[yi[j]][:, xi[k]] * xw[k][None, :, None]
            px += hsum * yw[j][:, None, None]
        px = np.clip(px, 0, 255)
    else:  # bilinear (nearest: one tap of weight 0)
        wx, wy = xw[0][None, :, None], yw[0][:, None, None]
        top = img[yi[0]][:, xi[0]] + (img[yi[0]][:, xi[1]] - img[yi[0]][:, xi[0]]) * wx
        bot = img[yi[1]][:, xi[0]] + (img[yi[1]][:, xi[1]] - img[yi[1]][:, xi[0]]) * wx
        px = top + (bot - top) * wy
    if pre["channel_order"] == "bgr":
        px = px[:, :, ::-1]
    std, mean = np.array(pre["std"], np.float64), np.array(pre["mean"], np.float64)
    scale, offset = (1 / (255 * std)).astype(np.float32), (-mean / std).astype(np.float32)
    return np.ascontiguousarray((px * scale + offset).transpose(2, 0, 1)[None])


# --- ONNX Runtime ---

def ort_quantize(float_path, calib_files, calib_inputs, ops, out):
    """ORT's static quantization of the float model (`ops`: op types, None = default), cached."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    key = hashlib.sha256(f"{ort.__version__}\0{ops}".encode())
    for p in [float_path, *calib_files]:
        st = os.stat(p)
        key.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    tag = "-".join(ops).lower() if ops else "all"
    dst = os.path.join(out, f"ort-int8-qdq-s8s8-perchannel-minmax-{tag}-{key.hexdigest()[:12]}.onnx")
    if os.path.exists(dst):
        print(f"ORT int8 ({tag}): cached {dst}")
        return dst
    inputs = calib_inputs()

    class Reader(CalibrationDataReader):
        def __init__(self, name):
            self.feeds = iter([{name: x} for x in inputs])

        def get_next(self):
            return next(self.feeds, None)

    t0, prep = time.perf_counter(), dst + ".pre.onnx"
    try:
        # ORT's recommended pre-processing (optimization, ONNX shape inference); its symbolic
        # shape inference needs sympy and adds nothing here (the only free dims are H, W).
        quant_pre_process(float_path, prep, skip_symbolic_shape=True)
        name = ort.InferenceSession(prep, providers=["CPUExecutionProvider"]).get_inputs()[0].name
        quantize_static(prep, dst + ".partial", Reader(name), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=ops, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        reduce_range=False)
    except Exception as e:
        sys.exit(f"{float_path}: ONNX Runtime quantization ({tag}) failed: {e!r}")
    finally:
        if os.path.exists(prep):
            os.remove(prep)
    os.replace(dst + ".partial", dst)
    print(f"ORT int8 ({tag}): quantized in {time.perf_counter() - t0:.0f} s on {len(inputs)} images -> {dst}")
    return dst


def ort_session(path, threads, dims):
    """A session as benchmarked; `dims` pins free input dimensions by name, as bit-tool pins
    the input size when it loads a model."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    for name, value in dims.items():
        so.add_free_dimension_override_by_name(name, value)
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def pct(times, p):
    """bit-tool's percentile: the sorted sample at round((n - 1) p)."""
    return sorted(times)[int((len(times) - 1) * p + 0.5)]


def ort_one(path, threads, runs, x, dims):
    """Load, one warm-up, `runs` timed runs: (load ms, median ms, p90 ms)."""
    t0 = time.perf_counter()
    sess = ort_session(path, threads, dims)
    load = (time.perf_counter() - t0) * 1e3
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    del sess  # its thread pool goes before the next configuration runs
    return load, pct(times, 0.5), pct(times, 0.9)


def ort_check_project_int8(path, dims, x):
    """Whether ORT runs the project's int8 file (a load and a run); prints its recipe."""
    model, meta = read_meta(path)
    q = json.loads(meta.get("bit.quantization", "{}"))
    print(f"project int8: {path}, activations {q.get('activations', '?')}, calibration "
          f"{q.get('calibration', {}).get('method', '?')} on {q.get('calibration_images', '?')} images")
    custom = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    try:
        sess = ort_session(path, 1, dims)
        sess.run(None, {sess.get_inputs()[0].name: x})
        ops = "only standard ONNX ops" if not custom else f"ops {', '.join(custom)}"
        return True, f"ORT runs it (the file has {ops}; tract's fused GroupNorm+quantize is made at load)"
    except Exception as e:
        why = f"custom ops {', '.join(custom)}" if custom else str(e).splitlines()[0][:200]
        return False, f"ORT cannot run it: {why}"


# --- tract, through bit-tool ---

def tract_round(bit_tool, models, size, threads, runs):
    """`bit-tool bench` on the models (one process each, in order): [(load, median, p90)]."""
    cmd = [bit_tool, "bench", *sum((["--model", m] for m in models), []), "--sizes", str(size),
           "--threads", str(threads), "--runs", str(runs)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{bit_tool}: bench failed (exit {r.returncode}):\n{r.stderr}")
    rows = {}  # | model | input | threads | load ms | median ms | min ms | p90 ms | peak RSS MB | RSS MB |
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].isdigit():
            rows[int(cells[0]) - 1] = (float(cells[3]), float(cells[4]), float(cells[6]))
    if len(rows) != len(models):
        sys.exit(f"{bit_tool}: unexpected bench output:\n{r.stdout}")
    return [rows[i] for i in range(len(models))]


def main():
    a = parse_args()
    bit_tool = os.path.join(TARGET, "release", "bit-tool")
    if not os.path.exists(bit_tool):
        sys.exit(f"{bit_tool}: not built; run: cargo build --release -p bit-tools")
    for path, what in [(a.float_model, "float model"), (a.int8, "int8 model"), (a.calib, "calibration directory")]:
        if not os.path.exists(path):
            sys.exit(f"{path}: no such {what} (run scripts/demo.sh, or pass --float/--int8/--calib)")
    ensure_venv(a.out)
    import numpy as np

    host_versions(bit_tool)
    model, meta = read_meta(a.float_model)
    if "bit.preprocess" not in meta:
        sys.exit(f"{a.float_model}: no bit.preprocess in metadata_props (not made by bit-tool import?)")
    pre = json.loads(meta["bit.preprocess"])
    size = pre["input_size"]
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    free = {d: v for d, v in zip(dims, (1, 3, size, size)) if isinstance(d, str) and d}
    del model
    calib = sorted(os.path.join(a.calib, f) for f in os.listdir(a.calib) if f.lower().endswith(IMAGE_EXT))
    if not calib:
        sys.exit(f"{a.calib}: no calibration images ({', '.join(IMAGE_EXT)})")
    print(f"float: {a.float_model}, input {dims}; contract: {pre['resize']['mode']} {pre['resample']} "
          f"{pre['channel_order']} mean {pre['mean']} std {pre['std']} at {size} px; "
          f"calibration: {len(calib)} images in {a.calib}")
    cache = []  # the calibration tensors, made once if a variant is not cached yet
    calib_inputs = lambda: cache or cache.extend(preprocess(p, pre, size) for p in calib) or cache
    ort_models = {"ORT f32": a.float_model, "ORT project-int8": a.int8}
    for name, ops in ORT_INT8.items():
        ort_models[name] = ort_quantize(a.float_model, calib, calib_inputs, ops, a.out)
    print(f"ORT int8 settings: {ORT_SETTINGS}")
    # bit-tool's benchmark input, so that every engine sees the same tensor.
    x = ((np.arange(3 * size * size) * 7919 % 255).astype(np.float32) / 127.5 - 1.0).reshape(1, 3, size, size)
    can_run, why = ort_check_project_int8(a.int8, free, x)
    print(f"project int8 in ORT: {why}")

    configs = ["tract f32", "tract int8", "ORT f32", *ORT_INT8] + (["ORT project-int8"] if can_run else [])
    res = {(c, t): [] for c in configs for t in a.threads}  # per round: (load, median, p90)
    for r in range(a.rounds):
        for t in a.threads:
            f32, i8 = tract_round(bit_tool, [a.float_model, a.int8], size, t, a.runs)
            res["tract f32", t].append(f32)
            res["tract int8", t].append(i8)
            for c in configs[2:]:
                res[c, t].append(ort_one(ort_models[c], t, a.runs, x, free))
            line = ", ".join(f"{c} {res[c, t][-1][1]:.1f}" for c in configs)
            print(f"round {r + 1}/{a.rounds}, {t} thread(s), median ms: {line}", flush=True)

    med = lambda c, t, i: statistics.median(v[i] for v in res[c, t])
    print(f"\n## Latency at {size} px, batch 1: median over {a.rounds} round(s) of each round's median "
          f"and p90 of {a.runs} runs after 1 warm-up (ms)\n")
    print("| engine | threads | load ms | median ms | p90 ms | round medians min-max |\n|---|---|---|---|---|---|")
    for t in a.threads:
        for c in configs:
            ms = [v[1] for v in res[c, t]]
            print(f"| {c} | {t} | {med(c, t, 0):.0f} | {med(c, t, 1):.1f} | {med(c, t, 2):.1f} | "
                  f"{min(ms):.1f}-{max(ms):.1f} |")

    # Each ratio pairs the medians of one round (same drift), then takes the median over rounds.
    ratios = [("tract int8 / ORT int8 conv (goal: <= 1.00 at 1 thread)", "tract int8", "ORT int8 conv"),
              ("tract int8 / ORT int8 all-ops", "tract int8", "ORT int8 all-ops"),
              ("tract f32 / ORT f32", "tract f32", "ORT f32"),
              ("tract int8 speed-up over tract f32", "tract f32", "tract int8"),
              ("ORT int8 conv speed-up over ORT f32", "ORT f32", "ORT int8 conv"),
              ("ORT int8 all-ops speed-up over ORT f32", "ORT f32", "ORT int8 all-ops")]
    if can_run:
        ratios.append(("tract int8 / ORT on the same int8 file", "tract int8", "ORT project-int8"))
    print("\n## Ratios (median over rounds of the per-round ratio of medians)\n")
    print("| ratio | " + " | ".join(f"{t} thread(s)" for t in a.threads) + " |")
    print("|---|" + "---|" * len(a.threads))
    for name, num, den in ratios:
        vals = [statistics.median(n[1] / d[1] for n, d in zip(res[num, t], res[den, t])) for t in a.threads]
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    if not can_run:
        print(f"\n(no ORT row for the project's int8 model: {why})")

    print(f"\n## tract profile of the project's int8 model, 1 thread ({a.runs} profiled runs)\n", flush=True)
    r = subprocess.run([bit_tool, "profile", a.int8, "--threads", "1", "--runs", str(a.runs), "--top", "15"])
    if r.returncode != 0:
        sys.exit(f"{bit_tool}: profile of {a.int8} failed (exit {r.returncode})")


if __name__ == "__main__":
    main()
