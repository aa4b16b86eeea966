"""Measure on the shapes world what the paper claims: faithful generation, layout-keeping swaps, blend, refine.

    python -m lab.shapes.evaluate [--n 100] [--steps 50] [--guidance 7.5] [--json results.json] [--model DIR]

Every case is a held-out prompt (its (shape, colour, position) never appears in training) with a fixed seed
(the case number). Positions are read by the pixel oracle (oracle.py); a layout is "kept" when the edited
object's centroid (its bounding-box centre, for shape swaps) is within 3 px of the source object's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import yaml

from p2p_cli.models import Model
from p2p_cli.engine.pipeline import generate, run_edit
from p2p_cli.recipe import parse_recipe

from .captions import caption
from .oracle import Found, check, estimate_background, match_unplaced, nearest, read
from .world import (ANCHORS, BACKGROUNDS, COLOURS, POSITIONS, SHAPES, Obj, Scene, heldout_scenes, is_heldout,
                    render, wide_heldout_scenes)

REAL_METHODS = "direct,null-text,negative-prompt,ddim"  # --only real's inversions unless told
KEEP_PX = 3.0  # centroid distance (pixels) up to which the layout counts as kept
BLEND_MAX_CHANGE = 0.03  # mean |change| (0-1 scale) outside the edited object allowed with local blend


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) floats in [0, 1] -> (N, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def nearest_found(found: list[Found], xy: tuple[float, float]) -> Found | None:
    """The found object whose centroid is closest to xy."""
    if not found:
        return None
    return min(found, key=lambda f: (f.centroid[0] - xy[0]) ** 2 + (f.centroid[1] - xy[1]) ** 2)


def anchor(o: Obj) -> tuple[float, float]:
    row, col = divmod(POSITIONS.index(o.position), 3)
    return float(ANCHORS[col]), float(ANCHORS[row])


def other(values, *avoid: str) -> str:
    """The first value (in a fixed order) not in avoid."""
    return next(v for v in values if v not in avoid)


@dataclass
class SwapCase:
    scene: Scene
    k: int  # index of the object to edit
    target: Scene
    seed: int


def swap_cases(n: int, attribute: str, seed: int = 0, two_objects: bool = False, first_seed: int = 0
               ) -> list[SwapCase]:
    """n held-out scenes, each with its first held-out object's colour or shape swapped for another; case i
    samples from noise seed first_seed + i."""
    cases = []
    for scene in heldout_scenes(20 * n, seed=seed):
        if len(cases) == n:
            break
        if two_objects != (len(scene.objects) == 2):
            continue
        k = next(i for i, o in enumerate(scene.objects) if is_heldout(o))
        o = scene.objects[k]
        if attribute == "colour":
            used = {x.colour for x in scene.objects}
            if two_objects and len(used) < 2:
                continue  # the blend words must name one object only
            new = replace(o, colour=other(COLOURS, *used))
        else:
            new = replace(o, shape=other(SHAPES, o.shape))
        objects = list(scene.objects)
        objects[k] = new
        cases.append(SwapCase(scene, k, Scene(objects, scene.background), seed=first_seed + len(cases)))
    return cases


def edit_recipe(source: str, target: str, seed: int, steps: int, guidance: float, recipe: dict | None = None,
                **edit) -> object:
    """A replace edit at the issue's settings (cross 0.8; the self window the model family's default: 0.4, SD3 /
    FLUX.1 0.2); `recipe` overrides recipe-level fields."""
    return parse_recipe({"source": source, "seed": seed, "steps": steps, "guidance": guidance,
                         "cross_replace": 0.8, **(recipe or {}),
                         "edits": [{"target": target, "type": "replace", "baseline": True, **edit}]})


def fresh_seeds(fresh: int, scenes: int) -> tuple[int, int]:
    """(seed of the held-out scenes, first noise seed) of a measurement whose reported set draws its scenes
    with seed `scenes` and its noise from 0: fresh 0 is the reported set, fresh K another one of the same kind."""
    return scenes + 100 * fresh, 10_000 * fresh


def eval_plain(model: Model, n: int, steps: int, guidance: float, batch: int = 16, fresh: int = 0) -> dict:
    """Plain generation from held-out captions: how often the oracle reads colour, shape, position right."""
    scene_seed, first = fresh_seeds(fresh, 1)
    scenes = heldout_scenes(n, seed=scene_seed)
    scores = []
    for start in range(0, n, batch):
        part = scenes[start : start + batch]
        seeds = list(range(first + start, first + start + len(part)))
        images = to_uint8(generate(model, [caption(s) for s in part], seeds, steps=steps, guidance=guidance))
        scores += [check(s, img) for s, img in zip(part, images)]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("colour", "shape", "position", "size", "count",
                                                                 "background")}


def box_centre(f: Found) -> tuple[float, float]:
    """The centre of the object's bounding box: where the world places a shape, whatever the shape."""
    x0, y0, x1, y1 = f.bbox
    return (x0 + x1) / 2, (y0 + y1) / 2


