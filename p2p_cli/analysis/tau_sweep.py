"""Tau sweeps (paper sec. 4, ablation of the injection length): parse value ranges, expand a recipe into one
edit per sweep point, cut it into batches that each carry the source row, run them, pick the best tau."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2p_cli.recipe import CrossSchedule, Edit, Recipe, Window

if TYPE_CHECKING:  # torch only where tensors are made: parsing and expanding a sweep stay light (p2p --help)
    import torch

DEFAULT_STEP = 0.2
MAX_VALUES = 101  # per axis; a finer sweep is a typo more often than a wish
KEPT = ("ssim", "psnr", "lpips", "ssim_bg", "psnr_bg", "lpips_bg", "clip_img")  # how much of the source is kept
EDITED = ("clip", "clip_dir", "change_in", "change")  # how much of the edit happened (higher: more)
CLIP_SCORES = ("clip_img", "clip", "clip_dir")  # the ones that need a CLIP model
LPIPS_SCORES = ("lpips", "lpips_bg")  # the ones that need the lpips package and its weights
MASK_SCORES = ("ssim_bg", "psnr_bg", "lpips_bg", "change_in")  # the ones that need a local-blend mask
# clip_img: cosine similarity of the source's and the edit's CLIP image embeddings (InstructPix2Pix's
# image-image filter).
# change_in: 1 - SSIM to the source inside the local-blend mask (the edited words' region); change: the mean
# absolute pixel change to the source over the whole picture. Both need no model.
LOWER_IS_BETTER = ("lpips", "lpips_bg")


def parse_taus(text: str) -> list[float]:
    """"a:b" (step 0.2), "a:b:step" or "v1,v2,..." (or one value) -> tau values in [0, 1], in that order.

    A range starts at a and goes up by step while it stays <= b: b is included only when it falls on the grid.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty; expected A:B, A:B:STEP or a list such as 0.2,0.5,0.9")
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{text!r}: expected A:B or A:B:STEP, e.g. 0.2:0.8 or 0:1:0.1")
        start, end = _number(parts[0]), _number(parts[1])
        step = _number(parts[2], in_unit=False) if len(parts) == 3 else DEFAULT_STEP
        if start > end:
            raise ValueError(f"{text!r}: start {start:g} is after end {end:g}")
        if step <= 0:
            raise ValueError(f"{text!r}: the step must be above 0, got {step:g}")
        count = math.floor((end - start) / step + 1e-9) + 1
        if count > MAX_VALUES:
            raise ValueError(f"{text!r} gives {count} values; at most {MAX_VALUES}: use a larger step")
        return [round(start + i * step, 9) for i in range(count)]
    values = [_number(part) for part in text.split(",")]
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{text!r}: {value:g} is listed twice")
        seen.add(value)
    if len(values) > MAX_VALUES:
        raise ValueError(f"{text!r} has {len(values)} values; at most {MAX_VALUES}")
    return values


def _number(text: str, in_unit: bool = True) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not math.isfinite(value) or (in_unit and not 0.0 <= value <= 1.0):
        raise ValueError(f"{text.strip()} is outside [0, 1]" if in_unit else f"{text.strip()} is not a finite number")
    return value


def fmt(value: float | None) -> str:
    """A tau as it appears in file names and labels: 0.4, 1, 0.25."""
    return "" if value is None else f"{value:g}"


@dataclass(frozen=True)
class SweepPoint:
    """One (edit, tau, self_tau) of a sweep; tau/self_tau are None on an axis that is not swept."""

    edit: int  # 1-based number of the edit in the recipe
    tau: float | None
    self_tau: float | None
    cross: CrossSchedule  # the point's cross-attention schedule: default [0, tau), per-word windows kept
    self_window: Window  # the point's self-attention window

    @property
    def name(self) -> str:
        """File stem: edit-1-tau-0.4, edit-1-self-0.2, edit-1-tau-0.4-self-0.2."""
        parts = [f"edit-{self.edit}"]
        parts += [f"tau-{fmt(self.tau)}"] if self.tau is not None else []
        parts += [f"self-{fmt(self.self_tau)}"] if self.self_tau is not None else []
        return "-".join(parts)


@dataclass
class Chunk:
    """One sampler run: the source and some sweep points (and the header baselines that fall in it)."""

    recipe: Recipe  # edits[j] is points[j]
    points: list[SweepPoint]
    baselines: list[int]  # recipe edit numbers whose uncontrolled target this run also renders


