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


def kernels(run):
    """The int8 model's integer matmul kernels, as tract chose them on that machine."""
    ints = sorted({k for k in run["int8"]["kernels"] if "i32" in k})
    return ", ".join(ints or run["int8"]["kernels"])


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "target/parity"
    ref_path = os.path.join(d, "x86_64.json")
    with open(ref_path) as f:
        ref = json.load(f)
    print(f"reference x86_64: int8 kernels {kernels(ref)}")
    print(f"{'target / CPU':22} {'float top-5':>11} {'float max diff':>14} {'int8 top-5':>10} {'int8 max diff':>13}  int8 kernels")
    for name in sorted(os.listdir(d)):
        if not name.endswith(".json") or name == "x86_64.json":
            continue
        label = name[:-5]
        with open(os.path.join(d, name)) as f:
            ours = json.load(f)
        row = [f"{label:22}"]
        for kind in ("float", "int8"):
            mine, theirs = ours[kind]["photos"], ref[kind]["photos"]
            same = all(mine[img]["top5"] == theirs[img]["top5"] for img in theirs)
            diff = max(max(abs(a - b) for a, b in zip(mine[img]["logits"], theirs[img]["logits"])) for img in theirs)
            row.append(f"{'same' if same else 'DIFFERENT':>11}" if kind == "float" else f"{'same' if same else 'DIFFERENT':>10}")
            row.append(f"{diff:14.3e}" if kind == "float" else f"{diff:13.3e}")
        row.append(" " + kernels(ours))
        print(" ".join(row))


if __name__ == "__main__":
    main()