def _swap_outcome(src_img, img, o: Obj, new: Obj, attribute: str) -> tuple[bool, bool, float]:
    """(attribute now the target's, place kept within KEEP_PX, distance in px) for the edited object.

    The place is the centroid for a colour swap. For a shape swap it is the bounding-box centre: a triangle's
    centroid lies a third of its half-height below its box centre (4 px for a big one), so a swap between a
    triangle and a circle drawn in exactly the same place would move the centroid by more than KEEP_PX.
    """
    src_obj = nearest_found(read(src_img), anchor(o))
    if src_obj is None:
        return False, False, float("inf")
    got = nearest_found(read(img), src_obj.centroid)
    if got is None:
        return False, False, float("inf")
    value = got.colour_name if attribute == "colour" else got.shape
    place = (lambda f: f.centroid) if attribute == "colour" else box_centre
    (x0, y0), (x1, y1) = place(src_obj), place(got)
    dist = float(np.hypot(x1 - x0, y1 - y0))
    return value == getattr(new, attribute), dist <= KEEP_PX, dist


def _swap_summary(rows: list[tuple[bool, bool, float]]) -> dict:
    """Shares changed / kept / both, the median distance and the share within 1 px (a stricter "kept")."""
    dist = np.array([r[2] for r in rows])
    return {"changed": float(np.mean([r[0] for r in rows])), "kept": float(np.mean([r[1] for r in rows])),
            "both": float(np.mean([r[0] and r[1] for r in rows])), "median_px": float(np.median(dist)),
            "within_1px": float(np.mean(dist <= 1.0)), "n": len(rows)}


def eval_swap(model: Model, attribute: str, n: int, steps: int, guidance: float, fresh: int = 0,
              settings: dict | None = None) -> dict:
    """Replace a colour or shape word (cross 0.8, the family's self window) vs the uncontrolled target from the same seed."""
    rows = {"p2p": [], "baseline": []}
    scene_seed, first = fresh_seeds(fresh, 0)
    for case in swap_cases(n, attribute, seed=scene_seed, first_seed=first):
        o, new = case.scene.objects[case.k], case.target.objects[case.k]
        out = run_edit(model, edit_recipe(caption(case.scene), caption(case.target), case.seed, steps, guidance,
                                          settings))
        imgs = to_uint8(out.images)  # source, edit-1, baseline-1
        rows["p2p"].append(_swap_outcome(imgs[0], imgs[1], o, new, attribute))
        rows["baseline"].append(_swap_outcome(imgs[0], imgs[2], o, new, attribute))
    return {name: _swap_summary(rs) for name, rs in rows.items()}


def free_swap_cases(n: int, seed: int = 0, first_seed: int = 0) -> list[SwapCase]:
    """n held-out wide-world scenes whose captions name no place, each with its first held-out object's colour
    swapped for one no object of the scene has; case i samples from noise seed first_seed + i."""
    cases = []
    for scene in wide_heldout_scenes(n, seed=seed, places=False):
        k = next(i for i, o in enumerate(scene.objects) if is_heldout(o))
        objects = list(scene.objects)
        objects[k] = replace(objects[k], colour=other(COLOURS, *{x.colour for x in scene.objects}))
        cases.append(SwapCase(scene, k, replace(scene, objects=objects), seed=first_seed + len(cases)))
    return cases


FREE_MISSES = ("no source object", "nothing there", "source colour", "another colour")


def _free_judged(src_obj: Found | None, got: Found | None, scene: Scene, k: int,
                 new: Obj) -> tuple[tuple[bool, bool, float], str | None]:
    """A colour swap on a caption without places, from the source object (the one of its colour, wherever the
    model put it: match_unplaced) and the object nearest its centroid in the edited picture: _swap_outcome's
    (colour right, place kept, distance), and why it is not right (None when it is): the source picture lacks the
    object, the edited picture has none near it, the object there kept the source colour, or it has another
    (mostly another object: the edited one shrank or vanished)."""
    if src_obj is None or got is None:
        return (False, False, float("inf")), FREE_MISSES[0] if src_obj is None else FREE_MISSES[1]
    dist = float(np.hypot(got.centroid[0] - src_obj.centroid[0], got.centroid[1] - src_obj.centroid[1]))
    right = got.colour_name == new.colour
    miss = None if right else FREE_MISSES[2] if got.colour_name == scene.objects[k].colour else FREE_MISSES[3]
    return (right, dist <= KEEP_PX, dist), miss


