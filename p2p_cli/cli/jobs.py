"""What edit and attn-viz share: jobs read and validated before any model loads, run one model at a time through
the API, their folders written whole; the warnings validate also prints."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from p2p_cli.cli.common import STDIN_ONCE, check_name, dtype_name, model_key
from p2p_cli.cli.errors import EXIT_INVALID, EXIT_OK, UsageError, name_edits, report
from p2p_cli.checks import problems_before_loading
from p2p_cli.files.outputs import OutputPathError, check_free, check_out_dir
from p2p_cli.files.real import resolve_mask
from p2p_cli.overrides import inline_recipes, read_recipes
from p2p_cli.recipe import BATCH_SHARED, Recipe, RecipeError

if TYPE_CHECKING:  # the engine (torch, diffusers) is imported once a command runs a model, not for help
    from p2p_cli.models import Model


@dataclass
class Job:
    """One recipe of the command line and where it stands."""

    path: str
    recipe: Recipe
    folder: Path
    spec: str  # the model: hub id, resolved local path or "shapes"
    done: bool = False
    code: int = EXIT_OK  # EXIT_INVALID or EXIT_FAILED once it has failed
    seconds: dict[str, float] = field(default_factory=dict)
    source_only: bool = False  # `p2p attn-viz --prompt`: write the source alone (its identity edit only ran)
    image: Path | None = None  # the recipe's real picture (image:), resolved and checked
    loras: tuple[tuple[str, float], ...] = ()  # the recipe's LoRA files (resolved) and scales
    attention_only: bool = False  # `p2p attn-viz`: folder is <name>/attention/, with the pictures and run.json
    digest: str | None = None  # scale.fingerprint: what makes the folder; run.json records it (--resume)
    kept: bool = False  # --resume found this folder finished
    pictures: int = 0  # the pictures its folder got (source, edits, baselines)

    @property
    def key(self) -> tuple:
        """Jobs with one key share one loaded model: the same weights and the same LoRAs."""
        return (self.spec, self.loras)


def read_jobs(paths: list[str], overrides: list[str], out: Path, model: str | None,
              prompts: list[str] | tuple = (), skipped: list | None = None, loud: bool = True) -> list[Job]:
    """Validate every recipe, and the inline prompts' recipes (reporting all problems of all of them); raise
    typer.Exit(2) if any is invalid. skipped: a list that takes a manifest's invalid lines (the others run); loud:
    report them (under a launcher, rank 0 alone does)."""
    if paths.count("-") > 1:
        raise UsageError(STDIN_ONCE)
    jobs, invalid = [], []
    items = [item for path in paths for item in read_recipes(path, overrides)] + inline_recipes(list(prompts), overrides)
    for label, recipe in items:
        try:
            if isinstance(recipe, RecipeError):
                raise recipe
            check_name(recipe, label)
            spec = model if model is not None else recipe.model
            if problems := problems_before_loading(recipe, model_key(spec), tokenizers=False):  # config files: now
                raise RecipeError(problems, label)
            image = _real_image(recipe, label)
            resolve_mask(recipe, label)
            loras = ()
            if recipe.loras:
                from p2p_cli.api import anchored  # (these import torch)
                from p2p_cli.files.real import recipe_loras

                loras = recipe_loras(recipe, label)
                recipe = anchored(recipe, label)  # run.json's recipe names the files by absolute path
        except RecipeError as err:
            if skipped is not None and is_manifest_line(label):  # a manifest goes on without its bad lines
                _skip(err if err.source == label else RecipeError(err.problems, label), skipped, loud)
                continue
            invalid.append(err)
            continue
        warn(recipe, label, model)
        spec = model if model is not None else recipe.model
        jobs.append(Job(label, recipe, Path(out) / recipe.name, model_key(spec), image=image, loras=loras))
    if invalid:
        for err in invalid:
            report(err)
        raise typer.Exit(EXIT_INVALID)
    folders: dict[Path, str] = {}
    kept = []
    for job in jobs:
        if job.folder in folders:
            if skipped is not None and is_manifest_line(job.path):  # a manifest's line: skipped like a bad one
                _skip(RecipeError([f"name: {job.recipe.name!r} is also the name of {folders[job.folder]}: both would"
                                   f" write {job.folder}/; give this one a name of its own"], job.path), skipped, loud)
                continue
            raise UsageError(
                f"{folders[job.folder]} and {job.path} would both write {job.folder}/; give one another name"
                f" (name: in the recipe)"
            )
        folders[job.folder] = job.path
        kept.append(job)
    return kept


def _skip(err: RecipeError, skipped: list, loud: bool = True) -> None:
    """Report a manifest line that cannot run and list it for failures.jsonl."""
    if loud:
        report(err)
    skipped.append({"recipe": err.source, "line": int(err.source.rsplit("#", 1)[1]), "status": "invalid",
                    "exit": EXIT_INVALID, "problems": err.problems})


def is_manifest_line(label: str) -> bool:
    """Whether a job's label names one recipe of a file of several ("path#k": a YAML stream or JSON lines)."""
    head, sep, tail = label.rpartition("#")
    return bool(sep and head and tail.isdigit())


