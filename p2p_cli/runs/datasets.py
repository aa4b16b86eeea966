"""Caption pairs as the runner's works (`p2p dataset`, `p2p.dataset`): each pair sampled K times, scored, kept by
rules, written as OUT/pairs/<index>/ (the sampling plan is analysis/dataset.py, the files files/dataset.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2p_cli.api import run_recipe
from p2p_cli.models import Model
from p2p_cli.recipe import RecipeError
from p2p_cli.runs import runner
from p2p_cli.runs.records import EXIT_FAILED
from p2p_cli.user_pipeline import as_model


@dataclass
class DatasetRun:
    """What dataset() did in this process: pairs done, kept from an earlier run (resume), failed (label, error)
    and invalid (RecipeError, every process lists the same); samples made and kept, pictures made, the metadata
    file when it was assembled, every valid pair's (index, input_sha256) for assembling later, and the works (the
    runner's record of each of this process's pairs, for runner.settle)."""

    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[tuple[str, BaseException]] = field(default_factory=list)
    invalid: list[RecipeError] = field(default_factory=list)
    samples: int = 0
    kept: int = 0
    pictures: int = 0
    metadata: Path | None = None
    pairs: list[tuple[int, str]] = field(default_factory=list)
    works: list[runner.Work] = field(default_factory=list)


@dataclass
class PairWork(runner.Work):
    """One caption pair: its samples (drawn before any model loads) and the folder they go to."""

    pair: Any = None
    drawn: list = field(default_factory=list)
    kept_samples: int = 0

    @property
    def name(self) -> str:
        return f"{self.pair.index:06d}"


def dataset(model: Model | Any, pairs: str | Path | list[dict], out: str | Path, *, samples: int = 4,
            cross: tuple[float, float] = (0.1, 0.9), self_range: tuple[float, float] = (0.1, 0.9),
            keep: str | None = None, seed: int = 0, clip: Any = None, lpips: Any = None,
            overrides: list[str] | tuple = (), resume: bool = False, overwrite: bool = False,
            attention: str = "fused", share: tuple[int, int] = (0, 1), assemble: bool = True,
            log: Callable[[str], None] | None = None,
            on_invalid: Callable[[RecipeError], None] | None = None,
            report: runner.Report | None = None) -> DatasetRun:
    """An edit dataset from caption pairs (analysis/dataset.py, files/dataset.py): each pair of a JSON-lines file
    (or list of dicts) sampled `samples` times, each sample with its own seed and windows drawn from `cross` and
    `self_range`, scored with the sweep's metrics, kept when every `keep` rule holds ("clip_img>=0.75,
    clip_dir>=0.2", the default; "none" keeps all). Writes OUT/pairs/<index>/ per pair and OUT/metadata.jsonl.

    clip: a metrics.ClipScorer (or a CLIP folder / hub id); lpips: a metrics.Lpips. A rule naming a score that
    cannot be had raises ValueError before any sampling. share (rank, world): this process's share of the valid
    pairs (runs.launch.shard: the k-th to rank k mod world); with assemble, metadata.jsonl is written once they are
    done (under a launcher, one process assembles when all are done: files.dataset.assemble(out, run.pairs)).
    Pairs that are invalid (heard by on_invalid before any sampling) or fail (heard by report(err, label)) are
    listed in the result and the others go on."""
    model = as_model(model)
    from p2p_cli.analysis import dataset as plan
    from p2p_cli.analysis.metrics import ClipScorer
    from p2p_cli.files import dataset as disk
    from p2p_cli.runs.launch import shard

    log = log or (lambda message: None)
    rules = plan.parse_keep(plan.DEFAULT_KEEP if keep is None else keep)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    wanted = plan.needs(rules)
    if isinstance(clip, (str, Path)):
        clip = ClipScorer(str(clip), model.device).load()
    if wanted["clip"] and clip is None:
        raise ValueError(f"--keep {', '.join(wanted['clip'])} needs a CLIP model (--clip a CLIPModel folder or hub"
                         " id); or keep by scores without one (ssim, psnr, change; with local_blend ssim_bg, psnr_bg,"
                         " change_in), or --keep none")
    if wanted["lpips"] and lpips is None:
        raise ValueError(f"--keep {', '.join(wanted['lpips'])} needs LPIPS (the lpips package and its weights)")
    run = DatasetRun()
    if isinstance(pairs, (str, Path)):
        found, run.invalid = plan.read_pairs(pairs)
    else:
        found = [plan.Pair(i, f"pairs[{i}]", p["source"], p["target"], {k: p[k] for k in plan.EDIT_FIELDS if k in p})
                 for i, p in enumerate(pairs)]
    how = {"samples": samples, "cross": list(cross), "self": list(self_range), "seed": seed,
           "keep": [str(r) for r in rules], "clip": getattr(clip, "spec", None), "model": model.id,
           "overrides": list(overrides), "attention": attention}
    works = []
    for pair in found:  # every process checks every pair: each makes the same split
        try:
            drawn = plan.samples(pair, samples, seed=seed, cross=cross, self_range=self_range, overrides=overrides)
            if problems := plan.check_pair(pair, rules):
                raise RecipeError(problems, pair.label)
        except RecipeError as err:
            run.invalid.append(err)
            continue
        works.append(PairWork(pair.label, disk.pair_folder(out, pair.index), plan.fingerprint(pair, **how),
                              index=pair.index, pair=pair, drawn=drawn))
    run.pairs = [(work.pair.index, work.digest) for work in works]
    for err in run.invalid if on_invalid is not None else []:
        on_invalid(err)
    rank, world = share
    run.works = mine = shard(works, rank, world)
    runner.resume(mine, resume=resume, overwrite=overwrite, record_file=disk.RECORD)
    for work in mine:
        if work.kept:
            work.done = True
            run.skipped.append(work.pair.index)
            log(f"{work.label}: kept {work.folder}/ (finished earlier: --resume)")

    def do(members: list[PairWork], model) -> None:
        for work in members:
            _make_pair(work, model, run, rules=rules, clip=clip, lpips=lpips, attention=attention, how=how,
                       replace=overwrite or work.replace)
            run.done.append(work.pair.index)
            log(f"{work.label}: {work.kept_samples} of {len(work.drawn)} samples kept, {work.folder}/")

    def failed(err: BaseException, label: str | None) -> int:
        code = EXIT_FAILED if report is None else report(err, label)
        run.failed.append((label, err))
        return code

    runner.run(mine, do, models=runner.ModelCache(mine, model=model), report=failed)
    if assemble and world == 1:
        run.metadata, _ = disk.assemble(out, run.pairs)
    return run


def _make_pair(work: PairWork, model, run: DatasetRun, *, rules, clip, lpips, attention: str, how: dict,
               replace: bool) -> None:
    """Sample, score and keep one pair's edits; write its folder whole."""
    from p2p_cli.analysis import dataset as plan
    from p2p_cli.analysis.tau_sweep import edit_scores
    from p2p_cli.files import dataset as disk
    from p2p_cli.files.outputs import check_free

    pair = work.pair
    check_free(work.folder, replace)
    pictures, records = {}, []
    for sample in work.drawn:
        result = run_recipe(model, sample.recipe, maps=False, attention=attention, recipe_file=pair.label)
        source, image = result.run.images[0], result.run.images[1]
        features = None
        if clip is not None:
            images = clip.image_features(torch.stack([source, image]))
            texts = clip.text_features([result.recipe.source, result.recipe.edits[0].target])
            features = (images[0], images[1], texts[0], texts[1])
        scores = edit_scores(source, image, result.run.masks.get(1), lpips=lpips, clip_features=features)
        kept = all(rule.holds(scores) for rule in rules)
        recipe = result.recipe
        record = {"sample": sample.number, "seed": sample.seed, "type": recipe.edits[0].type,
                  "cross_replace": sample.cross, "self_replace": sample.self_window,
                  "cross_window": list(recipe.cross_for(recipe.edits[0]).default),
                  "self_window": list(recipe.self_for(recipe.edits[0])),
                  "scores": {k: plan.json_number(v) for k, v in scores.items()}, "kept": kept,
                  "input": None, "edited": None}
        if kept:
            record.update(input=f"input-{sample.number}.png", edited=f"edited-{sample.number}.png")
            pictures[record["input"]], pictures[record["edited"]] = source, image
        records.append(record)
        work.pictures += len(result.roles)
    disk.write_pair(work.folder, {"index": pair.index, "line": pair.index + 1, "source": pair.source,
                                  "target": pair.target, "edit": pair.edit, "input_sha256": work.digest,
                                  "settings": how, "samples": records}, pictures, replace)
    work.done = True
    work.kept_samples = sum(r["kept"] for r in records)
    run.samples += len(records)
    run.kept += work.kept_samples
    run.pictures += work.pictures
