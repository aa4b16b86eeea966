"""Edit datasets from caption pairs (InstructPix2Pix's recipe, sec. 3.1.2): each pair (source caption, target
caption) is sampled K times, each sample with its own seed and its own cross and self windows drawn from given
ranges, every sample is scored with the sweep's metrics, and a keep filter ("clip_img>=0.75,clip_dir>=0.2")
decides which go into the dataset. Everything here is drawn from the pair's index and the base seed, so the same
command makes the same dataset on any number of processes, and a resumed run the same as an unbroken one.

Torch-free: reading pairs, drawing samples and parsing filters run before any model loads (api.dataset runs them).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_cli.fingerprint import fingerprint as digest
from p2p_cli.analysis.tau_sweep import CLIP_SCORES, EDITED, KEPT, LPIPS_SCORES, MASK_SCORES
from p2p_cli.overrides import apply_overrides
from p2p_cli.paths import read_regular_text
from p2p_cli.recipe import Recipe, RecipeError, parse_recipe

METRICS = (*KEPT, *EDITED)  # every score a sample gets (None where it cannot be had)
EDIT_FIELDS = ("type", "reweight", "local_blend", "cross_replace", "self_replace")  # a pair may set these
DEFAULT_KEEP = "clip_img>=0.75,clip_dir>=0.2"  # InstructPix2Pix's image-image and directional CLIP filters
_RULE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+|inf)\s*$")


@dataclass(frozen=True)
class Rule:
    """One condition of a keep filter: metric op value."""

    metric: str
    op: str
    value: float

    def holds(self, scores: dict) -> bool:
        """Whether the scores pass; a score that could not be had (None) does not."""
        x = scores.get(self.metric)
        if x is None:
            return False
        return {">=": x >= self.value, "<=": x <= self.value, ">": x > self.value, "<": x < self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_keep(text: str | None) -> list[Rule]:
    """"clip_img>=0.75,clip_dir>=0.2" -> rules that must all hold; "" or "none" keeps every sample. ValueError
    names the part that is wrong."""
    if text is None or text.strip().lower() in ("", "none", "all"):
        return []
    rules = []
    for part in text.split(","):
        match = _RULE.match(part)
        if not match:
            raise ValueError(f"--keep {text!r}: {part.strip()!r} is not METRIC>=VALUE (or <=, >, <), e.g."
                             " clip_dir>=0.2")
        metric, op, value = match.groups()
        if metric not in METRICS:
            raise ValueError(f"--keep {text!r}: {metric} is not a score; the scores are {', '.join(METRICS)}")
        rules.append(Rule(metric, op, float(value)))
    return rules


def needs(rules: list[Rule]) -> dict[str, list[str]]:
    """What the rules need beyond the pictures: {"clip": [...], "lpips": [...], "mask": [...]} (metric names)."""
    return {"clip": [str(r) for r in rules if r.metric in CLIP_SCORES],
            "lpips": [str(r) for r in rules if r.metric in LPIPS_SCORES],
            "mask": [str(r) for r in rules if r.metric in MASK_SCORES]}


def parse_range(option: str, text: str) -> tuple[float, float]:
    """"0.1:0.9" -> (0.1, 0.9), "0.8" -> (0.8, 0.8): a window's end is drawn uniformly from it."""
    parts = str(text).split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{option} {text}: expected LO:HI (e.g. 0.1:0.9) or one value in [0, 1]") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(0.0 <= v <= 1.0 for v in values) or values[0] > values[1]:
        raise ValueError(f"{option} {text}: expected LO:HI with 0 <= LO <= HI <= 1, e.g. 0.1:0.9")
    return values[0], values[1]


@dataclass
class Pair:
    """One line of a pairs file: the captions and the edit's own fields, with its place in the file."""

    index: int  # the line number - 1: seeds are drawn from it
    label: str  # "pairs.jsonl#4" (the line) in messages
    source: str
    target: str
    edit: dict = field(default_factory=dict)  # the optional edit fields (EDIT_FIELDS) the line sets

    def as_dict(self) -> dict:
        return {"source": self.source, "target": self.target, **self.edit}


@dataclass
class Sample:
    """Sample j of a pair: its seed, its windows and the recipe that makes it."""

    pair: Pair
    number: int
    seed: int
    cross: Any  # the cross_replace the recipe got: drawn tau or the pair's own
    self_window: Any
    recipe: Recipe


