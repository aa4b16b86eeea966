"""The recipes of `p2p edit` and `p2p attn-viz` as the runner's works: every recipe read and checked before any
model loads, each model loaded once, each recipe run through the API (api.run_recipe, or api.edit_many for a
batch of recipes that share their settings) and its folder written whole (Result.save, one rename)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from p2p_cli.checks import model_geometry, problems_before_loading
from p2p_cli.fingerprint import fingerprint
from p2p_cli.files.outputs import OutputPathError, check_free, check_out_dir
from p2p_cli.files.real import resolve_mask
from p2p_cli.manifests import read_recipes
from p2p_cli.overrides import inline_recipes
from p2p_cli.recipe import Recipe, RecipeError, batch_groups, name_problem
from p2p_cli.resolve import key as model_key
from p2p_cli.runs import runner
from p2p_cli.runs.records import InvalidRecipes, UsageError, invalid_row, is_manifest_line

STDIN_ONCE = "name standard input (-) once; it may hold several recipes (--- between them, or JSON lines)"


@dataclass
class Job(runner.Work):
    """One recipe of the command line and where it stands."""

    recipe: Recipe | None = None
    spec: str = "shapes"  # the model: hub id, resolved local path or "shapes"
    seconds: dict[str, float] = field(default_factory=dict)
    source_only: bool = False  # `p2p attn-viz --prompt`: write the source alone (its identity edit only ran)
    image: Path | None = None  # the recipe's real picture (image:), resolved and checked
    loras: tuple[tuple[str, float], ...] = ()  # the recipe's LoRA files (resolved) and scales
    attention_only: bool = False  # `p2p attn-viz`: folder is <name>/attention/, with the pictures and run.json

    @property
    def key(self) -> tuple:
        """Jobs with one key share one loaded model: the same weights, LoRAs, quantization and offload."""
        return (self.spec, self.loras, self.recipe.loading)

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def cost(self) -> int:
        """steps x batch rows (the source, each edit, each baseline)."""
        recipe = self.recipe
        rows = 1 + len(recipe.edits) + sum(1 for e in recipe.edits if recipe.baseline or e.baseline)
        return recipe.steps * rows

    def fingerprint(self, **how: Any) -> str:
        """What makes its folder: the recipe as given, the model and LoRAs, and the options that change the
        pictures (baseline, attention, attention pictures), and the windows the model folder's p2p-defaults.json
        gives a real picture that sets none (a changed file runs such a recipe again). `vae:` unset and no folder
        defaults applied are left out, so that folders written before either existed still resume."""
        recipe = self.recipe.model_dump(mode="json")
        if recipe.get("vae") is None:
            recipe.pop("vae", None)
        geometry = model_geometry(self.spec)  # cached; checked before any job is made
        applied = geometry.defaults.for_recipe(self.recipe) if geometry and geometry.defaults else {}
        return fingerprint({"recipe": recipe, "model": self.spec,
                            "loras": list(self.loras), "source_only": self.source_only,
                            **({"model_defaults": applied} if applied else {}),
                            **{k: str(v) for k, v in sorted(how.items())}})


Warn = Callable[[str, list[str]], None]  # (label, lines): likely mistakes the caller shows


def read_jobs(paths: list[str], overrides: list[str], out: Path, model: str | None, *, report: runner.Report,
              prompts: list[str] | tuple = (), skipped: list | None = None, warn: Warn | None = None,
              trust: bool = False, names: list[str] | tuple = ()) -> list[Job]:
    """Read and check every recipe, and the inline prompts' recipes, before any model loads. Each invalid one is
    reported; then InvalidRecipes is raised, unless `skipped` is a list: it takes a manifest's invalid lines
    (failures.jsonl rows) and the others run. trust: --trust-recipe (overrides.stranger_problems); names: --name,
    one per inline prompt; warn(label, lines) hears each recipe's likely mistakes."""
    if paths.count("-") > 1:
        raise UsageError(STDIN_ONCE)
    check_names(names, prompts)
    jobs, invalid = [], []
    items = chain(*(read_recipes(path, overrides, trust=trust, model_set=model is not None) for path in paths),
                  inline_recipes(list(prompts), overrides, names))  # one recipe at a time: a manifest may be long
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
            if recipe.loras or recipe.quantize:
                from p2p_cli.api import anchored  # (these import torch)
                from p2p_cli.files.real import recipe_loras

                loras = recipe_loras(recipe, label)
                recipe = anchored(recipe, label)  # run.json's recipe names the files (LoRAs, GGUF) by absolute path
        except RecipeError as err:
            if skipped is not None and is_manifest_line(label):  # a manifest goes on without its bad lines
                _skip(err if err.source == label else RecipeError(err.problems, label), skipped, report)
                continue
            invalid.append(err)
            continue
        if warn is not None:
            warn(label, input_warnings(recipe, label, model if model is not None else recipe.model))
        spec = model if model is not None else recipe.model
        jobs.append(Job(label, Path(out) / recipe.name, recipe=recipe, spec=model_key(spec), image=image,
                        loras=loras))
    if invalid:
        for err in invalid:
            report(err, None)
        raise InvalidRecipes(invalid)
    folders: dict[Path, str] = {}
    kept = []
    for job in jobs:
        if job.folder in folders:
            if skipped is not None and is_manifest_line(job.label):  # a manifest's line: skipped like a bad one
                _skip(RecipeError([f"name: {job.recipe.name!r} is also the name of {folders[job.folder]}: both would"
                                   f" write {job.folder}/; give this one a name of its own"], job.label), skipped,
                      report)
                continue
            raise UsageError(
                f"{folders[job.folder]} and {job.label} would both write {job.folder}/; give one another name"
                f" (name: in the recipe)"
            )
        folders[job.folder] = job.label
        kept.append(job)
    for position, job in enumerate(kept):
        job.index = position
    return kept