@dataclass
class Sweep:
    """A recipe expanded to one edit per sweep point; taus None on an axis that is not swept."""

    recipe: Recipe
    taus: list[float] | None
    self_taus: list[float] | None
    edits: list[int]  # 1-based edit numbers swept
    baselines: list[int]  # edit numbers with an uncontrolled target in the header row
    points: list[SweepPoint] = field(default_factory=list)
    expanded: Recipe | None = None  # source + one edit per point, no baselines

    @property
    def rows(self) -> list[float]:
        """Grid rows: the tau values, or the self taus when only those are swept."""
        return self.taus if self.taus is not None else self.self_taus  # type: ignore[return-value]

    @property
    def columns(self) -> list[tuple[int, float | None]]:
        """Grid columns: (edit, self_tau) with self_tau None unless both axes are swept."""
        selfs = self.self_taus if self.taus is not None and self.self_taus is not None else [None]
        return [(k, s) for k in self.edits for s in selfs]

    def place(self, point: SweepPoint) -> tuple[int, int]:
        """(row, column) of a point in the grid."""
        row_value = point.tau if self.taus is not None else point.self_tau
        col_self = point.self_tau if self.taus is not None and self.self_taus is not None else None
        return self.rows.index(row_value), self.columns.index((point.edit, col_self))

    def row_value(self, point: SweepPoint) -> float:
        return point.tau if self.taus is not None else point.self_tau  # type: ignore[return-value]

    def chunks(self, batch_size: int) -> list[Chunk]:
        """Points in runs of at most batch_size; each run is [source, its points, its baselines]."""
        if batch_size < 1:
            raise ValueError("the batch size must be at least 1")
        assert self.expanded is not None
        out, pending = [], list(self.baselines)
        for start in range(0, len(self.points), batch_size):
            points = self.points[start:start + batch_size]
            edits = [e.model_copy() for e in self.expanded.edits[start:start + batch_size]]
            baselines = []
            for j, point in enumerate(points):
                if point.edit in pending:  # the header baseline rides with the edit's first point
                    edits[j].baseline = True
                    pending.remove(point.edit)
                    baselines.append(point.edit)
            out.append(Chunk(self.expanded.model_copy(update={"edits": edits}), points, baselines))
        return out


def expand(recipe: Recipe, taus: list[float] | None, self_taus: list[float] | None, edit: int | None = None,
           baseline: bool = False) -> Sweep:
    """The sweep of a recipe: one edit per (edit, tau, self_tau), the rest of each edit unchanged.

    tau replaces the edit's default cross window with [0, tau) and keeps its per-word windows; self_tau replaces
    its self window with [0, self_tau). An axis that is not swept keeps the edit's own (resolved) window.
    """
    if taus is None and self_taus is None:
        raise ValueError("nothing to sweep: give tau (--tau), self_tau (--self-tau) or both")
    n = len(recipe.edits)
    if edit is not None and not 1 <= edit <= n:
        from p2p_cli.analysis.maps import SpecError

        raise SpecError("edit", f"{edit}: the recipe has {n} edit{'s' if n != 1 else ''} (1 to {n})")
    numbers = [edit] if edit is not None else list(range(1, n + 1))
    wants_baseline = [k for k in numbers if baseline or recipe.baseline or recipe.edits[k - 1].baseline]
    sweep = Sweep(recipe, taus, self_taus, numbers, wants_baseline)
    edits: list[Edit] = []
    for k in numbers:
        original = recipe.edits[k - 1]
        cross, self_window = recipe.cross_for(original), recipe.self_for(original)
        for tau in taus if taus is not None else [None]:
            for self_tau in self_taus if self_taus is not None else [None]:
                point_cross = cross if tau is None else CrossSchedule(default=(0.0, tau), words=cross.words)
                point_self = self_window if self_tau is None else (0.0, self_tau)
                sweep.points.append(SweepPoint(k, tau, self_tau, point_cross, point_self))
                edits.append(original.model_copy(
                    update={"cross_replace": point_cross, "self_replace": point_self, "baseline": False}))
    sweep.expanded = recipe.model_copy(update={"edits": edits, "baseline": False})
    return sweep