def read_pairs(path: str | Path, text: str | None = None) -> tuple[list[Pair], list[RecipeError]]:
    """The pairs of a JSON-lines file (one object a line: source, target, optional edit fields), and a
    RecipeError for each line that is not one (labelled "path#line"); blank lines are skipped."""
    source = str(path)
    if text is None:
        text = read_regular_text(path)
    pairs, bad = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        label = f"{source}#{number}"
        try:
            data = json.loads(line)
        except ValueError as err:
            bad.append(RecipeError([f"not a JSON object: {err}; each line is"
                                    ' {"source": "...", "target": "..."}'], label))
            continue
        problems = []
        if not isinstance(data, dict):
            bad.append(RecipeError([f"expected a JSON object, got {type(data).__name__}"], label))
            continue
        for key in ("source", "target"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                what = "caption of the picture" if key == "source" else "edited caption"
                problems.append(f"{key}: required, the {what} (text)")
        extra = sorted(set(data) - {"source", "target", *EDIT_FIELDS})
        if extra:
            problems.append(f"{', '.join(extra)}: not a pair field; a pair has source, target and the edit fields"
                            f" {', '.join(EDIT_FIELDS)} (others come from --set)")
        if problems:
            bad.append(RecipeError(problems, label))
            continue
        pairs.append(Pair(number - 1, label, data["source"], data["target"],
                          {k: data[k] for k in EDIT_FIELDS if k in data}))
    return pairs, bad


def sample_seed(seed: int, index: int, number: int) -> int:
    """Sample `number` of the pair at `index`: a seed of its own, the same whatever K and the number of processes."""
    digest = hashlib.sha256(f"p2p-dataset:{seed}:{index}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def draw(lo_hi: tuple[float, float], u: float) -> float:
    lo, hi = lo_hi
    return round(lo + (hi - lo) * u, 4)


def samples(pair: Pair, k: int, *, seed: int, cross: tuple[float, float], self_range: tuple[float, float],
            overrides: list[str] | tuple = ()) -> list[Sample]:
    """The pair's K samples as recipes of one edit each: seed from (seed, pair index, j), cross_replace and
    self_replace drawn uniformly from the ranges (unless the pair sets them); `overrides` ("key=value", as --set)
    apply to every recipe. RecipeError (labelled as the pair) when the pair's edit is not a valid one."""
    out = []
    for j in range(k):
        s = sample_seed(seed, pair.index, j)
        rng = random.Random(s)
        u_cross, u_self = rng.random(), rng.random()  # both drawn always: one axis fixed leaves the other the same
        edit = {"target": pair.target, **pair.edit}
        edit.setdefault("cross_replace", draw(cross, u_cross))
        edit.setdefault("self_replace", draw(self_range, u_self))
        data: dict = {"name": f"pair-{pair.index}-{j}", "source": pair.source, "seed": s, "edits": [edit]}
        if overrides:
            try:
                data = apply_overrides(data, list(overrides))
            except ValueError as err:
                raise RecipeError([str(err)], pair.label) from None
            data["seed"], data["name"] = s, f"pair-{pair.index}-{j}"  # the seed is the sample's own
        recipe = parse_recipe(data, pair.label)
        out.append(Sample(pair, j, s, edit["cross_replace"], edit["self_replace"], recipe))
    return out


def check_pair(pair: Pair, rules: list[Rule]) -> list[str]:
    """Problems of a pair the keep filter makes: a score that needs a local-blend mask when the edit has none."""
    wanted = needs(rules)["mask"]
    if wanted and not pair.edit.get("local_blend"):
        return [f"--keep {', '.join(wanted)} needs a local-blend mask; this pair has no local_blend (give it"
                ' "local_blend": {"words": [...]} or keep by scores without a mask)']
    return []


def fingerprint(pair: Pair, **how: Any) -> str:
    """What makes a pair's folder: the pair, and every setting that changes its samples or which are kept."""
    return digest({"pair": pair.as_dict(), "index": pair.index, **{k: how[k] for k in sorted(how)}})


def json_number(value):
    """Scores as JSON has them: an infinite PSNR (identical pictures) or NaN becomes None."""
    return value if not isinstance(value, float) or math.isfinite(value) else None
