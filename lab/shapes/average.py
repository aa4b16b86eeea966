"""Average two checkpoints of one model weight by weight: (1 - w) * A + w * B (a "model soup", Wortsman et al. 2022).

python -m lab.shapes.average A B --weight 0.7 --out DIR [--overwrite]

A and B are save_pretrained pipeline folders of the same architecture, B usually a fine-tuned A. Every
*.safetensors file of A is mixed with B's file of the same path; everything else (configs, tokenizer,
scheduler) is A's. The two must have the same settings: a JSON file of A (model_index.json, each component's
config) that differs from B's in anything but the bookkeeping keys ("_name_or_path", "_diffusers_version", ...)
is refused, as is a weight file whose tensors differ in name, shape or dtype. DIR is written whole or not at
all, and an existing DIR only with --overwrite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _config(path: Path) -> dict:
    if not path.exists():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def mix(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float, what: str) -> dict[str, torch.Tensor]:
    """(1 - weight) * a + weight * b per tensor, computed in float64 and stored in a's dtype; integer tensors
    (buffers such as position ids) must be equal and are kept."""
    if a.keys() != b.keys():
        diff = sorted(a.keys() ^ b.keys())
        raise ValueError(f"{what}: the checkpoints hold different tensors ({', '.join(diff[:3])}, ...)")
    out = {}
    for k, x in a.items():
        y = b[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            raise ValueError(f"{what}: {k} is {tuple(x.shape)} {x.dtype} in A but {tuple(y.shape)} {y.dtype} in B")
        if x.is_floating_point():
            out[k] = ((1 - weight) * x.double() + weight * y.double()).to(x.dtype)
        elif torch.equal(x, y):
            out[k] = x.clone()
        else:
            raise ValueError(f"{what}: {k} is not a float tensor and differs between the checkpoints")
    return out


def average(a: Path, b: Path, weight: float, out: Path, overwrite: bool = False) -> list[str]:
    """Write the weighted average of pipeline folders a and b into out; returns the files mixed."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--weight must be in [0, 1], got {weight}")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    if not files:
        raise ValueError(f"{a}: no *.safetensors files")
    for rel in files:
        if not (b / rel).exists():
            raise ValueError(f"{b}: has no {rel}, which {a} has")
    for cfg in sorted(p.relative_to(a) for p in a.rglob("*.json")):
        if _config(a / cfg) != _config(b / cfg):
            raise ValueError(f"{cfg}: differs between {a} and {b} (not the same architecture or settings)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(a, tmp)
    try:
        for rel in files:
            mixed = mix(load_file(a / rel), load_file(b / rel), weight, str(rel))
            save_file(mixed, tmp / rel, metadata={"format": "pt"})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return [str(rel) for rel in files]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="first checkpoint folder (its configs and tokenizer are kept)")
    ap.add_argument("b", type=Path, help="second checkpoint folder, same architecture")
    ap.add_argument("--weight", type=float, required=True, help="share of B, in [0, 1]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)
    try:
        mixed = average(args.a, args.b, args.weight, args.out, args.overwrite)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out} ({len(mixed)} weight files mixed, weight {args.weight} of {args.b})", file=sys.stderr)


if __name__ == "__main__":
    main()
