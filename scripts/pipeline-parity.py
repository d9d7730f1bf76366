#!/usr/bin/env python3
"""Logits of the runtime's whole pipeline against a Pillow reference pipeline (issue 17).

    cargo build --release -p bit-tools
    scripts/pipeline-parity.py [--npz ../shared/models/bit_shapes_d1111.npz]

Imports the trained development checkpoint twice with a transformers BitImageProcessor
contract written as a `preprocessor_config.json` (shortest edge 160, centre crop 128,
bicubic, CLIP mean/std), once `--antialias off` (the fixed-footprint resize the runtime had
before) and once `--antialias on`, and twice more as a camera would use it (squash to 128,
bilinear, same mean/std). For every sample photo it builds the reference tensor with Pillow
and numpy as BitImageProcessor does (RGB, `Image.resize`, centre crop at `(W' - C) // 2`,
`/ 255`, normalize; checked equal to `BitImageProcessorPil`'s own tensor), runs the imported
ONNX on it with ONNX Runtime (graph optimizations off: see `main`), and compares those logits with `bit-tool classify --json` on the
photo file. "engine" feeds the runtime a file whose pipeline is the identity (the reference's
resized image, cut so that the runtime's resize is 1:1 and its crop lands on the reference
crop): what is left is ONNX Runtime against tract on one tensor. The JPEGs come again as PNGs
of Pillow's decoding, without the decoders' difference.

Needs only the built `bit-tool`; installs its pinned Python packages in target/parity-venv.
"""

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ["pillow==13.0.0", "numpy==2.4.6", "onnxruntime==1.31.1", "transformers==5.25.0"]


