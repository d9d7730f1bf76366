#!/usr/bin/env python3
"""Golden resampling outputs from Pillow itself, for runtime/tests/pillow.rs.

Writes runtime/tests/data/pillow/: one PNG per case (the 8-bit RGB image Pillow produces)
and cases.json describing each (source, filter, resize mode, sizes). Run it again only to
change the cases; the test reads the committed files and needs no Python.

    scripts/pillow-golden.py            # installs its pinned packages in target/pillow-venv

Sources: the sample photos, and synthetic 640x480 and 160x120 frames that alias (1-pixel stripes in
red, a 2x2 checkerboard in green, an integer zone plate in blue) built by the same integer
formula as the test's `synthetic()`.

Resize modes:
- squash: `Image.resize((size, size), filter)`.
- crop: BitImageProcessor's chain: shortest edge to `shortest` (the long side to
  `int(shortest * long / short)`), `Image.resize`, then the centre `size` x `size` crop at
  `((W' - size) // 2, (H' - size) // 2)`. With transformers installed the script also runs
  `BitImageProcessor(Pil)` on each crop case and checks that its tensor is exactly
  `(crop / 255 - mean) / std` in float32 (so the crop bytes stand for the whole chain).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runtime" / "tests" / "data" / "pillow"
VENV = ROOT / "target" / "pillow-venv"
PINS = ["pillow==13.0.0", "numpy==2.4.6", "transformers==5.25.0"]

# PNG photos only: a JPEG's pixels depend on the decoder (libjpeg here, zune-jpeg in the
# runtime), which is measured apart from resampling. Sizes 451x300 to 600x400; an RGBA and a
# grey one.
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "horse.png", "brick.png"]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def ensure_venv(script=__file__):
    """Re-runs `script` (this one unless a sibling passes its own) inside a venv holding the
    pinned packages."""
    if os.environ.get("PILLOW_GOLDEN_IN_VENV"):
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    env = dict(os.environ, PILLOW_GOLDEN_IN_VENV="1")
    sys.exit(subprocess.run([str(python), script, *sys.argv[1:]], env=env).returncode)


def synthetic(w, h):
    import numpy as np

    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x % 2) * 255
    g = (((x // 2) + (y // 2)) % 2) * 255
    r2 = (x - w // 2) ** 2 + (y - h // 2) ** 2
    v = (r2 * 8 // 25) % 512
    b = np.where(v < 256, v, 511 - v)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def main():
    ensure_venv()
    import numpy as np
    from PIL import Image

    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    sources = {
        f"synthetic-{w}x{h}": Image.fromarray(synthetic(w, h), "RGB") for w, h in [(640, 480), (160, 120)]
    }
    for name in PHOTOS:
        # transformers converts to RGB first (grey and RGBA photos included).
        sources[name] = Image.open(ROOT / "samples" / "images" / name).convert("RGB")

    cases = []

    def add(source, filt, mode, size, shortest=None):
        cases.append(dict(source=source, filter=filt, mode=mode, size=size, shortest=shortest))

    for filt in filters:
        # Downscales of 2.9x/2.1x and 6.7x/5x, the two BitImageProcessor geometries, 1.25x
        # down one way with an upscale the other, and an upscale both ways.
        for size in [224, 96]:
            add("synthetic-640x480", filt, "squash", size)
        for size in [128, 192]:
            add("synthetic-160x120", filt, "squash", size)
        add("synthetic-640x480", filt, "crop", 224, 256)
        add("synthetic-640x480", filt, "crop", 128, 160)
        for name in PHOTOS:
            add(name, filt, "squash", 64)
            add(name, filt, "crop", 128, 160)

    OUT.mkdir(parents=True, exist_ok=True)
    try:
        from transformers import BitImageProcessorPil
    except ImportError:
        BitImageProcessorPil = None
    checked = 0
    for case in cases:
        im = sources[case["source"]]
        filt = filters[case["filter"]]
        size = case["size"]
        if case["mode"] == "squash":
            out = im.resize((size, size), filt)
        else:
            w, h = im.size
            s = case["shortest"]
            nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
            resized = im.resize((nw, nh), filt)
            top, left = (nh - size) // 2, (nw - size) // 2
            out = resized.crop((left, top, left + size, top + size))
            if BitImageProcessorPil is not None:
                p = BitImageProcessorPil(
                    size={"shortest_edge": s},
                    crop_size={"height": size, "width": size},
                    resample=int(filt),
                    image_mean=CLIP_MEAN,
                    image_std=CLIP_STD,
                )
                got = p(im, return_tensors="np")["pixel_values"][0]
                mean = np.array(CLIP_MEAN, np.float32)
                std = np.array(CLIP_STD, np.float32)
                want = ((np.asarray(out).astype(np.float64) / 255).astype(np.float32) - mean) / std
                diff = np.abs(want.transpose(2, 0, 1) - got).max()
                assert diff == 0.0, f"{case}: BitImageProcessor differs from the crop by {diff}"
                checked += 1
        stem = Path(case["source"]).stem
        extra = f"-{case['shortest']}" if case["shortest"] else ""
        file = f"{stem}-{case['filter']}-{case['mode']}{extra}-{size}.png"
        out.save(OUT / file, optimize=True)
        case["file"] = file
    import PIL

    meta = {
        "generator": "scripts/pillow-golden.py",
        "pillow": PIL.__version__,
        "bit_image_processor_checked": checked,
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{len(cases)} cases, {checked} checked against BitImageProcessor, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