def _free_judge(src_img, img, scene: Scene, k: int, new: Obj) -> tuple[tuple[bool, bool, float], str | None]:
    """_free_judged, reading the source and the edited picture."""
    src_obj = match_unplaced(scene, read(src_img))[k]
    got = nearest_found(read(img), src_obj.centroid) if src_obj is not None else None
    return _free_judged(src_obj, got, scene, k, new)


def _free_outcome(src_img, img, scene: Scene, k: int, new: Obj) -> tuple[bool, bool, float]:
    """_swap_outcome for a caption without places (_free_judged)."""
    return _free_judge(src_img, img, scene, k, new)[0]


def free_miss(src_img, img, scene: Scene, k: int, new: Obj) -> str | None:
    """Why a colour swap on a caption without places is not right, None when it is (_free_judged)."""
    return _free_judge(src_img, img, scene, k, new)[1]


def free_runs(model: Model, n: int, steps: int, guidance: float, fresh: int = 0, settings: dict | None = None):
    """eval_free's cases, each run: (case, out.images (source, P2P, no control), {"p2p": outcome, "baseline":
    outcome}, {"p2p": miss, "baseline": miss}) with _free_judged's outcome (colour right, place kept, distance)
    and miss; the source picture is read once for both edits."""
    scene_seed, first = fresh_seeds(fresh, 4)
    for case in free_swap_cases(n, seed=scene_seed, first_seed=first):
        new = case.target.objects[case.k]
        out = run_edit(model, edit_recipe(caption(case.scene), caption(case.target), case.seed, steps, guidance,
                                          settings))
        imgs = to_uint8(out.images)  # source, edit-1, baseline-1
        src_obj = match_unplaced(case.scene, read(imgs[0]))[case.k]
        judged = {name: _free_judged(src_obj, nearest_found(read(imgs[row]), src_obj.centroid)
                                     if src_obj is not None else None, case.scene, case.k, new)
                  for row, name in enumerate(("p2p", "baseline"), start=1)}
        yield (case, out.images, {name: outcome for name, (outcome, _) in judged.items()},
               {name: miss for name, (_, miss) in judged.items()})


def eval_free(model: Model, n: int, steps: int, guidance: float, fresh: int = 0,
              settings: dict | None = None) -> dict:
    """Colour swaps in the wide world on captions without place words, where the text does not pin the layout:
    P2P (cross 0.8, the family's self window) against the uncontrolled target from the same noise. Cases whose source picture
    lacks the object are counted as failures for both."""
    rows, misses = {"p2p": [], "baseline": []}, {"p2p": [], "baseline": []}
    for _, _, outcomes, kinds in free_runs(model, n, steps, guidance, fresh, settings):
        for name in rows:
            rows[name].append(outcomes[name])
            misses[name].append(kinds[name])
    return {name: {**_swap_summary(rs), "misses": {kind: misses[name].count(kind) for kind in FREE_MISSES}}
            for name, rs in rows.items()}


def _outside_change(src_img, img, o: Obj) -> float | None:
    """Mean |img - src| (0-1) outside the edited object (its masks in both pictures, grown by 2 px); None when
    the source lacks the object or nothing lies outside."""
    src_obj = nearest_found(read(src_img), anchor(o))
    if src_obj is None:
        return None
    region = src_obj.mask.copy()
    got = nearest_found(read(img), src_obj.centroid)
    if got is not None:
        region |= got.mask
    grown = torch.nn.functional.max_pool2d(torch.from_numpy(region)[None, None].float(), 5, 1, 2)[0, 0].bool()
    outside = ~grown.numpy()
    if not outside.any():  # the objects cover the whole picture: there is no outside to measure
        return None
    diff = np.abs(img.astype(np.float64) - src_img.astype(np.float64)).mean(-1) / 255.0
    return float(diff[outside].mean())