def prompt_job(prompt: str, name: str | None, overrides: list[str], out: Path, model: str | None) -> Job:
    """`p2p attn-viz --prompt`: the source with one identity edit (target = source, taus 0), written as source
    only. A recipe needs an edit; the engine checks it and samples the source alone (run_edit's source_only)."""
    from p2p_cli.overrides import apply_overrides
    from p2p_cli.recipe import parse_recipe
    from p2p_cli.text.words import split_words

    where = "--prompt"
    data = {
        "name": name or "-".join(split_words(prompt)[:8])[:48].strip("-") or "prompt",
        "source": prompt,
        "edits": [{"target": prompt, "type": "replace", "cross_replace": 0, "self_replace": 0}],
    }
    try:
        recipe = parse_recipe(apply_overrides(data, overrides), where)
    except ValueError as err:
        if isinstance(err, RecipeError):
            raise
        raise RecipeError([str(err)], where) from None
    check_name(recipe, where)
    return Job(where, Path(out) / recipe.name, recipe=recipe,
               spec=model_key(model if model is not None else recipe.model), source_only=True)


def check_name(recipe: Recipe, label: str) -> None:
    """The name becomes a folder: no separators, no leading dot, no control characters, not too long (the
    recipe loader checks the same, so `p2p validate` and `p2p edit` agree)."""
    why = name_problem(recipe.name or "")
    if why:
        raise RecipeError([f"name: {why}"], label)


def check_names(names: list[str] | tuple, prompts: list[str] | tuple) -> None:
    """--name names the --prompt of the same rank: no more names than prompts."""
    if len(names) > len(prompts):
        raise UsageError(f"{len(names)} --name for {len(prompts)} --prompt: --name gives the k-th --prompt's folder"
                         " its name (a recipe file names its folder with name:)")


def _skip(err: RecipeError, skipped: list, report: runner.Report) -> None:
    """Report a manifest line that cannot run and list it for failures.jsonl."""
    report(err, None)
    skipped.append(invalid_row(err))


def check_out(out: Path) -> None:
    """--out must be a folder or able to become one (checked before any model loads)."""
    try:
        check_out_dir(out)
    except OutputPathError as err:
        raise UsageError(str(err)) from None


def check_folders(jobs: list[Job], overwrite: bool, report: runner.Report) -> None:
    """Each job's OUT/<name> can be written (free, or replaceable with --overwrite; not a file or a link): a job
    whose folder cannot fails alone (exit 1), before any model loads."""
    for job in jobs:
        if not job.done:
            try:
                check_free(job.folder, overwrite or job.replace)
            except (FileExistsError, OutputPathError) as err:
                job.fail(report(err, None), err)


