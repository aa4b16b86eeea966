"""The app's runs, without gradio: each model loaded once and shared, one run at a time per model, a run that can
be stopped between steps, and its pictures written as `p2p edit` writes them (Result.save)."""

from __future__ import annotations

import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_cli.app.controls import PAINTED, Controls, recipe_yaml


class Stopped(Exception):
    """A run stopped by its user (the Stop button, or a closed page) between two steps."""


@dataclass
class Outcome:
    """One finished run: its folder (the files `p2p edit` writes, recipe.yaml and command.txt) and its pictures."""

    folder: Path
    pictures: list[tuple[str, str]]  # (path, caption): the source, each edit, each baseline
    command: str
    recipe: str  # the recipe as YAML
    result: Any  # api.Result (the attention maps of the Attention tab)
    seconds: float

    @property
    def files(self) -> list[str]:
        """Every file of the folder, for download (attention pictures left out: they stay in attention/)."""
        return sorted(str(p) for p in self.folder.iterdir() if p.is_file())


class Runner:
    """Loads each model once (the first run that needs it) and runs recipes on it, one at a time per model."""

    def __init__(self, device: str = "auto", dtype: str = "auto", out: Path | None = None, keep: int = 8):
        self.device, self.dtype = device, dtype
        self.out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="p2p-ui-"))
        self.keep = keep  # run folders kept on disk (the oldest go first)
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._count = 0

    def model(self, name: str):
        """The loaded model (loading it on first use)."""
        from p2p_cli.api import load_model

        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._models:
                self._models[name] = load_model(name, device=self.device, dtype=self.dtype)
            return self._models[name]

    def run(self, controls: Controls, progress: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None) -> Outcome:
        """Run the controls' recipe (RecipeError before anything loads if it is invalid) and write its folder; a
        real picture's inversion comes from the inversion cache when this picture was inverted with these settings."""
        from p2p_cli.api import run_recipe
        from p2p_cli.analysis.maps import VizSpec

        recipe = controls.recipe()
        model = self.model(controls.model)
        stop = stop or threading.Event()

        def step(done: int, total: int) -> None:
            if stop.is_set():
                raise Stopped(f"stopped at step {done} of {total}")
            if progress is not None:
                progress(done, total)

        start = time.perf_counter()
        with self._locks[controls.model]:
            if stop.is_set():
                raise Stopped("stopped before it started")
            result = run_recipe(model, recipe, baseline=controls.baseline, maps=VizSpec() if controls.attention else False,
                              progress=step, recipe_file=controls.label, overrides=controls.settings(len(recipe.edits)))
        with self._guard:
            self._count += 1
            folder = self.out / f"run-{self._count:04d}" / recipe.name
        result.save(folder)
        if recipe.image is not None:  # the folder's recipe and command line name its own copy of the picture
            shutil.copyfile(recipe.image, folder / controls.picture_copy)
            recipe = recipe.model_copy(update={"image": controls.picture_copy})
        if recipe.mask is not None:
            shutil.copyfile(recipe.mask, folder / PAINTED)
            recipe = recipe.model_copy(update={"mask": PAINTED})
        text = recipe_yaml(recipe)
        (folder / "recipe.yaml").write_text(text, encoding="utf-8")
        command = controls.command()
        (folder / "command.txt").write_text(command + "\n", encoding="utf-8")
        self._tidy()
        return Outcome(folder=folder, pictures=pictures(folder, result), command=command, recipe=text,
                       result=result, seconds=time.perf_counter() - start)

    def sweep(self, controls: Controls, taus: str, self_taus: str = "",
              progress: Callable[[int, int], None] | None = None, stop: threading.Event | None = None) -> Outcome:
        """A tau sweep of the controls' recipe (`p2p sweep recipe.yaml --tau ... --clip none`): its folder holds
        sweep.png (the grid, scored without CLIP as offline) and tradeoff.png."""
        from p2p_cli.analysis.metrics import Lpips, MetricUnavailable
        from p2p_cli.analysis.tau_sweep import expand, parse_taus, pick_score, score_sweep
        from p2p_cli.api import sweep
        from p2p_cli.recipe import RecipeError
        from p2p_cli.render.images import save_png
        from p2p_cli.render.sweep_plots import sweep_grid, tradeoff_plot

        recipe = controls.recipe()
        if recipe.image is not None:
            raise RecipeError(["image: the sweep edits generated pictures only (as p2p sweep); clear the picture"],
                              controls.label)
        values = {}
        for option, text in (("tau", taus), ("self tau", self_taus)):
            try:
                values[option] = parse_taus(text) if text.strip() else None
            except ValueError as err:
                raise RecipeError([f"{option} {text}: {err}"], "sweep") from None
        if values["tau"] is None and values["self tau"] is None:
            raise RecipeError(["tau: nothing to sweep: give cross taus (0.2:1, 0.2:1:0.1 or 0.2,0.5,0.8), self taus,"
                               " or both"], "sweep")
        try:
            plan = expand(recipe, values["tau"], values["self tau"], baseline=controls.baseline)
        except ValueError as err:
            raise RecipeError([str(err)], "sweep") from None
        model = self.model(controls.model)
        stop = stop or threading.Event()

        def step(chunk: int, chunks: int, i: int, steps: int) -> None:
            if stop.is_set():
                raise Stopped(f"stopped in batch {chunk} of {chunks}")
            if progress is not None:
                progress((chunk - 1) * steps + i, chunks * steps)

        start = time.perf_counter()
        with self._locks[controls.model]:
            plan, result = sweep(model, plan, progress=step, source_name="recipe.yaml")
        try:  # as p2p sweep: LPIPS when its package and weights are here
            lpips = Lpips(model.device)
        except MetricUnavailable:
            lpips = None
        rows, baseline_rows = score_sweep(plan, result, None, lpips)
        blends = all(recipe.edits[k - 1].local_blend is not None for k in plan.edits)
        with self._guard:
            self._count += 1
            folder = self.out / f"run-{self._count:04d}" / recipe.name / "sweep"
        folder.mkdir(parents=True)
        save_png(sweep_grid(plan, result, rows, baseline_rows, set()), folder / "sweep.png")
        save_png(tradeoff_plot(plan, rows, kept="ssim", edited=pick_score("auto", False, blends)),
                 folder / "tradeoff.png")
        text = recipe_yaml(recipe)
        (folder / "recipe.yaml").write_text(text, encoding="utf-8")
        args = ["p2p", "sweep", "recipe.yaml"] + [f"--{o.replace(' ', '-')}={v}" for o, v in
                                                  (("tau", taus.strip()), ("self tau", self_taus.strip())) if v]
        command = " ".join(shlex.quote(a) for a in args + (["--baseline"] if controls.baseline else []) +
                           ["--clip", "none"])
        (folder / "command.txt").write_text(command + "\n", encoding="utf-8")
        self._tidy()
        pictures = [(str(folder / "sweep.png"), "sweep"), (str(folder / "tradeoff.png"), "trade-off")]
        return Outcome(folder=folder, pictures=pictures, command=command, recipe=text, result=result,
                       seconds=time.perf_counter() - start)

    def _tidy(self) -> None:
        runs = sorted(p for p in self.out.glob("run-*") if p.is_dir())
        for old in runs[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def pictures(folder: Path, result) -> list[tuple[str, str]]:
    """The run's PNGs in batch order, each with its caption (role and prompt)."""
    out = [(str(folder / "input.png"), "input: the picture as edited")] if (folder / "input.png").exists() else []
    for role, prompt in zip(result.roles, result.prompts):
        path = folder / f"{role}.png"
        if path.exists():
            out.append((str(path), f"{role}: {prompt}"))
    return out
