"""The first N held-out colour swaps on captions without places, none left out: source, P2P and the uncontrolled
target from the same noise, each edit titled with the pixel oracle's verdict (README's second picture).

python -m lab.shapes.heldout_sheet --model shapes-mmdit --n 8 --out docs/images/shapes-mmdit-heldout.png
"""

from __future__ import annotations

import argparse

import torch

from p2p_cli.render.grid import Tile, make_grid

from .captions import caption
from .evaluate import free_runs


LABELS = {"p2p": "P2P", "baseline": "no control"}


def verdict(colour_right: bool, kept: bool) -> str:
    return f"colour {'ok' if colour_right else 'wrong'} · place {'kept' if kept else 'moved'}"


def sheet_tiles(model, n: int, steps: int, guidance: float) -> tuple[list[Tile], dict]:
    """Tiles of the first n cases of the evaluator's reported `free` set (evaluate.free_runs, fresh 0), and the
    counts of the oracle's verdicts."""
    tiles, counts = [], {"p2p": [0, 0], "baseline": [0, 0]}  # [right and in place, colour right]
    for i, (case, images, outcomes, _) in enumerate(free_runs(model, n, steps, guidance)):
        tiles.append(Tile(images[0], f"case {i + 1} · source", caption(case.scene), col=i))
        for row, key in enumerate(("p2p", "baseline"), start=1):
            right, kept, _ = outcomes[key]
            counts[key][0] += right and kept
            counts[key][1] += right
            tiles.append(Tile(images[row], f"{LABELS[key]} · {verdict(right, kept)}", caption(case.target),
                              col=i, row=row))
    return tiles, counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-mmdit")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)  # the evaluator's
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from p2p_cli.models import load_model

    torch.set_grad_enabled(False)
    model = load_model(args.model, device="cpu", dtype="fp32")
    tiles, counts = sheet_tiles(model, args.n, args.steps, args.guidance)
    make_grid(tiles).save(args.out, optimize=True)
    for name, (both, right) in counts.items():
        print(f"{LABELS[name]}: colour right and place kept {both}/{args.n}, colour right {right}/{args.n}")


if __name__ == "__main__":
    main()
