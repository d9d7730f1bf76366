#!/usr/bin/env python3
"""A real PyTorch ONNX export of a transformers BiT, for `bit-tool import MODEL.onnx`.

Builds a small random-weight `BitForImageClassification` configured as the BiT checkpoints
are (`layer_type="preactivation"`, `global_padding="SAME"`, `embedding_dynamic_padding=True`:
the stem conv and the stem pool pad through `DynamicPad2d`, which `torch.onnx.export`
writes as a `ConstantOfShape -> Concat -> Reshape -> Slice(step -1) -> Transpose -> Reshape
-> Cast` chain in front of each `Pad`), exports it with the TorchScript exporter
(`dynamo=False`, opset 17, constant folding on, as `torch.onnx.export` does by default),
and writes beside the export a JSON file with the export's op counts, the input (a fixed
formula, see `input_values`) and the logits of torch and of ONNX Runtime on it.

    scripts/torch-export.py OUT.onnx [--size 64] [--tiny]
    scripts/torch-export.py --check IMPORTED.onnx OUT.json   # ONNX Runtime on `bit-tool import`'s output

`--tiny` makes the model small enough (170 KB) to be a test fixture:
tests/data/transformers-bit-tiny.{onnx,json} are `scripts/torch-export.py --tiny
tests/data/transformers-bit-tiny.onnx` output (torch 2.15.0, transformers 5.25.0), read by
`tests/tests/onnx_import.rs`. The script re-runs itself in target/torch-venv, created on
first use with torch, transformers, onnx and onnxruntime from PyPI (torch is large).
"""

import argparse
import importlib.util
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["torch", "transformers", "onnx", "onnxruntime"]


def ensure_venv():
    """Re-runs this script inside target/torch-venv: scripts/pillow-golden.py's helper, given
    this venv and these packages (as scripts/pipeline-parity.py does)."""
    spec = importlib.util.spec_from_file_location("pillow_golden", Path(__file__).with_name("pillow-golden.py"))
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    golden.VENV = ROOT / "target" / "torch-venv"
    golden.PINS = PACKAGES
    golden.ensure_venv(__file__)


def input_values(size):
    """The input, [1, 3, size, size]: element i is ((i * 7919) % 1000) / 500 - 1 in f32,
    a formula the Rust test computes the same way."""
    import numpy as np

    i = np.arange(3 * size * size, dtype=np.int64)
    return (((i * 7919) % 1000) / 500.0 - 1.0).astype(np.float32).reshape(1, 3, size, size)


def ort_logits(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0]


def main():
    ensure_venv()
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("json", type=Path, nargs="?")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    import numpy as np

    if args.check:
        expected = json.loads(args.json.read_text())
        x = input_values(expected["size"])
        got = ort_logits(args.out, x)
        d = float(np.abs(got - np.array(expected["torch_logits"], dtype=np.float32)).max())
        print(f"ONNX Runtime on {args.out}: max |logit - torch| = {d:.3e}")
        return

    import onnx
    import torch
    from transformers import BitConfig, BitForImageClassification

    torch.manual_seed(0)
    if args.tiny:
        sizes = dict(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_groups=4)
    else:
        sizes = dict(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 2, 1, 1], num_groups=8)
    config = BitConfig(
        layer_type="preactivation",
        global_padding="SAME",
        embedding_dynamic_padding=True,
        num_labels=5,
        id2label={i: f"class{i}" for i in range(5)},
        label2id={f"class{i}": i for i in range(5)},
        **sizes,
    )
    model = BitForImageClassification(config).eval()
    # Random affine GroupNorm parameters, so the export's scale and bias matter.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = input_values(args.size)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).logits.numpy()
    torch.onnx.export(
        model,
        (torch.from_numpy(x),),
        str(args.out),
        input_names=["pixel_values"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
    )
    graph = onnx.load(str(args.out)).graph
    ops = dict(sorted(Counter(n.op_type for n in graph.node).items()))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), ops: {ops}")
    for n in graph.node:
        if n.op_type == "Pad":
            print(f"  Pad {n.name}: pads from {n.input[1]}")
    ort = ort_logits(args.out, x)
    print(f"max |ONNX Runtime - torch| on the export: {float(np.abs(ort - torch_logits).max()):.3e}")
    out_json = args.json or args.out.with_suffix(".json")
    out_json.write_text(
        json.dumps(
            {
                "size": args.size,
                "ops": ops,
                "torch_logits": torch_logits[0].tolist(),
                "onnxruntime_logits": ort[0].tolist(),
                "torch": torch.__version__,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out_json}")


if __name__ == "__main__":
    main()