def eval_blend(model: Model, n: int, steps: int, guidance: float, fresh: int = 0,
               settings: dict | None = None) -> dict:
    """Two objects, one recoloured with local blend on its colour words: the rest should not change."""
    rows = {"p2p+blend": [], "p2p": [], "colour_right": []}
    scene_seed, first = fresh_seeds(fresh, 0)
    for case in swap_cases(n, "colour", seed=scene_seed, two_objects=True, first_seed=first):
        o, new = case.scene.objects[case.k], case.target.objects[case.k]
        recipe = parse_recipe({
            "source": caption(case.scene), "seed": case.seed, "steps": steps, "guidance": guidance,
            "cross_replace": 0.8, **(settings or {}),
            "edits": [{"target": caption(case.target), "type": "replace",
                       "local_blend": {"words": [o.colour, new.colour]}},
                      {"target": caption(case.target), "type": "replace"}]})
        imgs = to_uint8(run_edit(model, recipe).images)
        blended, plain = _outside_change(imgs[0], imgs[1], o), _outside_change(imgs[0], imgs[2], o)
        if blended is None or plain is None:
            continue
        rows["p2p+blend"].append(blended)
        rows["p2p"].append(plain)
        rows["colour_right"].append(_swap_outcome(imgs[0], imgs[1], o, new, "colour")[0])
    return {
        "mean_change_outside_blend": float(np.mean(rows["p2p+blend"])),
        "mean_change_outside_no_blend": float(np.mean(rows["p2p"])),
        f"share_below_{BLEND_MAX_CHANGE}": float(np.mean(np.array(rows["p2p+blend"]) < BLEND_MAX_CHANGE)),
        "colour_right": float(np.mean(rows["colour_right"])), "n": len(rows["p2p"]),
    }


def eval_refine(model: Model, n: int, steps: int, guidance: float, fresh: int = 0,
                settings: dict | None = None) -> dict:
    """Refine "a big red circle on the left" by adding " on a <colour> background": background changes,
    object kept."""
    rows = []
    scene_seed, first = fresh_seeds(fresh, 2)
    scenes = [s for s in heldout_scenes(4 * n, seed=scene_seed) if len(s.objects) == 1][:n]
    for i, scene in enumerate(scenes):
        source = caption(scene, background=False)
        src_bg = None
        wanted = list(BACKGROUNDS)[i % len(BACKGROUNDS)]
        recipe = parse_recipe({"source": source, "seed": first + i, "steps": steps, "guidance": guidance,
                               "cross_replace": 0.8, **(settings or {}),
                               "edits": [{"target": f"{source} on a {wanted} background", "type": "refine"}]})
        imgs = to_uint8(run_edit(model, recipe).images)
        src_bg = nearest(estimate_background(imgs[0]), BACKGROUNDS)
        o = scene.objects[0]
        src_obj = nearest_found(read(imgs[0]), anchor(o))
        got = nearest_found(read(imgs[1]), src_obj.centroid) if src_obj is not None else None
        kept = got is not None and src_obj is not None and got.shape == src_obj.shape \
            and got.colour_name == src_obj.colour_name \
            and np.hypot(got.centroid[0] - src_obj.centroid[0], got.centroid[1] - src_obj.centroid[1]) <= KEEP_PX
        rows.append((nearest(estimate_background(imgs[1]), BACKGROUNDS) == wanted, kept, src_bg != wanted))
    changed = [r for r in rows if r[2]]
    return {"background_right": float(np.mean([r[0] for r in rows])),
            "object_kept": float(np.mean([r[1] for r in rows])),
            "both_where_source_differed": float(np.mean([r[0] and r[1] for r in changed])) if changed else None,
            "n": len(rows), "n_source_background_differed": len(changed)}