def check_out(out: Path) -> None:
    """--out must be a folder or able to become one (checked before any model loads)."""
    try:
        check_out_dir(out)
    except OutputPathError as err:
        raise UsageError(str(err)) from None


def check_folders(jobs: list[Job], overwrite: bool, debug: bool) -> None:
    """Each job's OUT/<name> can be written (free, or replaceable with --overwrite; not a file or a link): a job
    whose folder cannot fails alone (exit 1), before any model loads."""
    for job in jobs:
        if not job.done:
            try:
                check_free(job.folder, overwrite)
            except (FileExistsError, OutputPathError) as err:
                job.done, job.code = True, report(err, debug=debug)


def run_jobs(jobs: list[Job], device, dtype, *, log, bar, debug: bool, on_done=None, batch_rows: int | None = None,
             **how) -> None:
    """Run the jobs in order, loading each model once and dropping it after its last job; on_done(job) after each
    job that ran (or failed). batch_rows: jobs that can share a batch run together (batch_of)."""
    import torch

    from p2p_cli.loras import apply_loras
    from p2p_cli.models import load_model
    from p2p_cli.checks import model_problems

    models: dict[str, Model] = {}
    left = {key: sum(1 for j in jobs if j.key == key and not j.done) for key in {j.key for j in jobs}}
    for job in jobs:
        if job.done:
            continue
        start = time.perf_counter()
        if job.key not in models:
            n = torch.get_num_threads()
            cpu = f", {n} thread{'s' if n != 1 else ''}" if device.type == "cpu" else ""
            log(f"loading model {job.spec} ({device}, {dtype_name(dtype)}{cpu})"
                + (f" with {len(job.loras)} LoRA(s)" if job.loras else ""))
            try:
                loaded = load_model(job.spec, device.type if device.index is None else str(device),
                                    dtype_name(dtype), allow_pickle=how["allow_pickle"])
                apply_loras(loaded, list(job.loras))
                models[job.key] = loaded
            except BrokenPipeError:
                raise
            except Exception as err:  # every job of this model fails the same way
                code = report(err, debug=debug)
                for other in jobs:
                    if other.key == job.key and not other.done:
                        other.done, other.code = True, code
                continue
            job.seconds["load"] = time.perf_counter() - start
            spec = models[job.key].spec
            for other in jobs:  # every problem on this model (its tokenizers too), before any sampling with it
                if other.key == job.key and not other.done:
                    problems = model_problems(other.recipe, spec)
                    if problems:
                        other.done, other.code = True, report(RecipeError(problems, other.path), debug=debug)
        group = batch_of(job, jobs, batch_rows, how.get("baseline", False)) if batch_rows and not job.done else [job]
        if len(group) > 1:
            run_group(group, models[job.key], start=start, log=log, bar=bar, debug=debug, **how)
        elif not job.done:
            try:
                run_one(job, models[job.key], start=start, log=log, bar=bar, **how)
            except BrokenPipeError:  # stdout's reader went away: stop quietly (errors.handled)
                raise
            except Exception as err:
                job.done, job.code = True, report(err, where=job.path, debug=debug)
        for member in group[1:]:  # they ran with the first: count them done here, in order
            left[member.key] -= 1
            if on_done is not None:
                on_done(member)
        left[job.key] -= 1
        if on_done is not None:
            on_done(job)
        if left[job.key] == 0:
            models.pop(job.key, None)  # free its memory before the next model loads


SHARED = ("model", *BATCH_SHARED)

def rows_of(job: Job, baseline: bool) -> int:
    """Denoiser rows of a recipe: its prompts (source, edits, baselines), twice with guidance above 1."""
    r = job.recipe
    return (1 + len(r.edits) + len(r.baseline_edits(baseline))) * (2 if r.guidance > 1 else 1)


def batchable(job: Job) -> bool:
    return not (job.done or job.source_only or job.attention_only or job.recipe.image or job.recipe.mask)