# --- running ---------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """Pictures of a sweep, in the order of sweep.points; all (3, H, W) in [0, 1] on the CPU."""

    source: torch.Tensor
    images: list[torch.Tensor]
    masks: list[torch.Tensor | None]  # local-blend mask (H, W) per point, when the edit blends
    baselines: dict[int, torch.Tensor]  # edit number -> uncontrolled target
    chunk_sources: list[torch.Tensor]  # the source row of every run (the same picture each time)
    seconds: dict[str, float]
    layout: dict = field(default_factory=dict)


def run_sweep(model, sweep: Sweep, batch_size: int = 8, *, attention: str = "fused", source_name: str = "recipe",
              progress: Callable[[int, int, int, int], None] | None = None, **run_kwargs) -> SweepResult:
    """Run every chunk with run_edit from the recipe's one initial latent; progress(chunk, chunks, step, steps).

    run_kwargs go to every run_edit (latent, uncond_per_step: one inversion serves every chunk).
    """
    from p2p_cli.engine.pipeline import run_edit

    chunks = sweep.chunks(batch_size)
    images, masks, baselines, sources = [], [], {}, []
    seconds: dict[str, float] = {}
    layout: dict = {}
    for c, chunk in enumerate(chunks):
        step_progress = None if progress is None else (lambda i, t, c=c: progress(c + 1, len(chunks), i, t))
        result = run_edit(model, chunk.recipe, attention=attention, progress=step_progress, source_name=source_name,
                          **run_kwargs)
        for key, value in result.seconds.items():
            seconds[key] = seconds.get(key, 0.0) + value
        layout = result.layout
        sources.append(result.images[0])
        for role, image in zip(result.roles[1:], result.images[1:]):
            kind, _, number = role.partition("-")
            j = int(number)  # 1-based within the chunk
            if kind == "edit":
                images.append(image)
                masks.append(result.masks.get(j))
            else:
                baselines[chunk.points[j - 1].edit] = image
    return SweepResult(sources[0], images, masks, baselines, sources, seconds, layout)


# --- picking ---------------------------------------------------------------------------------------------

_RULE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class PickRule:
    """Per edit, the point with the best `score` among the points where `keep op threshold` holds."""

    keep: str = "ssim"
    op: str = ">="
    threshold: float = 0.5
    score: str = "clip"

    def __str__(self) -> str:
        return f"best {self.score} where {self.keep}{self.op}{self.threshold:g}"


def parse_pick(keep: str, score: str) -> PickRule:
    """--pick-keep "ssim>=0.5" and --pick-by clip -> a PickRule; ValueError names what is wrong."""
    match = _RULE.match(keep)
    if not match:
        raise ValueError(f"--pick-keep {keep!r}: expected METRIC>=VALUE or METRIC<=VALUE, e.g. ssim>=0.5")
    metric, op, value = match.groups()
    if metric not in KEPT:
        raise ValueError(f"--pick-keep {keep!r}: {metric} is not one of {', '.join(KEPT)}")
    if score not in (*EDITED, "auto"):
        raise ValueError(f"--pick-by {score!r}: expected auto or one of {', '.join(EDITED)}")
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"--pick-keep {keep!r}: {value!r} is not a number") from None
    return PickRule(metric, op, threshold, score)


def pick_score(requested: str, has_clip: bool, all_blend: bool) -> str:
    """The score --pick-by names, checked before sampling: "auto" is clip when a CLIP model is there, else the
    change inside the blend mask when every swept edit blends, else the overall change. ValueError says why a
    score cannot be had (a CLIP score without CLIP, change_in for an edit without local_blend)."""
    if requested == "auto":
        return "clip" if has_clip else "change_in" if all_blend else "change"
    if requested in CLIP_SCORES and not has_clip:
        raise ValueError(f"--pick-by {requested} needs CLIP scores; without a CLIP model pick by change_in (edits"
                         " with local_blend) or change, or leave --pick-by at auto")
    if requested == "change_in" and not all_blend:
        raise ValueError("--pick-by change_in needs a local_blend mask in every swept edit; use --pick-by change")
    return requested


