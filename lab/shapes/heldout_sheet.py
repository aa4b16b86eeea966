"""The first N held-out colour swaps on captions without places, none left out: source, P2P and the uncontrolled
target from the same noise, each edit titled with the pixel oracle's verdict (README's second picture).

python -m lab.shapes.heldout_sheet --model shapes-mmdit --n 8 --out docs/images/shapes-mmdit-heldout.png
"""

from __future__ import annotations

import argparse

import torch

from p2p_cli.render.grid import Tile, make_grid

from .captions import caption
from .evaluate import _free_outcome, edit_recipe, free_swap_cases, run_edit, to_uint8


def verdict(colour_right: bool, kept: bool) -> str:
    return f"colour {'ok' if colour_right else 'wrong'} · place {'kept' if kept else 'moved'}"


def sheet_tiles(model, n: int, steps: int, guidance: float) -> tuple[list[Tile], dict]:
    """Tiles of the first n cases the evaluator's reported `free` set draws (cases 0..n-1, noise seeds 0..n-1),
    and the counts of the oracle's verdicts."""
    tiles, counts = [], {"p2p": [0, 0], "no control": [0, 0]}
    for i, case in enumerate(free_swap_cases(n)):
        out = run_edit(model, edit_recipe(caption(case.scene), caption(case.target), case.seed, steps, guidance))
        imgs = to_uint8(out.images)  # source, edit-1, baseline-1
        new = case.target.objects[case.k]
        tiles.append(Tile(out.images[0], f"case {i + 1} · source", caption(case.scene), col=i))
        for row, (name, img) in enumerate((("p2p", imgs[1]), ("no control", imgs[2])), start=1):
            right, kept, _ = _free_outcome(imgs[0], img, case.scene, case.k, new)
            counts[name][0] += right and kept
            counts[name][1] += right
            tiles.append(Tile(out.images[row], f"{'P2P' if name == 'p2p' else 'no control'} · {verdict(right, kept)}",
                              caption(case.target), col=i, row=row))
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
        print(f"{name}: colour right and place kept {both}/{args.n}, colour right {right}/{args.n}")


if __name__ == "__main__":
    main()
