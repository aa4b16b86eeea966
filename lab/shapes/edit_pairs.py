"""Edit pairs the model draws itself: a training signal for keeping the layout when one word changes.

Five fine-tuning runs of the transformer shapes model (DEVELOPERS.md, issue 31) changed its length, schedule,
depth and scene mix and left its edit lines where they were: flow matching pairs every picture with fresh noise,
so nothing in it asks that two captions differing in one word draw the same layout from the same noise, which is
what an edit (controlled or not) relies on. This module builds that signal from the model's own drawings:

1. draw a source caption's picture from noise e with the model (Euler, classifier-free guidance, as sampling does);
2. read it back with the oracle and pair each object the caption names with a drawn one (redraw); drawings that
   cannot be paired (an object missing or merged, the wrong background, a named place missed, a held-out object)
   are dropped;
3. render that layout crisply (the caption's shapes and sizes at the drawn places), and the same layout with one
   object's colour or shape changed (edited).

Training then asks both captions to draw their rendering from the same e (flow matching on the pair (e, picture)
instead of fresh noise: rectified flow's "reflow" coupling, applied to the source and to its edit). The source
row reinforces the noise-to-layout map the model already has (and a crisp version of its own correct drawings);
the target row asks that a one-word change keep that map.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from p2p_cli.shapes.vocabulary import SHAPES

from .captions import caption
from .oracle import estimate_background, match_unplaced, nearest, read
from .world import BACKGROUNDS, COLOURS, SIDE, WIDE_RADII, Obj, Scene, _apart, cell, is_heldout, render, shape_mask

SHAPE_SWAPS = 0.25  # share of edits that change a shape rather than a colour


def _radius(o: Obj, bbox: tuple[int, int, int, int]) -> float:
    """The radius (half the bounding-box side world.shape_mask takes) of a drawn object's box, for o's shape,
    within its size's range."""
    half = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / 2
    if o.shape == "square":
        half /= 0.9  # shape_mask draws a square of half-side 0.9 r
    lo, hi = WIDE_RADII[o.size]
    return float(min(hi, max(lo, half)))


def redraw(scene: Scene, img: np.ndarray) -> Scene | None:
    """The scene as the model laid it out in img (64, 64, 3 uint8): each object the caption names at the place and
    size of the drawn object paired with it (oracle.match_unplaced: by colour), in the caption's shape and size
    range; None when the drawing cannot stand for the caption: a different object count, an object unpaired, the
    background wrong, a named place missed, objects overlapping, or a held-out (shape, colour, place)."""
    found = read(img)
    if len(found) != len(scene.objects):
        return None
    if nearest(estimate_background(img), BACKGROUNDS) != scene.background:
        return None
    objs = []
    for o, f in zip(scene.objects, match_unplaced(scene, found)):
        if f is None:
            return None
        r = _radius(o, f.bbox)
        cx = min(SIDE - r - 1, max(r + 1, (f.bbox[0] + f.bbox[2]) / 2))
        cy = min(SIDE - r - 1, max(r + 1, (f.bbox[1] + f.bbox[3]) / 2))
        ys, xs = np.nonzero(shape_mask(o.shape, cx, cy, r))
        place = cell(xs.mean() + 0.5, ys.mean() + 0.5)
        if scene.places and place != o.position:
            return None
        objs.append(replace(o, cx=float(cx), cy=float(cy), radius=r, position=place))
    if any(is_heldout(o) for o in objs) or not all(_apart(a, b) for i, a in enumerate(objs) for b in objs[i + 1:]):
        return None
    return replace(scene, objects=objs)


def edited(rng: np.random.Generator, scene: Scene) -> Scene | None:
    """The scene with one object's colour (or, SHAPE_SWAPS of the time, its shape) changed to one no other object
    has (so the edited object stays the only one of its colour where a colour changes); None when every choice
    would make a held-out object."""
    k = int(rng.integers(len(scene.objects)))
    o = scene.objects[k]
    if rng.random() < SHAPE_SWAPS:
        options = [replace(o, shape=s) for s in SHAPES if s != o.shape]
    else:
        taken = {p.colour for p in scene.objects}
        options = [replace(o, colour=c) for c in COLOURS if c not in taken]
    options = [p for p in options if not is_heldout(p)]
    if not options:
        return None
    new = options[int(rng.integers(len(options)))]
    return replace(scene, objects=[new if i == k else p for i, p in enumerate(scene.objects)])