def pick(rows: list[dict], rule: PickRule) -> tuple[dict[int, int], list[str]]:
    """Edit number -> index into rows of its picked point, and a note for every edit left without one."""
    picked, notes = {}, []
    for k in sorted({row["edit"] for row in rows}):
        mine = [(i, row) for i, row in enumerate(rows) if row["edit"] == k]
        if all(row.get(rule.score) is None for _, row in mine):
            notes.append(f"edit-{k}: no {rule.score} scores, so no point picked")
            continue
        keeps = [(i, row) for i, row in mine if row.get(rule.keep) is not None and row.get(rule.score) is not None
                 and (row[rule.keep] >= rule.threshold if rule.op == ">=" else row[rule.keep] <= rule.threshold)]
        if not keeps:
            notes.append(f"edit-{k}: no point has {rule.keep}{rule.op}{rule.threshold:g}, so none picked")
            continue
        picked[k] = max(keeps, key=lambda item: item[1][rule.score])[0]
    return picked, notes



# --- scoring ---------------------------------------------------------------------------------------------

COLUMNS = ("edit", "target", "tau", "self_tau", *KEPT, *EDITED, "picked", "image")


def window_text(window: Window) -> str:
    """A window as a CSV cell: "0.8" for [0, 0.8), "0.2-0.6" otherwise."""
    return fmt(window[1]) if window[0] == 0 else f"{fmt(window[0])}-{fmt(window[1])}"


def score_sweep(sweep: Sweep, result: SweepResult, clip=None, lpips=None) -> tuple[list[dict], dict[int, dict]]:
    """One row per point (COLUMNS; None where a metric is unavailable) and the same scores per header baseline.

    clip: a loaded metrics.ClipScorer or None; lpips: a metrics.Lpips or None.
    """
    import torch

    recipe, src = sweep.recipe, result.source
    feats = texts = None
    if clip is not None:
        baseline_edits = sorted(result.baselines)
        feats = clip.image_features(torch.stack([src, *result.images, *(result.baselines[k] for k in baseline_edits)]))
        prompts = [recipe.source] + [e.target for e in recipe.edits]
        texts = clip.text_features(prompts)  # (1 + n, D): source, edit-1 .. edit-n

    def scores(image: torch.Tensor, mask: torch.Tensor | None, edit: int, feature_row: int) -> dict:
        features = None if feats is None else (feats[0], feats[feature_row], texts[0], texts[edit])
        return edit_scores(src, image, mask, lpips=lpips, clip_features=features)

    rows = []
    for i, (point, image, mask) in enumerate(zip(sweep.points, result.images, result.masks)):
        row = {
            "edit": point.edit,
            "target": recipe.edits[point.edit - 1].target,
            "tau": point.tau if point.tau is not None else window_text(point.cross.default),
            "self_tau": point.self_tau if point.self_tau is not None else window_text(point.self_window),
        }
        row.update(scores(image, mask, point.edit, 1 + i))
        row.update(picked=False, image=f"{point.name}.png")
        rows.append(row)
    baselines = {k: scores(result.baselines[k], None, k, 1 + len(result.images) + j)
                 for j, k in enumerate(sorted(result.baselines))}
    return rows, baselines


def edit_scores(src: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None, *, lpips=None,
                clip_features: tuple | None = None) -> dict:
    """Every score of one edited picture against its source ((3, H, W) in [0, 1]), named as KEPT and EDITED; None
    where a score cannot be had (no mask, no LPIPS, no CLIP, no text change). mask (H, W): the local blend's (1:
    edited); clip_features: unit CLIP embeddings (source image, edited image, source text, target text)."""
    from p2p_cli.analysis.metrics import clip_score, directional_similarity, psnr, ssim

    row: dict = {"ssim": ssim(src, image), "psnr": psnr(src, image)}
    row["lpips"] = lpips(src, image) if lpips is not None else None
    keep = None if mask is None else 1.0 - mask  # background: outside the local-blend mask
    row["ssim_bg"] = None if keep is None else ssim(src, image, keep)
    row["psnr_bg"] = None if keep is None else psnr(src, image, keep)
    row["lpips_bg"] = None if keep is None or lpips is None else lpips(src, image, keep)
    inside = None if mask is None else ssim(src, image, mask)
    row["change_in"] = None if inside is None else 1.0 - inside
    row["change"] = float((image.float() - src.float()).abs().mean())
    if clip_features is not None:
        src_feature, feature, src_text, text = clip_features
        row["clip_img"] = float(src_feature @ feature)
        row["clip"] = clip_score(feature, text)
        row["clip_dir"] = directional_similarity(src_feature, feature, src_text, text)
    else:
        row["clip_img"] = row["clip"] = row["clip_dir"] = None
    return row


def csv_cell(value) -> str:
    """None -> "", floats to 6 significant digits (inf stays inf), booleans as 1/0."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return str(value)
