"""PIE-Bench runs: each entry of a benchmark folder edited as a recipe (written as `p2p edit` writes it), scored
with the benchmark's seven measures against the original picture, and summed up per editing kind and overall
(`p2p eval pie-bench`; docs/pie-bench.md says which definitions are followed)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2p_cli.fingerprint import fingerprint as digest
from p2p_cli.analysis.metrics import (
    CLIP_DEFAULT, DINO_DEFAULT, ClipScorer, DinoStructure, Lpips, MetricUnavailable, clip_score, pie_clip_region,
    pie_mse, pie_psnr, pie_ssim,
)
from p2p_cli.files.pie_folder import KINDS, MASK_SIDE, PieEntry, Settings, decode_mask, entry_job
from p2p_cli.runs import runner
from p2p_cli.runs.records import EXIT_FAILED, resume_state

SUMMARY_FILE = "pie-bench.json"
# name -> (what, how the paper's table scales it, lower is better)
MEASURES: dict[str, tuple[str, float, bool]] = {
    "structure_distance": ("DINO ViT-B/8 key self-similarity distance, whole picture", 1e3, True),
    "psnr": ("PSNR outside the mask (dB)", 1.0, False),
    "lpips": ("LPIPS (SqueezeNet) outside the mask", 1e3, True),
    "mse": ("MSE outside the mask", 1e4, True),
    "ssim": ("SSIM outside the mask", 1e2, False),
    "clip_whole": ("CLIP score of the edit and the target prompt", 1.0, False),
    "clip_edited": ("CLIP score of the edit inside the mask and the target prompt", 1.0, False),
}
NEEDS = {"structure_distance": "dino", "lpips": "lpips", "clip_whole": "clip", "clip_edited": "clip"}


@dataclass
class Scorers:
    """The metric networks (None: that measure is skipped; `skipped` says why)."""

    dino: DinoStructure | None = None
    lpips: Lpips | None = None
    clip: ClipScorer | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # measure -> reason


def load_scorers(device: torch.device | str = "cpu", *, dino: str = DINO_DEFAULT, clip: str = CLIP_DEFAULT,
                 lpips: str = "squeeze", warn: Callable[[str], None] = lambda line: None) -> Scorers:
    """Load each metric network (from a local folder or the hub cache); one that cannot be had is skipped with
    one `warn` line saying why ("none" skips it on purpose)."""
    scorers = Scorers()
    tries = {
        "dino": (dino, lambda: DinoStructure(dino, device).load()),
        "clip": (clip, lambda: ClipScorer(clip, device).load()),
        "lpips": (lpips, lambda: Lpips(device, net=lpips)),
    }
    for name, (spec, make) in tries.items():
        measures = [m for m, need in NEEDS.items() if need == name]
        if spec.lower() == "none":
            reason = f"--{name} none"
        else:
            try:
                setattr(scorers, name, make())
                continue
            except MetricUnavailable as err:
                reason = str(err)
        for m in measures:
            scorers.skipped[m] = reason
        warn(f"skipping {', '.join(measures)}: {reason}")
    return scorers


def score(source: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, target: str,
          scorers: Scorers) -> dict[str, float | None]:
    """The seven measures of one edit: source and edited (3, 512, 512) in [0, 1], mask (512, 512) with 1 where
    the benchmark says the picture is edited. Background measures use 1 - mask; None where a measure is skipped
    or its region is empty."""
    keep = 1 - mask
    out: dict[str, float | None] = {
        "structure_distance": scorers.dino(source, edited) if scorers.dino is not None else None,
        "psnr": pie_psnr(source, edited, keep),
        "lpips": scorers.lpips(source, edited, keep) if scorers.lpips is not None else None,
        "mse": pie_mse(source, edited, keep),
        "ssim": pie_ssim(source, edited, keep),
        "clip_whole": None,
        "clip_edited": None,
    }
    if scorers.clip is not None:
        text = scorers.clip.text_features([target])[0]
        region = mask.sum() > 0
        images = torch.stack([edited, pie_clip_region(edited, mask)] if region else [edited])
        feats = scorers.clip.image_features(images)
        out["clip_whole"] = clip_score(feats[0], text)
        out["clip_edited"] = clip_score(feats[1], text) if region else None
    return out


def score_files(entry: PieEntry, edited_png: Path, scorers: Scorers) -> dict[str, float | None]:
    """Score an entry's written edit against its original picture, both at the benchmark's 512x512 (a picture of
    another size is centre-cropped and resized with Lanczos, as pictures are loaded for editing)."""
    from p2p_cli.render.load import picture_at

    size = (MASK_SIDE, MASK_SIDE)
    source, edited = picture_at(entry.image, size), picture_at(edited_png, size)
    mask = torch.from_numpy(decode_mask(entry.mask))
    return score(source, edited, mask, entry.target, scorers)


SKIPPED, EMPTY = "skipped", "empty"  # why a measure has no mean: its network was not loaded / no entry had a region


def summarise(rows: list[dict], skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """Means of each measure over the scored rows, per kind (in id order) and overall. `entries` counts the
    scored rows; `counts` the values each measure's mean is over: it leaves out the rows where the measure is None
    (its network skipped, or its region empty: as the evaluator's "nan"); `unscored` says why a measure has no
    mean: "skipped" (in `skipped`, measure -> reason: its network was not loaded) or "empty" (no row had a region
    for it), the table's marks."""
    skipped = skipped or {}

    def means(chosen: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {"entries": len(chosen), "means": {}, "counts": {}, "unscored": {}}
        for m in MEASURES:
            values = [r["scores"][m] for r in chosen if r["scores"].get(m) is not None]
            finite = [v for v in values if math.isfinite(v)]
            out["means"][m] = (sum(finite) / len(finite) if len(finite) == len(values) else math.inf) if values \
                else None
            out["counts"][m] = len(values)
            if not values:
                out["unscored"][m] = SKIPPED if m in skipped else EMPTY
        return out

    scored = [r for r in rows if r.get("scores")]
    kinds = {KINDS[k]: means([r for r in scored if r["kind"] == k]) for k in sorted({r["kind"] for r in scored})}
    return {"kinds": kinds, "overall": means(scored)}


def fingerprint(recipe: dict, model_id: str, protocol: str) -> str:
    """What makes an entry's folder: its recipe (after --set), the model and the protocol that made the recipe.
    --resume keeps a folder whose run.json records the same, so it never mixes entries of two protocols."""
    return digest({"recipe": recipe, "model": model_id, "protocol": protocol})


def recorded_protocol(folder: Path) -> str | None:
    """The protocol an entry folder's run.json records (its `pie_bench` block; None: none recorded, or no
    readable run.json)."""
    from p2p_cli.files.outputs import read_record

    record = read_record(folder)
    return _recorded(record, "protocol") if record is not None else None


def recorded_fingerprint(record: dict) -> str | None:
    """The fingerprint an entry's run.json holds (its `pie_bench` block)."""
    return _recorded(record, "fingerprint")


def _recorded(record: dict, key: str) -> str | None:
    """A text value of a run.json's `pie_bench` block (None when the block or the value is not there)."""
    bench = record.get("pie_bench")
    value = bench.get(key) if isinstance(bench, dict) else None
    return value if isinstance(value, str) else None


@dataclass
class EntryWork(runner.Work):
    """One benchmark entry as the runner's work: its row of pie-bench.json grows as it runs."""

    entry: Any = None
    row: dict = field(default_factory=dict)
    started: float = 0.0


def run(model, entries: list[PieEntry], out: Path, settings: Settings, scorers: Scorers, *, folder: Path,
        resume: bool = False, overwrite: bool = False, log: Callable[[str], None] = lambda line: None,
        report: Callable[[BaseException, str], str] | None = None) -> dict[str, Any]:
    """Edit and score every entry through the runner (runs/runner.py); OUT/<id>/ as `p2p edit` writes it,
    OUT/pie-bench.json rewritten (whole) after each entry. With --resume an entry's finished folder is kept (and
    scored again), a damaged one made again in its place. A failing entry is recorded (`status: failed`, `error`:
    report(err, id)'s message) and the next one runs; without `report` the error is raised. Returns the summary
    that pie-bench.json holds."""
    from p2p_cli.api import run_recipe
    from p2p_cli.checks import model_problems
    from p2p_cli.recipe import RecipeError, parse_recipe

    out = Path(out)
    works = [EntryWork(entry.id, out / entry.id, index=i, entry=entry,
                       row={"id": entry.id, "kind": entry.kind, "kind_name": entry.kind_name, "image": str(entry.image),
                            "source": entry.source, "target": entry.target, "folder": str(out / entry.id),
                            "protocol": settings.protocol})
             for i, entry in enumerate(entries)]
    rows: list[dict] = []
    started = time.perf_counter()
    summary: dict[str, Any] = {}

    def do(members: list[EntryWork], model) -> None:
        for work in members:
            work.started = time.perf_counter()
            entry, row = work.entry, work.row
            data, notes = entry_job(entry, settings, joint=model.spec.family.joint)
            for note in notes:
                log(f"{entry.id}: {note}")
            if notes:
                row["notes"] = notes
            work.digest = fingerprint(data, model.id, settings.protocol)
            state = resume_state(work.folder, work.digest, read=recorded_fingerprint) if resume else None
            if state == "finished":
                row["status"], work.kept = "kept", True
            else:
                recipe = parse_recipe(data, entry.id)
                problems = model_problems(recipe, model.spec)
                if problems:
                    raise RecipeError(problems, entry.id)
                label = f"{Path(folder) / 'mapping_file.json'}#{entry.id}"  # run.json's recipe_file
                result = run_recipe(model, recipe, maps=False, recipe_file=label)
                result.save(work.folder, overwrite=overwrite or state == "damaged",
                            extra={"pie_bench": {"entry": entry.id, "kind": entry.kind, "protocol": settings.protocol,
                                                 "fingerprint": work.digest, "folder": str(folder)}})
                row["status"] = "ok"
                work.pictures = len(result.roles)
            row["scores"] = score_files(entry, work.folder / "edit-1.png", scorers)
            work.done = True

    def failed(err: BaseException, label: str | None) -> int:
        if report is None:
            raise err
        work = next(w for w in works if w.label == label)
        work.row["status"], work.row["error"] = "failed", report(err, label)
        return EXIT_FAILED

    def done(work: EntryWork) -> None:
        nonlocal summary
        row = work.row
        row["seconds"] = round(time.perf_counter() - work.started, 3)
        rows.append(row)
        summary = summary_record(rows, entries, folder, model, settings, scorers, time.perf_counter() - started)
        write_summary(out / SUMMARY_FILE, summary)
        log(f"[{len(rows)}/{len(entries)}] {work.entry.id} ({work.entry.kind_name}): {row['status']},"
            f" {row['seconds']:.1f} s")

    runner.run(works, do, models=runner.ModelCache(works, model=model), report=failed, on_done=done)
    return summary


def summary_record(rows: list[dict], entries: list[PieEntry], folder: Path, model, settings: Settings,
                   scorers: Scorers, seconds: float) -> dict[str, Any]:
    """What pie-bench.json holds: the run's settings, each measure's definition and scale, every entry's row,
    and the means per kind and overall."""
    from p2p_cli.files.outputs import library_versions

    return {
        "benchmark": "PIE-Bench",
        "folder": str(folder),
        "model": model.id,
        "settings": {"protocol": settings.protocol, "inversion": settings.inversion,
                     "reweight": settings.reweight, "blend": settings.blend, "overrides": settings.overrides},
        "measures": {m: {"what": what, "scale": scale, "lower_is_better": lower}
                     for m, (what, scale, lower) in MEASURES.items()},
        "skipped_measures": dict(scorers.skipped),
        "entries_chosen": len(entries),
        "entries_done": len(rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "seconds": round(seconds, 3),
        "versions": library_versions(),
        **summarise(rows, scorers.skipped),
        "entries": rows,
    }


def write_summary(path: Path, data: dict) -> Path:
    """Write the summary whole (a temporary file renamed over the old one); inf as a string, never bare."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def table(summary: dict[str, Any]) -> str:
    """The summary as the paper's table: one line per kind and one for all, each measure at the paper's scale
    (Structure x10^3, LPIPS x10^3, MSE x10^4, SSIM x10^2), then an `n (all)` line: how many values each of the
    all line's means is over. `entries` counts the entries scored; a mean over fewer values than its line's
    entries (the others had no region to score) says how many, `12.34 (139)`; a measure with no mean reads
    `skipped` (its network was not loaded) or `empty` (no entry of the line had a region for it), as
    `unscored` says in the JSON. A legend line under the table explains the marks it uses."""
    heads = {"structure_distance": "Struct x1e3 ↓", "psnr": "PSNR ↑", "lpips": "LPIPS x1e3 ↓", "mse": "MSE x1e4 ↓",
             "ssim": "SSIM x1e2 ↑", "clip_whole": "CLIP whole ↑", "clip_edited": "CLIP edited ↑"}
    lines = [f"{'kind':<18} {'entries':>7} " + " ".join(f"{heads[m]:>14}" for m in MEASURES)]
    groups = [*summary["kinds"].items(), ("all", summary["overall"])]
    used: set[str] = set()
    for name, group in groups:
        cells = []
        for m, (_, scale, _) in MEASURES.items():
            v, k = group["means"].get(m), group["counts"][m]
            if v is None:
                cell = group["unscored"][m]
                used.add(cell)
            else:
                cell = f"{v * scale:.2f}" if math.isfinite(v) else "inf"
                if k < group["entries"]:
                    cell += f" ({k})"
                    used.add("fewer")
            cells.append(cell)
        lines.append(f"{name:<18} {group['entries']:>7} " + " ".join(f"{c:>14}" for c in cells))
    counts = summary["overall"]["counts"]
    lines.append(f"{'n (all)':<18} {'':>7} " + " ".join(f"{counts[m]:>14}" for m in MEASURES))
    legend = {"fewer": "(k): the mean of k values, the line's other entries had no region to score",
              SKIPPED: f"{SKIPPED}: the measure's network was not loaded (see skipped_measures)",
              EMPTY: f"{EMPTY}: no entry of the line had a region to score"}
    notes = [text for key, text in legend.items() if key in used]
    return "\n".join(lines + (["; ".join(notes)] if notes else []))
