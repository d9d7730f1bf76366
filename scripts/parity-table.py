#!/usr/bin/env python3
"""The cross-architecture parity table from the files tests/tests/parity.rs writes.

    scripts/parity-table.py target/parity

Each `<label>.json` other than the reference (`x86_64.json`) is compared with it: whether
the top-5 of every sample photo is the same, and the largest logit difference, for the
float and the int8 model.
"""

import json
import os
import sys

KERNELS = {
    "x86_64": "AVX2/AVX-512 (reference)",
    "aarch64-cortex-a72": "NEON, SMLAL int8 (Pi 4)",
    "aarch64-cortex-a76": "NEON, SDOT int8 (Pi 5)",
    "armv7-cortex-a7": "armv7 NEON (32-bit Pi OS)",
}


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "target/parity"
    ref_path = os.path.join(d, "x86_64.json")
    with open(ref_path) as f:
        ref = json.load(f)
    print(f"{'target / CPU':22} {'kernels':28} {'float top-5':>11} {'float max diff':>14} {'int8 top-5':>10} {'int8 max diff':>13}")
    for name in sorted(os.listdir(d)):
        if not name.endswith(".json") or name == "x86_64.json":
            continue
        label = name[:-5]
        with open(os.path.join(d, name)) as f:
            ours = json.load(f)
        row = [f"{label:22}", f"{KERNELS.get(label, '?'):28}"]
        for kind in ("float", "int8"):
            same = all(ours[kind][img]["top5"] == ref[kind][img]["top5"] for img in ref[kind])
            diff = max(
                max(abs(a - b) for a, b in zip(ours[kind][img]["logits"], ref[kind][img]["logits"]))
                for img in ref[kind]
            )
            row.append(f"{'same' if same else 'DIFFERENT':>11}" if kind == "float" else f"{'same' if same else 'DIFFERENT':>10}")
            row.append(f"{diff:14.3e}" if kind == "float" else f"{diff:13.3e}")
        print(" ".join(row))


if __name__ == "__main__":
    main()