def check_memory(jobs: list[Job], device, dtype: str, report: runner.Report) -> None:
    """A job whose memory plan (memory_plan.py: weights and sampling) is above the device's free memory fails
    before its model loads, naming the settings that would fit (P2P_MEMORY_CHECK=0 skips it)."""
    from p2p_cli.engine.memory import NotEnoughMemory, available_bytes, check_enabled
    from p2p_cli.memory_plan import plan_for

    if not check_enabled() or (free := available_bytes(device)) is None:
        return
    for job in jobs:
        if job.done or (plan := plan_for(job.spec, job.recipe, dtype)) is None:
            continue
        if (needed := plan.peak()) > free:
            largest = plan.largest_size(free)
            err = NotEnoughMemory(needed, free, str(device), plan.size, largest, fixes=plan.fixes(free, device.type))
            job.fail(report(err, job.label), err)


Bars = Callable[[Job, str], AbstractContextManager]  # (job, label): a context giving (invert, sample) callbacks


@dataclass
class Options:
    """How `p2p edit` / `p2p attn-viz` run their jobs (the options that are not the recipe's)."""

    overrides: list[str] = field(default_factory=list)
    baseline: bool = False
    overwrite: bool = False
    attention: str = "fused"
    allow_pickle: bool = False
    viz: Any = None  # analysis.maps.VizSpec: attention pictures to write, or None
    batch_rows: int | None = None


def run_jobs(jobs: list[Job], device, dtype: str, options: Options, *, report: runner.Report,
             log: Callable[[str], None], written: Callable[[Job, Any, dict], None],
             bars: Bars | None = None, on_done: Callable[[Job], None] | None = None) -> None:
    """Run the jobs in order through the runner: each model loaded once (with its LoRAs), every recipe checked on
    it before any sampling with it, jobs that can share a batch run together (batch_of, up to batch_rows rows),
    each folder written whole. written(job, result, record) hears each folder written; bars(job) gives the
    progress callbacks."""
    check_memory(jobs, device, dtype, report)

    def load(job: Job):
        import torch

        from p2p_cli.loras import apply_loras
        from p2p_cli.models import load_model

        start = time.perf_counter()
        n = torch.get_num_threads()
        cpu = f", {n} thread{'s' if n != 1 else ''}" if device.type == "cpu" else ""
        log(f"loading model {job.spec} ({device}, {dtype}{cpu})"
            + (f" with {len(job.loras)} LoRA(s)" if job.loras else ""))
        model = load_model(job.spec, device.type if device.index is None else str(device), dtype,
                           allow_pickle=options.allow_pickle, loading=job.recipe.loading)
        apply_loras(model, list(job.loras))
        job.seconds["load"] = time.perf_counter() - start
        return model

    def loaded(job: Job, model) -> None:  # every problem on this model (its tokenizers too), before any sampling
        from p2p_cli.checks import model_problems

        for other in jobs:
            if other.key == job.key and not other.done and (problems := model_problems(other.recipe, model.spec)):
                err = RecipeError(problems, other.label)
                other.fail(report(err, None), err)

    def group(job: Job) -> list[Job]:
        return batch_of(job, jobs, options.batch_rows, options.baseline) if options.batch_rows else [job]

    def do(members: list[Job], model) -> None:
        start = time.perf_counter()
        if len(members) > 1:
            run_group(members, model, options, start=start, report=report, log=log, written=written, bars=bars)
        else:
            run_one(members[0], model, options, start=start, log=log, written=written, bars=bars)

    runner.run(jobs, do, models=runner.ModelCache(jobs, load), report=report, loaded=loaded, group=group,
               on_done=on_done)


def batch_of(first: Job, jobs: list[Job], limit: int, baseline: bool) -> list[Job]:
    """first and the jobs after it that can run in its batch (recipe.batch_groups: the same model and settings,
    no real picture or mask, at most `limit` rows in all); never a done, source-only or attention-only job, nor
    one on another loaded model (LoRAs, quantization)."""
    later = [j for j in jobs[jobs.index(first):] if j is first or (j.key == first.key and not j.done)]
    alone = [j.done or j.source_only or j.attention_only for j in later]
    return [later[k] for k in batch_groups([j.recipe for j in later], baseline, limit, alone)[0]]


def _bars(bars: Bars | None, job: Job, label: str) -> AbstractContextManager:
    return nullcontext((None, None)) if bars is None else bars(job, label)