def eval_real(model: Model, n: int, steps: int, guidance: float, method: str = "null-text",
              recipe: dict | None = None, seed: int = 3) -> dict:
    """Pictures drawn by the world generator (not by the model): invert, then swap the colour word.

    `recipe` overrides the edit's recipe-level fields (e.g. self_replace, self_replace_max_res).
    """
    from p2p_cli.engine.inversion import invert, psnr

    rows, baseline, psnrs, ceilings, seconds = [], [], [], [], []
    for case in swap_cases(n, "colour", seed=seed):
        picture = render(case.scene)  # (64, 64, 3) uint8
        image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
        inv = invert(model, image, caption(case.scene), method=method, steps=steps, guidance=guidance)
        edit = edit_recipe(caption(case.scene), caption(case.target), 0, steps, guidance, recipe)
        out = run_edit(model, edit, latent=inv.latent, uncond_per_step=inv.uncond, uncond_added=inv.uncond_added,
                       source_trajectory=inv.trajectory, noise_maps=inv.noise)
        imgs = to_uint8(out.images)
        o, new = case.scene.objects[case.k], case.target.objects[case.k]
        rows.append(_swap_outcome(picture, imgs[1], o, new, "colour"))
        baseline.append(_swap_outcome(picture, imgs[2], o, new, "colour"))  # the target alone from the inversion
        psnrs.append(psnr(out.images[0], image))
        ceilings.append(inv.vae_psnr)
        seconds.append(inv.seconds)
    return {"method": method, "settings": recipe or {}, **_swap_summary(rows), "baseline": _swap_summary(baseline),
            "reconstruction_psnr": float(np.mean(psnrs)), "vae_ceiling_psnr": float(np.mean(ceilings)),
            "seconds_per_inversion": float(np.median(seconds))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluate the bundled shapes model with the pixel oracle.")
    ap.add_argument("--n", type=int, default=100, help="cases per measurement")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--n-real", type=int, default=30, help="cases for the real-picture (inversion) measurement")
    ap.add_argument("--only", default="plain,colour,shape,blend,refine,real",
                    help="measurements to run; also: free (wide-world colour swaps on captions without places)")
    ap.add_argument("--model", default=None, help="a model folder (default: the bundled weights)")
    ap.add_argument("--fresh", type=int, default=0,
                    help="K > 0: another set of held-out prompts and noise seeds for every measurement but real "
                         "(0: the reported set); to check a choice made on the reported set")
    ap.add_argument("--real-methods", default=None,
                    help=f"inversions for --only real (default: {REAL_METHODS}, or with --real-model-defaults the"
                         " model's own; also: ddpm (SD), flowedit (flow models))")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                    help="a recipe-level setting for every edit measured (YAML value; repeatable), e.g."
                         " --set self_replace=0.2 --set text_mass=source")
    ap.add_argument("--real-seed", type=int, default=3, help="seed of the real-picture cases (3: the reported ones)")
    ap.add_argument("--real-cross-replace", type=float, default=None,
                    help="cross_replace of the real-picture edits (default: the swaps' 0.8)")
    ap.add_argument("--real-self-replace", type=float, default=None,
                    help="self_replace of the real-picture edits (default: the model family's, as the swaps)")
    ap.add_argument("--real-self-replace-max-res", type=int, default=None,
                    help="self_replace_max_res of the real-picture edits (default: latent side / 4)")
    ap.add_argument("--real-model-defaults", action="store_true",
                    help="the real-picture edits take the windows the model folder's p2p-defaults.json gives an"
                         " `image:` recipe (the --real-* options above still win)")
    args = ap.parse_args(argv)
    settings = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item}: use KEY=VALUE")
        settings[key.strip()] = yaml.safe_load(value)
    real = settings | {k: v for k, v in (("cross_replace", args.real_cross_replace), ("self_replace", args.real_self_replace),
                              ("self_replace_max_res", args.real_self_replace_max_res)) if v is not None}
    from p2p_cli.family_defaults import default_inversion
    from p2p_cli.models import load_model

    model = load_model(args.model, device="cpu", dtype="fp32")
    if args.real_model_defaults:
        if model.defaults is None:
            ap.error(f"--real-model-defaults: {args.model or 'shapes'} has no p2p-defaults.json")
        shipped = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in model.defaults.image.model_dump(exclude_none=True).items()}
        shipped.pop("inversion", None)  # a method, not a recipe setting: eval_real inverts with each method
        real = shipped | real
        if args.real_methods is None:  # the inversion an image: recipe that names none gets on this model
            args.real_methods = default_inversion(model.defaults)
    args.real_methods = args.real_methods or REAL_METHODS
    common = {"n": args.n, "steps": args.steps, "guidance": args.guidance, "fresh": args.fresh}
    results, t0 = {**common, "settings": settings}, time.time()
    edits = {**common, "settings": settings}
    evals = {"plain": lambda: eval_plain(model, **common),
             "colour": lambda: eval_swap(model, "colour", **edits),
             "shape": lambda: eval_swap(model, "shape", **edits),
             "blend": lambda: eval_blend(model, **edits),
             "refine": lambda: eval_refine(model, **edits),
             "free": lambda: eval_free(model, **edits),
             "real": lambda: {m: eval_real(model, args.n_real, args.steps, args.guidance, m, real, args.real_seed)
                              for m in args.real_methods.split(",")}}
    for name in args.only.split(","):
        tic = time.time()
        results[name] = evals[name]()
        print(f"{name} ({time.time() - tic:.0f} s): {json.dumps(results[name])}", file=sys.stderr, flush=True)
    results["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
