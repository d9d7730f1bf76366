#!/usr/bin/env python3
"""Pillow's (libjpeg-turbo's) JPEG decode as golden data, for runtime/tests/jpeg.rs.

Writes runtime/tests/data/jpeg/: small synthetic JPEGs written by Pillow (the encodings a
camera or a file can use: 4:4:4, 4:2:2, 4:2:0, quality 75 and 95, grey, progressive, restart
markers, a size that is no multiple of the MCU), Pillow's decode of each as a PNG, and
cases.json describing them. For the sample photos (samples/images/*.jpg, which stay where
they are) it stores a few fixed tiles of Pillow's decode as PNGs and, for the whole image,
the per-channel sums and histograms. Run it again only to change the cases; the test reads
the committed files and needs no Python.

    scripts/jpeg-golden.py      # reuses scripts/pillow-golden.py's venv in target/pillow-venv

Pillow decodes with libjpeg-turbo's defaults: the accurate integer IDCT (JDCT_ISLOW) and
"fancy" (triangle) chroma upsampling. cases.json records the Pillow and libjpeg-turbo
versions.

The synthetic source is 120x90 (no multiple of 16, so every subsampling has partial MCUs at
the right and bottom edges, except the one case cut to 113x87): a resized crop of
samples/images/chelsea.png (CC0) above a band of saturated colour bars 13 pixels wide,
whose edges fall inside chroma blocks; that is where the chroma upsampling shows.
"""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runtime" / "tests" / "data" / "jpeg"

# The sibling is loaded by path (its name has a hyphen); no __pycache__ in scripts/.
sys.dont_write_bytecode = True
_spec = importlib.util.spec_from_file_location("pillow_golden", ROOT / "scripts" / "pillow-golden.py")
pillow_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pillow_golden)

# (name, Pillow save options) for the synthetic JPEGs. `subsampling`: 0 = 4:4:4, 1 = 4:2:2,
# 2 = 4:2:0. Restart markers every 4 MCUs, so a frame has several restart intervals.
SYNTHETIC = [
    ("s444-q75", dict(subsampling=0, quality=75)),
    ("s444-q95", dict(subsampling=0, quality=95)),
    ("s422-q75", dict(subsampling=1, quality=75)),
    ("s422-q95", dict(subsampling=1, quality=95)),
    ("s420-q75", dict(subsampling=2, quality=75)),
    ("s420-q95", dict(subsampling=2, quality=95)),
    ("grey-q75", dict(quality=75)),
    ("s420-q85-progressive", dict(subsampling=2, quality=85, progressive=True)),
    ("s422-q85-restart", dict(subsampling=1, quality=85, restart_marker_blocks=4)),
    ("s420-q85-odd-113x87", dict(subsampling=2, quality=85)),
]

# The sample photos: tiles (x, y, side) of Pillow's decode, chosen for detail (stars and
# galaxies on black; the rocket's edge against the sky, the plume).
PHOTOS = {
    "hubble_deep_field.jpg": [(0, 0, 64), (468, 404, 64), (936, 808, 64)],
    "rocket.jpg": [(0, 0, 64), (288, 180, 64), (576, 363, 64)],
}

SIZE = (120, 90)


def source():
    """The synthetic 120x90 RGB image (see the module docs)."""
    import numpy as np
    from PIL import Image

    w, h = SIZE
    cat = Image.open(ROOT / "samples" / "images" / "chelsea.png").convert("RGB")
    photo = cat.crop((60, 20, 380, 180)).resize((w, 60), Image.BICUBIC)
    bars = np.zeros((h - 60, w, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
               (255, 255, 255), (0, 0, 0), (200, 40, 90), (30, 120, 200)]
    for x in range(w):
        bars[:, x] = colours[(x // 13) % len(colours)]
    # The lower half of the band fades to grey, so chroma edges come at several contrasts.
    fade = np.linspace(1.0, 0.3, h - 60)[:, None, None]
    bars = (bars * fade + 128 * (1 - fade)).round().astype(np.uint8)
    out = np.concatenate([np.asarray(photo), bars], axis=0)
    return Image.fromarray(out, "RGB")


def main():
    pillow_golden.ensure_venv(__file__)
    import numpy as np
    import PIL
    from PIL import Image, JpegImagePlugin, features

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    src = source()
    cases = []
    for name, options in SYNTHETIC:
        im = src.convert("L") if name.startswith("grey") else src
        if "odd" in name:
            im = im.crop((0, 0, 113, 87))
        jpeg = f"{name}.jpg"
        im.save(OUT / jpeg, "JPEG", **options)
        decoded = Image.open(OUT / jpeg)
        sampling = JpegImagePlugin.get_sampling(decoded)
        png = f"{name}.pillow.png"
        # Grey stays grey (smaller); the test expands it to RGB as the runtime does.
        decoded.save(OUT / png, optimize=True)
        cases.append(dict(
            jpeg=f"runtime/tests/data/jpeg/{jpeg}",
            width=decoded.width,
            height=decoded.height,
            mode=decoded.mode,
            subsampling={-1: "grey", 0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}[sampling],
            options=options,
            tiles=[dict(x=0, y=0, width=decoded.width, height=decoded.height, png=png)],
        ))
    for name, tiles in PHOTOS.items():
        path = ROOT / "samples" / "images" / name
        decoded = Image.open(path)
        sampling = JpegImagePlugin.get_sampling(decoded)
        rgb = decoded.convert("RGB")
        a = np.asarray(rgb)
        case = dict(
            jpeg=f"samples/images/{name}",
            width=rgb.width,
            height=rgb.height,
            mode=decoded.mode,
            subsampling={-1: "grey", 0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(sampling, str(sampling)),
            sums=[int(a[..., c].sum(dtype=np.int64)) for c in range(3)],
            histograms=[np.bincount(a[..., c].ravel(), minlength=256).tolist() for c in range(3)],
            tiles=[],
        )
        for x, y, side in tiles:
            png = f"{Path(name).stem}-{x}-{y}-{side}.pillow.png"
            rgb.crop((x, y, x + side, y + side)).save(OUT / png, optimize=True)
            case["tiles"].append(dict(x=x, y=y, width=side, height=side, png=png))
        cases.append(case)
    meta = {
        "generator": "scripts/jpeg-golden.py",
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{len(cases)} cases, Pillow {PIL.__version__}, libjpeg-turbo {meta['libjpeg_turbo']}: "
          f"{total} bytes in {OUT}")


if __name__ == "__main__":
    main()