def run_group(group: list[Job], model, options: Options, *, start: float, report: runner.Report, log, written,
              bars: Bars | None) -> None:
    """Run jobs in one batch (api.edit_many) and write each folder as run_one does; if the batch fails, each job
    runs alone, so one bad recipe fails alone."""
    from p2p_cli.api import edit_many

    log(f"{len(group)} recipes in one batch: {', '.join(j.recipe.name for j in group)}")
    try:
        with _bars(bars, group[0], f"{len(group)} recipes") as (_, progress):
            results = edit_many(model, [j.recipe for j in group], baseline=options.baseline,
                                attention=options.attention, progress=progress,
                                recipe_files=[j.label for j in group], overrides=options.overrides)
    except BrokenPipeError:
        raise
    except Exception as err:
        log(f"the batch failed ({err}); running its recipes one by one")
        results = None
    for job, result in zip(group, results or [None] * len(group)):
        try:
            if result is None:
                run_one(job, model, options, start=time.perf_counter(), log=log, written=written, bars=bars)
            else:
                finish(job, result, options, start=start, written=written)
        except BrokenPipeError:
            raise
        except Exception as err:
            job.fail(report(err, job.label), err)


def run_one(job: Job, model, options: Options, *, start: float, log, written, bars: Bars | None) -> None:
    """Run one recipe through the API (api.run_recipe) and write its folder with Result.save, in one rename."""
    from p2p_cli.api import MapsError, run_recipe

    recipe = job.recipe
    what = "source only" if job.source_only else f"{len(recipe.edits)} edit(s)"
    log(f"{job.label}: {recipe.name}, {what}, {recipe.steps} steps")
    try:
        with _bars(bars, job, recipe.name) as (invert_progress, progress):
            result = run_recipe(model, recipe, baseline=options.baseline, maps=options.viz or False,
                                attention=options.attention, progress=progress, invert_progress=invert_progress,
                                recipe_file=job.label, overrides=options.overrides, source_only=job.source_only)
    except MapsError as err:
        spec_error = err.spec_error
        raise UsageError(spec_error.as_option() if hasattr(spec_error, "as_option") else str(err)) from None
    real = result.real
    if real is not None:
        name, method = Path(real.path).name, real.inversion.method  # the model's default when the recipe names none
        if real.cached:
            log(f"{recipe.name}: reusing the {method} inversion of {name} from the cache"
                f" ({real.seconds:.1f} s now; inverting it took {real.inversion.seconds:.1f} s)")
        else:
            log(f"{recipe.name}: inverted {name} ({method}, {recipe.steps} steps) in {real.inversion.seconds:.1f} s")
        log(f"{recipe.name}: {real.summary(result.run.images[0])}")
    finish(job, result, options, start=start, written=written)


def finish(job: Job, result, options: Options, *, start: float, written) -> None:
    """Write a job's folder from its Result (in one rename) and tell `written`."""
    result.seconds = {**job.seconds, **result.seconds}
    result.started = start
    record = result.save(job.folder, options.overwrite or job.replace, attention_only=job.attention_only,
                         extra={"input_sha256": job.digest} if job.digest else None)
    job.done = True
    job.pictures = len(result.roles)
    written(job, result, record)


def _real_image(recipe: Recipe, label: str) -> Path | None:
    """The recipe's picture (image:), checked now so that a bad one fails before any model loads."""
    if recipe.image is None:
        return None
    from p2p_cli.files.real import resolve_image

    return resolve_image(recipe, label)


def input_warnings(recipe: Recipe, label: str, model: str | None = None) -> list[str]:
    """Likely mistakes, one line each: checks.recipe_warnings; words the bundled models never saw; a size far
    from the model's native one and a centre crop that cuts much of the picture (where the model's config files
    are here: the bundled models or a local folder). model: --model when given (it overrides the recipe's)."""
    from p2p_cli.checks import recipe_warnings

    lines = recipe_warnings(recipe)
    spec = model if model is not None else recipe.model
    if spec in (None, "shapes", "shapes-mmdit"):  # the bundled models share their captions' words
        lines += _unknown_words(recipe)
    return lines + _picture_warnings(recipe, label, spec)


def _picture_warnings(recipe: Recipe, label: str, spec: str | None) -> list[str]:
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
    """Every word of the bundled shapes models' training captions (p2p_cli/shapes/vocabulary.py)."""
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
