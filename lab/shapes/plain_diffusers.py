"""Plain generation of an SD3-layout shapes folder through diffusers' own StableDiffusion3Pipeline, read by the
oracle: does a checkpoint draw what its caption says, independently of this project's engine?

python -m lab.shapes.plain_diffusers DIR [--n 48] [--steps 30] [--guidance 7.5]

Three sets of held-out captions (their (shape, colour, place) never drawn in training): the grid world's (what
`evaluate --only plain` measures), the wide world's with places and without (then only colour, shape, size and
count can be right or wrong: the object may be anywhere). Image i of a set starts from noise seed i.
Then the uncontrolled baseline of `evaluate --only free`: the wide world's colour swaps on captions without
places, source and target drawn from the same noise; how often the object keeps its place (what Prompt-to-Prompt
has to beat by 20 points) and gets the new colour.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from .captions import caption
from .oracle import check, check_unplaced
from .world import heldout_scenes, wide_heldout_scenes


def load_pipeline(folder):
    """StableDiffusion3Pipeline from a folder without T5 (text_encoder_3 / tokenizer_3 None), fp32."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None,
                                                    torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe, captions: list[str], steps: int, guidance: float, batch: int = 16) -> np.ndarray:
    """(N, 64, 64, 3) uint8 pictures, picture i from torch seed i."""
    out = []
    for start in range(0, len(captions), batch):
        part = captions[start : start + batch]
        gens = [torch.Generator().manual_seed(start + i) for i in range(len(part))]
        images = pipe(part, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                      output_type="np").images  # (b, 64, 64, 3) floats in [0, 1]
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def score(pipe, n: int, steps: int, guidance: float) -> dict:
    """Mean oracle scores on each of the three caption sets."""
    sets = {"grid": (heldout_scenes(n, seed=1), check),
            "wide_places": (wide_heldout_scenes(n, seed=1, places=True), check),
            "wide_no_places": (wide_heldout_scenes(n, seed=1, places=False), check_unplaced)}
    results = {}
    for name, (scenes, judge) in sets.items():
        images = draw(pipe, [caption(s) for s in scenes], steps, guidance)
        rows = [judge(s, img) for s, img in zip(scenes, images)]
        results[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    from .evaluate import _free_outcome, _swap_summary, free_swap_cases

    cases = free_swap_cases(n, seed=4)  # evaluate's reported set (fresh 0)
    src = draw(pipe, [caption(c.scene) for c in cases], steps, guidance)
    tgt = draw(pipe, [caption(c.target) for c in cases], steps, guidance)
    rows = [_free_outcome(a, b, c.scene, c.k, c.target.objects[c.k]) for a, b, c in zip(src, tgt, cases)]
    results["free_swap_baseline"] = _swap_summary(rows)
    print("free_swap_baseline", json.dumps(results["free_swap_baseline"]), file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a folder written by lab.shapes.train_mmdit")
    ap.add_argument("--n", type=int, default=48, help="captions per set")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=7.5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(score(load_pipeline(args.model), args.n, args.steps, args.guidance), indent=2))


if __name__ == "__main__":
    main()
