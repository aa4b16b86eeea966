"""`p2p sweep RECIPE --tau A:B`: every tau of every edit as one more prompt of the batch; OUT/<name>/sweep/ whole."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.common import overrides_from, progress_bar, use_threads
from p2p_cli.runs.edits import check_name, model_key
from p2p_cli.cli.errors import EXIT_OK, UsageError, handled
from p2p_cli.files.outputs import atomic_folder, check_free, run_record, write_json
from p2p_cli.overrides import read_recipe
from p2p_cli.analysis.tau_sweep import (COLUMNS, EDITED, KEPT, csv_cell, expand, parse_pick, parse_taus, pick,
                                        pick_score)

CLIP_DEFAULT = "openai/clip-vit-large-patch14"  # metrics.CLIP_DEFAULT (metrics imports torch; help must not)

RecipeArg = Annotated[str, typer.Argument(help="Recipe file (YAML); - reads it from standard input.", metavar="RECIPE")]
Tau = Annotated[
    Optional[str],
    typer.Option("--tau", help="cross_replace values: LO:HI (step 0.2; HI included when on the grid), LO:HI:STEP"
                 " or V1,V2,... Each replaces an edit's default window with [0, tau); per-word windows are kept."),
]
SelfTau = Annotated[Optional[str], typer.Option("--self-tau", help="self_replace values, written as for --tau (default: the"
                                                                " recipe's own, not swept).")]
EditNo = Annotated[Optional[int], typer.Option("--edit", min=1, help="Sweep only edit K (1 = the first; default: every edit).")]
BatchSize = Annotated[
    int, typer.Option("--batch-size", min=1, help="Sweep points per sampler run; each run also holds the source.")
]
Clip = Annotated[
    str, typer.Option("--clip", help="CLIP model for the edit scores: hub id or local folder; 'none' skips them.")
]
Pick = Annotated[bool, typer.Option("--pick", help="Mark per edit the best point (see --pick-keep, --pick-by).")]
PickKeep = Annotated[
    str, typer.Option("--pick-keep", help=f"Points that keep enough of the source: METRIC>=V or METRIC<=V,"
                      f" METRIC one of {', '.join(KEPT)} (clip_img needs --clip).")
]
PickBy = Annotated[
    str, typer.Option("--pick-by", help=f"Among those, the best by: {', '.join(EDITED)} (change_in: 1 - SSIM inside"
                      " the blend mask; change: mean pixel change), or auto: clip when a CLIP model loads, else"
                      " change_in when every swept edit blends, else change.")
]


def sweep(
    recipe: RecipeArg,
    tau: Tau = None,
    self_tau: SelfTau = None,
    edit: EditNo = None,
    batch_size: BatchSize = 8,
    baseline: o.Baseline = False,
    clip: Clip = CLIP_DEFAULT,
    pick_: Pick = False,
    pick_keep: PickKeep = "ssim>=0.5",
    pick_by: PickBy = "auto",
    out: o.OutDir = Path("outputs"),
    model: o.ModelSpec = None,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    steps: o.Steps = None,
    seed: o.Seed = None,
    set_: o.Sets = None,
    overwrite: o.Overwrite = False,
    json_: o.Json = False,
    quiet: o.Quiet = False,
    attention: o.AttentionOpt = o.Attention.fused,
    allow_pickle: o.AllowPickle = False,
    threads: o.Threads = None,
    trust_recipe: o.TrustRecipe = False,
    debug: o.Debug = False,
) -> None:
    """Sweep tau (cross_replace) and/or self tau of a recipe's edits; writes OUT/<name>/sweep/ (images, sweep.png,
    metrics.csv, tradeoff.png, run.json)."""
    overrides = overrides_from(set_, steps=steps, seed=seed)
    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    with handled(debug):
        taus, self_taus = _values("--tau", tau), _values("--self-tau", self_tau)
        if taus is None and self_taus is None:
            raise UsageError("nothing to sweep: give --tau (e.g. --tau 0.2:0.8), --self-tau, or both")
        try:
            rule = parse_pick(pick_keep, pick_by)
        except ValueError as err:
            raise UsageError(str(err)) from None
        parsed = read_recipe(recipe, overrides, trust=trust_recipe, model_set=model is not None)
        check_name(parsed, recipe)
        if getattr(parsed, "image", None) is not None:
            raise UsageError(f"{recipe}: p2p sweep does not edit real pictures (image:) yet; sweep a generated source")
        if taus is None and self_taus is None:
            raise UsageError("nothing to sweep: give --tau, --self-tau or both")
        try:
            plan = expand(parsed, taus, self_taus, edit, baseline=baseline)
        except ValueError as err:
            raise UsageError(err.as_option() if hasattr(err, "as_option") else str(err)) from None
        folder = Path(out) / parsed.name / "sweep"
        check_free(folder, overwrite)  # before any model loads
        all_blend = (getattr(parsed, "mask", None) is not None  # a recipe's mask confines every edit
                     or all(parsed.edits[k - 1].local_blend is not None for k in plan.edits))
        try:  # before any model loads: a score that cannot be had stops the sweep now
            rule = replace(rule, score=pick_score(rule.score, clip.lower() != "none", all_blend))
        except ValueError as err:
            if pick_:
                raise UsageError(f"{err} (--clip is {clip})" if clip.lower() == "none" else str(err)) from None
            rule = replace(rule, score=pick_score("auto", clip.lower() != "none", all_blend))
        if pick_ and rule.keep in ("clip_img",) and clip.lower() == "none":
            raise UsageError(f"--pick-keep {pick_keep}: clip_img needs a CLIP model (--clip is none); keep by ssim,"
                             " psnr or their _bg forms, or give --clip a CLIPModel folder")
        use_threads(threads)
        run(plan, folder, recipe_file=recipe, overrides=overrides, spec=model_key(model or parsed.model),
            device=device.value, dtype=dtype.value, batch_size=batch_size, clip=clip, rule=rule, do_pick=pick_,
            auto=pick_by == "auto", all_blend=all_blend,
            overwrite=overwrite, json_=json_, attention=attention.value, allow_pickle=allow_pickle, log=log,
            bar=None if quiet or not console.is_terminal else progress_bar(console))
    raise typer.Exit(EXIT_OK)


def _values(option: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return parse_taus(text)
    except ValueError as err:
        raise UsageError(f"{option} {text}: {err}") from None


def run(plan, folder: Path, *, recipe_file, overrides, spec, device, dtype, batch_size, clip, rule, do_pick, auto,
        all_blend, overwrite, json_, attention, allow_pickle, log, bar) -> None:
    """Load the model, run the sweep's batches, score every point and write the folder in one rename."""
    from p2p_cli.analysis.metrics import ClipScorer, Lpips, MetricUnavailable
    from p2p_cli.api import load_model, resolve_recipe, sweep as run_sweep
    from p2p_cli.files.real import recipe_loras
    from p2p_cli.render.images import save_png, smooth_mask
    from p2p_cli.render.sweep_plots import sweep_grid, tradeoff_plot
    from p2p_cli.analysis.tau_sweep import CLIP_SCORES, score_sweep

    start = time.perf_counter()
    recipe = plan.recipe
    log(f"loading model {spec}")
    sd = load_model(spec, device=device, dtype=dtype, allow_pickle=allow_pickle, loras=recipe_loras(recipe, recipe_file),
                    quantize=recipe.quantize, offload=recipe.offload)
    recipe = resolve_recipe(sd, recipe, recipe_file)  # every problem on this model; the family's defaults filled in
    # the scores' models before sampling: --pick by a CLIP score that cannot be had fails now, not after the sweep
    notes, scorer = [], None
    if clip.lower() == "none":
        notes.append("CLIP columns are empty: --clip none")
    else:
        try:
            scorer = ClipScorer(clip, sd.device, sd.dtype).load()
        except MetricUnavailable as err:
            if do_pick and rule.score in CLIP_SCORES and not auto:
                raise UsageError(f"--pick by {rule.score} needs a CLIP model: {err}; give --clip a local folder"
                                 " or hub id, pick by a score without CLIP (--pick-by change_in or change), or sweep"
                                 " without --pick (every point is still scored and drawn)")
            if do_pick and rule.keep in CLIP_SCORES:
                raise UsageError(f"--pick-keep {rule.keep}{rule.op}{rule.threshold:g} needs a CLIP model: {err};"
                                 " give --clip a folder"
                                 " or hub id, or keep by a score without CLIP (ssim, psnr)")
            notes.append(f"CLIP columns are empty: {err}")
            if rule.score in CLIP_SCORES:
                rule = replace(rule, score=pick_score("auto", False, all_blend))
                if do_pick:
                    notes.append(f"picking by {rule.score} instead of CLIP")
    seconds = {"load": time.perf_counter() - start}
    n_chunks = -(-len(plan.points) // batch_size)
    log(f"{recipe_file}: {recipe.name}, {len(plan.points)} points in {n_chunks} batch(es) of at most {batch_size}"
        f" (+ the source), {recipe.steps} steps")
    progress = None
    if bar is not None:
        task = bar.add_task(recipe.name, total=recipe.steps * n_chunks)
        progress = lambda c, n, i, t: bar.update(task, completed=(c - 1) * t + i, total=n * t)  # noqa: E731
        bar.start()
    try:
        _, result = run_sweep(sd, plan, batch_size=batch_size, attention=attention, progress=progress,
                              source_name=recipe_file)
    finally:
        if bar is not None:
            bar.stop()
            bar.remove_task(task)
    seconds.update(result.seconds)

    tic = time.perf_counter()
    lpips = None
    try:
        lpips = Lpips(sd.device)
    except MetricUnavailable as err:
        notes.append(f"LPIPS columns are empty: {err}")
    rows, baseline_rows = score_sweep(plan, result, scorer, lpips)
    picked: dict[int, int] = {}
    if do_pick:
        picked, why = pick(rows, rule)
        notes += why
        for i in picked.values():
            rows[i]["picked"] = True
    seconds["metrics"] = time.perf_counter() - tic
    for note in notes:
        log(note)

    tic = time.perf_counter()
    files: dict[str, str] = {}
    prompts = {"source": recipe.source}
    with atomic_folder(folder, overwrite) as tmp:
        files["source"] = save_png(result.source, tmp / "source.png").name
        for k, image in sorted(result.baselines.items()):
            files[f"baseline-{k}"] = save_png(image, tmp / f"baseline-{k}.png").name
            prompts[f"baseline-{k}"] = recipe.edits[k - 1].target
        for point, image, mask in zip(plan.points, result.images, result.masks):
            files[point.name] = save_png(image, tmp / f"{point.name}.png").name
            prompts[point.name] = recipe.edits[point.edit - 1].target
            if mask is not None:
                files[f"{point.name}-mask"] = save_png(smooth_mask(mask), tmp / f"{point.name}-mask.png").name
        chosen = set(picked.values())
        files["grid"] = save_png(sweep_grid(plan, result, rows, baseline_rows, chosen), tmp / "sweep.png").name
        plot = tradeoff_plot(plan, rows, kept=rule.keep if do_pick else "ssim", edited=rule.score, picked=chosen,
                             threshold=rule.threshold if do_pick else None)
        files["tradeoff"] = save_png(plot, tmp / "tradeoff.png").name
        with open(tmp / "metrics.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows([csv_cell(row[c]) for c in COLUMNS] for row in rows)
        files["metrics"] = "metrics.csv"
        seconds["write"] = time.perf_counter() - tic
        seconds["total"] = time.perf_counter() - start
        record = run_record(recipe, recipe_file=recipe_file, overrides=overrides, model=sd,
                            size=tuple(result.source.shape[-2:]), attention=attention, prompts=prompts, images=files,
                            seconds={k: round(v, 3) for k, v in seconds.items()})
        chosen_points = {f"edit-{k}": _point_json(rows[i]) for k, i in sorted(picked.items())}
        record["sweep"] = {
            "tau": plan.taus, "self_tau": plan.self_taus, "edits": plan.edits, "batch_size": batch_size,
            "batches": n_chunks, "per_word_windows": "kept (a tau replaces only the default window)",
            "source_row": "rendered in every batch as the attention donor; the same picture each time",
            "clip": None if clip.lower() == "none" else clip, "pick": str(rule) if do_pick else None,
            "picked": chosen_points, "notes": notes,
        }
        write_json(tmp / "run.json", record)
    if json_:
        line = {
            "name": recipe.name, "out": str(folder),
            "images": {key: str(folder / name) for key, name in files.items()
                       if key not in ("grid", "tradeoff", "metrics")},
            "grid": str(folder / files["grid"]), "metrics": str(folder / "metrics.csv"),
            "tradeoff": str(folder / files["tradeoff"]), "run": str(folder / "run.json"),
            "picked": chosen_points, "notes": notes, "seconds": record["seconds"],
        }
        print(json.dumps(line), flush=True)
    else:
        best = "".join(f", {k} picks" + (f" tau {p['tau']}" if plan.taus else "")
                       + (f" self tau {p['self_tau']}" if plan.self_taus else "") for k, p in chosen_points.items())
        print(f"wrote {folder}/ ({len(plan.points)} points, {seconds['total']:.1f} s{best})", flush=True)


def _point_json(row: dict) -> dict:
    return {"tau": row["tau"], "self_tau": row["self_tau"], "image": row["image"]}