def batch_of(first: Job, jobs: list[Job], limit: int, baseline: bool) -> list[Job]:
    """first and the jobs after it that can run in its batch: same model, what recipe.BATCH_SHARED names equal, no
    real picture or mask, at most `limit` rows in all (a recipe with more rows than that runs alone)."""
    if not batchable(first):
        return [first]
    group, rows = [first], rows_of(first, baseline)
    key = [repr(getattr(first.recipe, k)) for k in SHARED]
    for other in jobs[jobs.index(first) + 1 :]:
        if (other.key == first.key and batchable(other) and [repr(getattr(other.recipe, k)) for k in SHARED] == key
                and rows + rows_of(other, baseline) <= limit):
            group.append(other)
            rows += rows_of(other, baseline)
    return group


def run_group(group: list[Job], model: Model, *, start: float, log, bar, debug: bool, overrides, baseline, overwrite,
              json_, attention, allow_pickle, viz=None) -> None:
    """Run jobs in one batch (api.edit_many) and write each folder as run_one does; if the batch fails, each job
    runs alone, so one bad recipe fails alone."""
    from p2p_cli.api import edit_many

    log(f"{len(group)} recipes in one batch: {', '.join(j.recipe.name for j in group)}")
    try:
        with phase(bar, f"{len(group)} recipes") as progress:
            results = edit_many(model, [j.recipe for j in group], baseline=baseline, attention=attention,
                                progress=progress, recipe_files=[j.path for j in group], overrides=overrides)
    except BrokenPipeError:
        raise
    except Exception as err:
        log(f"the batch failed ({err}); running its recipes one by one")
        results = None
    for job, result in zip(group, results or [None] * len(group)):
        try:
            if result is None:
                run_one(job, model, start=time.perf_counter(), log=log, bar=bar, overrides=overrides, baseline=baseline,
                        overwrite=overwrite, json_=json_, attention=attention, allow_pickle=allow_pickle)
            else:
                finish(job, result, start=start, overwrite=overwrite, json_=json_)
        except BrokenPipeError:
            raise
        except Exception as err:
            job.done, job.code = True, report(err, where=job.path, debug=debug)


def run_one(job: Job, model: Model, *, start: float, log, bar, overrides, baseline, overwrite, json_, attention,
            allow_pickle, viz=None) -> None:
    """Run one recipe through the API (p2p_cli.api.edit) and write its folder with Result.save, in one rename."""
    from p2p_cli.api import MapsError
    from p2p_cli.api import run_recipe

    recipe = job.recipe
    what = "source only" if job.source_only else f"{len(recipe.edits)} edit(s)"
    log(f"{job.path}: {recipe.name}, {what}, {recipe.steps} steps")
    method = recipe.inversion_method
    try:
        with inversion_phases(bar, recipe.name, recipe.steps, method) as invert_progress, \
                phase(bar, recipe.name) as progress:
            result = run_recipe(model, recipe, baseline=baseline, maps=viz or False, attention=attention,
                                progress=progress, invert_progress=invert_progress, recipe_file=job.path,
                                overrides=overrides, source_only=job.source_only)
    except MapsError as err:
        spec_error = err.spec_error
        raise UsageError(spec_error.as_option() if hasattr(spec_error, "as_option") else str(err)) from None
    real = result.real
    if real is not None:
        name = Path(real.path).name
        if real.cached:
            log(f"{recipe.name}: reusing the {method} inversion of {name} from the cache"
                f" ({real.seconds:.1f} s now; inverting it took {real.inversion.seconds:.1f} s)")
        else:
            log(f"{recipe.name}: inverted {name} ({method}, {recipe.steps} steps) in {real.inversion.seconds:.1f} s")
    finish(job, result, start=start, overwrite=overwrite, json_=json_)


def finish(job: Job, result, *, start: float, overwrite: bool, json_: bool) -> None:
    """Write a job's folder from its Result (in one rename) and say so on stdout."""
    recipe = job.recipe
    result.seconds = {**job.seconds, **result.seconds}
    result.started = start
    record = result.save(job.folder, overwrite, attention_only=job.attention_only,
                         extra={"input_sha256": job.digest} if job.digest else None)
    job.done = True
    job.pictures = len(result.roles)
    files = record["images"]
    if json_:
        line = {
            "name": recipe.name,
            "out": str(job.folder),
            "images": {role: str(job.folder / name) for role, name in files.items()},
            "run": str(job.folder / "run.json"),
            "seconds": record["seconds"],
        }
        if isinstance(record.get("attention"), dict):  # the attention pictures (else the attention mode)
            line["attention"] = {key: str(job.folder / name) for key, name in record["attention"].items()}
        print(json.dumps(line), flush=True)
    elif job.attention_only:
        n = len(record.get("attention") or {})
        print(f"wrote {job.folder}/ ({n} files, {record['seconds']['total']:.1f} s)", flush=True)
    else:
        n = len(result.roles)
        print(f"wrote {job.folder}/ ({n} image{'s' if n != 1 else ''}, {record['seconds']['total']:.1f} s)",
              flush=True)