def euler_sample(step_fn, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Flow matching's Euler sampler from sigma 1 to 0 in `steps` even steps; step_fn(x, sigma) is the (guided)
    velocity noise - x0."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    x = noise
    for i in range(steps):
        x = x + (sigmas[i + 1] - sigmas[i]) * step_fn(x, sigmas[i].item())
    return x


def pairs_from(rng: np.random.Generator, scenes: list[Scene], with_bg: list[bool], drawings: np.ndarray,
               noise: torch.Tensor):
    """Training rows from drawings (B, 64, 64, 3 uint8) of the scenes' captions (with_bg: whether each caption names
    the background) made from noise (B, 4, 16, 16): for each drawing that redraw() keeps and edited() can change, its
    source row then its edit's row. Returns the crisp renderings (2P, 3, 64, 64) in [-1, 1], their captions, scenes,
    background flags, the noise each row is paired with (2P, 4, 16, 16: a pair shares its drawing's), and P; with
    no pair, (None, [], [], [], None, 0)."""
    rows, caps, out_scenes, bgs, out_noise = [], [], [], [], []
    for i, (scene, bg) in enumerate(zip(scenes, with_bg)):
        source = redraw(scene, drawings[i])
        target = edited(rng, source) if source is not None else None
        if target is None:
            continue
        for s in (source, target):
            rows.append(render(s))
            caps.append(caption(s, background=bg))
            out_scenes.append(s)
            bgs.append(bg)
            out_noise.append(noise[i])
    if not rows:
        return None, [], [], [], None, 0
    x = torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, caps, out_scenes, bgs, torch.stack(out_noise), len(rows) // 2


def drawn_pairs(rng: np.random.Generator, draw, n: int, sampler):
    """pairs_from on n captions of `sampler`'s world drawn by draw(captions, noise) -> (n, 64, 64, 3) uint8 from
    fresh noise (n, 4, 16, 16); the trainers' models draw alike (SelfDrawnPairs.draw in train and train_mmdit)."""
    from .train import captioned_scenes

    captions, scenes, with_bg = captioned_scenes(rng, n, sampler)
    noise = torch.randn(n, 4, 16, 16)
    return pairs_from(rng, scenes, with_bg, draw(captions, noise), noise)


def add_arguments(ap: argparse.ArgumentParser, cfg, sampler: str, levels: str) -> None:
    """The pair options both trainers take (--edit-*), their defaults from the trainer's Config `cfg`; `sampler`
    names its drawings' sampler, `levels` its noise levels (timesteps, sigmas) in the help."""
    ap.add_argument("--edit-sources", type=int, default=0, metavar="N",
                    help="per step, N captions the averaged model draws, read back and turned into (source, edit)"
                         " pairs trained from their drawing's noise (lab/shapes/edit_pairs.py); 0: off")
    ap.add_argument("--edit-steps", type=int, default=cfg.edit_steps, help=f"{sampler} steps of those drawings")
    ap.add_argument("--edit-noise", type=float, default=cfg.edit_noise, metavar="SHARE",
                    help=f"the pair rows train only on this share of the {levels}, the noisiest (where the"
                         " layout forms); 1: all")
    ap.add_argument("--edit-guidance", type=float, default=cfg.edit_guidance,
                    help="classifier-free guidance of those drawings (the pictures the pair rows learn: guided"
                         " drawings taught to the conditional model compound with the guidance it is sampled at)")


def settings(ap: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The parsed --edit-* options as Config fields; a share outside (0, 1] is an argparse error."""
    if not 0.0 < args.edit_noise <= 1.0:
        ap.error(f"--edit-noise {args.edit_noise}: a share of the noise levels, above 0 and at most 1")
    return {"edit_sources": args.edit_sources, "edit_steps": args.edit_steps, "edit_noise": args.edit_noise,
            "edit_guidance": args.edit_guidance}