def golden():
    """scripts/pillow-golden.py as a module: its venv helper, CLIP constants, synthetic frame."""
    spec = importlib.util.spec_from_file_location("pillow_golden", Path(__file__).with_name("pillow-golden.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.VENV = ROOT / "target" / "parity-venv"
    module.PINS = PINS
    return module


G = golden()

# BitImageProcessor's fields as a fine-tune's preprocessor_config.json has them.
CROP = {
    "do_resize": True,
    "size": {"shortest_edge": 160},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 128, "width": 128},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": G.CLIP_MEAN,
    "image_std": G.CLIP_STD,
}
SQUASH = dict(CROP, size={"height": 128, "width": 128}, resample=2, do_center_crop=False)


def reference(im, config):
    """BitImageProcessor's chain with Pillow and numpy: the 8-bit image the network sees
    (before normalization) and the NCHW float32 tensor."""
    import numpy as np

    if config["do_center_crop"]:
        s, c = config["size"]["shortest_edge"], config["crop_size"]["height"]
        w, h = im.size
        # transformers' get_resize_output_image_size: the long side is int(s * long / short).
        size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        resized = im.resize(size, config["resample"])
        # transformers' center_crop: top = (H' - C) // 2, left = (W' - C) // 2.
        top, left = (size[1] - c) // 2, (size[0] - c) // 2
        crop = resized.crop((left, top, left + c, top + c))
    else:
        resized = crop = im.resize((config["size"]["width"], config["size"]["height"]), config["resample"])
        top = left = 0
    mean = np.array(config["image_mean"], np.float32)
    std = np.array(config["image_std"], np.float32)
    x = ((np.asarray(crop).astype(np.float64) / 255).astype(np.float32) - mean) / std
    return resized, (left, top), x.transpose(2, 0, 1)[None]


def check_against_transformers(im, config, tensor):
    import numpy as np
    from transformers import BitImageProcessorPil

    got = BitImageProcessorPil(**config)(im, return_tensors="np")["pixel_values"]
    diff = np.abs(got - tensor).max()
    assert diff == 0.0, f"BitImageProcessorPil differs from the Pillow + numpy chain by {diff}"


def bit_tool(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True, text=True).stdout


def runtime_logits(exe, model, files, classes):
    """`bit-tool classify --json -k classes`: {file: logits in class order}."""
    import numpy as np

    out = {}
    for line in bit_tool(exe, "classify", "--json", "-k", classes, "--model", model, *files).splitlines():
        r = json.loads(line)
        logits = np.zeros(classes, np.float32)
        for t in r["top"]:
            logits[t["class"]] = t["logit"]
        out[r["image"]] = logits
    return out


def main():
    G.ensure_venv(__file__)
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--npz", type=Path, default=ROOT.parent / "shared" / "models" / "bit_shapes_d1111.npz")
    ap.add_argument("--bit-tool", type=Path, default=ROOT / "target" / "release" / "bit-tool")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "pipeline-parity")
    args = ap.parse_args()
    if not args.bit_tool.exists():
        sys.exit(f"{args.bit_tool}: not found; run `cargo build --release -p bit-tools` first")
    out = args.out
    for sub in ["frames", "engine"]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    labels = args.npz.parent / "shapes" / "labels.txt"
    classes = len(labels.read_text().split())

    models = {}
    for name, config in [("crop", CROP), ("squash", SQUASH)]:
        path = out / f"preprocessor_config-{name}.json"
        path.write_text(json.dumps(config, indent=1) + "\n")
        for aa in ["off", "on"]:
            model = out / f"{name}-aa-{aa}.onnx"
            bit_tool(args.bit_tool, "import", args.npz, "--out", model, "--labels", labels,
                     "--contract", path, "--antialias", aa)
            models[name, aa] = model
            resampling = [line for line in bit_tool(args.bit_tool, "info", model).splitlines() if "resampling" in line]
            print(f"{model.name}: {resampling[0].strip() if resampling else '?'}")
    # The contract lives in metadata only: every model has the same graph and weights. ORT's
    # basic graph optimizations fold BiT's root zero Pad into the MaxPool, whose padding acts
    # as -inf (the fused result differs wherever a border window is all negative; ORT pull
    # request 18136 added that fusion), so the reference runs the graph as written and the
    # fused session is only reported.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(models["crop", "on"]), options, providers=["CPUExecutionProvider"])
    fused = ort.InferenceSession(str(models["crop", "on"]), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    fused_diff = 0.0

    seen, photos = set(), []
    for folder in [ROOT / "samples" / "images", ROOT.parent / "shared" / "images"]:
        for p in sorted(folder.glob("*")):
            if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                continue
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                photos.append(p)
    # The JPEGs again as PNGs of Pillow's decoding: what is left without the decoders' difference.
    for p in [p for p in photos if p.suffix.lower() != ".png"]:
        decoded = out / "frames" / f"{p.stem}-pillow-decoded.png"
        Image.open(p).convert("RGB").save(decoded)
        photos.append(decoded)
    # Camera-like 640x480 frames, as PNG so both sides read the same pixels: a crop of the
    # largest photo (no resampling) and pillow-golden's aliasing pattern.
    frames = [out / "frames" / "hubble-640x480.png", out / "frames" / "synthetic-640x480.png"]
    Image.open(ROOT / "samples" / "images" / "hubble_deep_field.jpg").convert("RGB").crop((0, 0, 640, 480)).save(frames[0])
    Image.fromarray(G.synthetic(640, 480), "RGB").save(frames[1])

    cases = [(p, "crop", CROP) for p in photos] + [(f, "squash", SQUASH) for f in frames]
    refs, engine_files = {}, {}
    for path, kind, config in cases:
        im = Image.open(path).convert("RGB")
        resized, (left, top), tensor = reference(im, config)
        check_against_transformers(im, config, tensor)
        refs[path] = session.run(None, {input_name: tensor})[0][0]
        d = np.abs(fused.run(None, {input_name: tensor})[0][0] - refs[path]).max()
        fused_diff = max(fused_diff, d / (refs[path].max() - refs[path].min()))
        # A file the runtime's pipeline passes through unchanged: for the crop contract the
        # 160x160 square around the reference crop (shortest edge 160 is 1:1, its centre
        # crop starts at 16), for the squash the 128x128 resized image.
        c = config["crop_size"]["height"] if kind == "crop" else config["size"]["height"]
        m = (config["size"]["shortest_edge"] - c) // 2 if kind == "crop" else 0
        square = resized.crop((left - m, top - m, left + c + m, top + c + m))
        engine_files[path] = out / "engine" / f"{path.stem}-{kind}.png"
        square.save(engine_files[path])

    got = {}
    for kind in ["crop", "squash"]:
        files = [str(p) for p, k, _ in cases if k == kind]
        for aa in ["off", "on"]:
            got[kind, aa] = runtime_logits(args.bit_tool, models[kind, aa], files, classes)
        got[kind, "engine"] = runtime_logits(
            args.bit_tool, models[kind, "on"], [str(engine_files[p]) for p, k, _ in cases if k == kind], classes
        )

    print()
    print("| image | contract | max \\|logit diff\\| before | after | engine only | top-1 agrees before / after |")
    print("|---|---|---|---|---|---|")
    for path, kind, _ in cases:
        ref = refs[path]
        span = ref.max() - ref.min()
        cells, agree = [], []
        for aa, f in [("off", str(path)), ("on", str(path)), ("engine", str(engine_files[path]))]:
            logits = got[kind, aa][f]
            d = np.abs(logits - ref).max()
            pct = 100 * d / span
            cells.append(f"{d:.2g} ({pct:.2g}%)" if pct >= 0.001 else f"{d:.2g} (<0.001%)")
            if aa != "engine":
                agree.append("yes" if logits.argmax() == ref.argmax() else "**no**")
        what = "shortest 160, crop 128, bicubic" if kind == "crop" else "squash 128, bilinear"
        print(f"| {path.name} | {what} | {' | '.join(cells)} | {' / '.join(agree)} |")
    print("\n% = of that image's reference logit range (max - min).")
    print(f"ONNX Runtime {ort.__version__} with its default optimizations differs from the graph as written "
          f"by up to {100 * fused_diff:.2g}% of the range.")


if __name__ == "__main__":
    main()