@contextmanager
def inversion_phases(bar, label: str, steps: int, method: str):
    """The inversion's progress callback: one bar per phase (null-text: the DDIM inversion, then the
    optimisation), each with its own total; None without a bar."""
    if bar is None:
        yield None
        return
    from p2p_cli.cli.common import phase_progress

    phases = ["DDIM inversion", "null-text optimisation"] if method == "null-text" else [f"{method} inversion"]
    update, remove = phase_progress(bar, label, steps, phases)
    started = False

    def progress(done: int, total: int) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        update(done, total)

    try:
        yield progress
    finally:
        if started:
            bar.stop()
        remove()


@contextmanager
def phase(bar, label: str):
    """A progress callback (done, total) that shows one bar task while it is used; None without a bar."""
    if bar is None:
        yield None
        return
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task(label, total=total)
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()
            bar.remove_task(task)


def default_viz():
    """The attention pictures of `p2p edit --save-attention`: attn-viz's defaults."""
    from p2p_cli.analysis.maps import VizSpec

    return VizSpec()


def _real_image(recipe: Recipe, path: str) -> Path | None:
    """The recipe's picture (image:), checked now so that a bad one fails before any model loads."""
    if recipe.image is None:
        return None
    from p2p_cli.files.real import resolve_image

    return resolve_image(recipe, path)


def warn(recipe: Recipe, label: str, model: str | None = None) -> None:
    """Likely mistakes (checks.recipe_warnings, and words the bundled model never saw) on stderr, one
    `warning:` line each. model: --model when given (it overrides the recipe's)."""
    from p2p_cli.checks import recipe_warnings

    lines = recipe_warnings(recipe)
    spec = model if model is not None else recipe.model
    if spec in (None, "shapes", "shapes-mmdit"):  # the bundled models share their captions' words
        lines += _unknown_words(recipe)
    lines += _input_warnings(recipe, label, spec)
    for line in lines:
        print(f"warning: {label}: {name_edits(line)}", file=sys.stderr)


def _input_warnings(recipe: Recipe, label: str, spec: str | None) -> list[str]:
    """A size far from the model's native one, a centre crop that cuts much of the picture (where the model's
    config files are here: the bundled model or a local folder)."""
    from p2p_cli.checks import crop_warning, model_geometry, size_warning

    geometry = model_geometry(spec)
    if geometry is None:
        return []
    native = geometry.native
    size = tuple(recipe.size or (native, native))
    lines = [line for line in [size_warning(size, native)] if line]
    if recipe.image is not None and recipe.crop is None:
        from p2p_cli.files.real import resolve_image
        from p2p_cli.render.load import check_picture

        try:
            picture = check_picture(resolve_image(recipe, label))
        except (RecipeError, OSError, ValueError):
            return lines  # reported as an error elsewhere
        lines += [line for line in [crop_warning(picture, size)] if line]
    return lines


def bundled_vocabulary() -> list[str]:
    """Every word of the bundled shapes model's training captions (p2p_cli/shapes/vocabulary.py)."""
    from p2p_cli.shapes.vocabulary import BACKGROUNDS, COLOURS, JOINING, PLACE, SHAPES, SIZES
    from p2p_cli.text.words import split_words

    words = [*JOINING, *SIZES, *COLOURS, *SHAPES, *BACKGROUNDS]
    words += [w for phrase in PLACE.values() for w in split_words(phrase)]
    return list(dict.fromkeys(words))


def _unknown_words(recipe: Recipe) -> list[str]:
    from p2p_cli.text.words import split_words

    known = set(bundled_vocabulary())
    lines = []
    prompts = [("source", recipe.source)] + [(f"edits[{i}].target", e.target) for i, e in enumerate(recipe.edits)]
    for path, prompt in prompts:
        unknown = [w for w in dict.fromkeys(split_words(prompt)) if w not in known]
        if unknown:
            lines.append(f"{path}: the bundled shapes model never saw {', '.join(map(repr, unknown))}; it knows only"
                         f" the words of its captions ({' '.join(sorted(known))})")
    return lines
