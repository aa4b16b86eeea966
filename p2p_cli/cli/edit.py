"""`p2p edit RECIPE... | --prompt TEXT`: validate every recipe, load each model once, sample, write OUT/<name>/ whole
(the work is the runner's: runs/edits.py, on the API)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.common import dtype_name, exit_code, overrides_from, progress_bar, use_threads
from p2p_cli.cli.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UsageError, handled
from p2p_cli.cli.jobs import bars, default_viz, reporter, show_warnings, written
from p2p_cli.files.outputs import remove_stale
from p2p_cli.runs import runner
from p2p_cli.runs.edits import Options, check_folders, check_out, read_jobs, run_jobs
from p2p_cli.runs.launch import device_for, launch, shard


def absolute(path: Path | None) -> str | None:
    """A picture named on the command line, absolute (the recipe it goes into may live elsewhere)."""
    return None if path is None else str(path.expanduser().resolve())


def edit(
    recipes: o.OptionalRecipeArgs = None,
    prompt: o.InlinePrompts = None,
    image: o.ImageOpt = None,
    mask: o.MaskOpt = None,
    out: o.OutDir = Path("outputs"),
    model: o.ModelSpec = None,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    steps: o.Steps = None,
    seed: o.Seed = None,
    quantize: o.Quantize = None,
    offload: o.Offload = None,
    vae: o.Vae = None,
    set_: o.Sets = None,
    baseline: o.Baseline = False,
    overwrite: o.Overwrite = False,
    json_: o.Json = False,
    quiet: o.Quiet = False,
    attention: o.AttentionOpt = o.Attention.fused,
    allow_pickle: o.AllowPickle = False,
    save_attention: o.SaveAttention = False,
    threads: o.Threads = None,
    resume: o.Resume = False,
    trust_recipe: o.TrustRecipe = False,
    name: o.InlineNames = None,
    batch_rows: o.BatchRows = None,
    debug: o.Debug = False,
) -> None:
    """Edit images as the recipes say; each recipe writes OUT/<name>/ (images, grid.png, run.json). Under torchrun
    or accelerate launch, each process takes its share of the recipes and rank 0 writes OUT/index.jsonl."""
    overrides = overrides_from(set_, steps=steps, seed=seed, image=absolute(image), mask=absolute(mask),
                               quantize=quantize, offload=offload, vae=vae)
    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    with handled(debug):
        if not recipes and not prompt:
            raise UsageError("nothing to edit: give a RECIPE or --prompt \"a [cat->dog] on a mat\"")
        # everything is validated before any model loads
        rank, world, local_rank = launch()
        report = reporter(debug)
        skipped: list[dict] = []  # a manifest's invalid lines: reported (by rank 0), and the others run
        quiet_report = report if rank == 0 else (lambda err, where: EXIT_INVALID)
        every = read_jobs(recipes or [], overrides, out, model, prompts=prompt or [], skipped=skipped,
                          report=quiet_report, warn=show_warnings, trust=trust_recipe, names=name or [])
        check_out(out)
        started = time.perf_counter()
        jobs = shard(every, rank, world)  # all of them without a launcher
        if world > 1:
            log(f"process {rank} of {world}: {len(jobs)} of {len(every)} recipe(s)")
        use_threads(threads)
        from p2p_cli.api import pick_device, pick_dtype

        dev = device_for(pick_device(device.value), world, local_rank)
        dt = pick_dtype(dtype.value, dev)
        for job in jobs:
            job.digest = job.fingerprint(baseline=baseline, attention=attention.value, save_attention=save_attention)
        runner.resume(jobs, resume=resume, overwrite=overwrite, keep_finished=True)
        for job in jobs:
            if job.kept:  # --resume, or a rerun: nothing changed, nothing to do
                job.done = True
                why = "finished earlier: --resume" if resume else "this run is there already; --overwrite redoes it"
                print(f"kept {job.folder}/ ({why})", flush=True)
            elif job.replace:  # this recipe's folder, but a file it lists is gone or changed
                log(f"{job.folder}/ lacks files its run.json lists: running {job.recipe.name} again (--resume)")
        if stale := remove_stale([job.folder for job in jobs]):
            log(f"removed {len(stale)} temporary folder{'s' * (len(stale) != 1)} that killed runs left:"
                f" {', '.join(str(p) for p in stale)}")
        check_folders(jobs, overwrite, report)
        # one live bar per terminal: under a launcher every process logs a line per recipe instead
        bar = None if quiet or not console.is_terminal or world > 1 else progress_bar(console)
        options = Options(overrides=overrides, baseline=baseline, overwrite=overwrite, attention=attention.value,
                          allow_pickle=allow_pickle, viz=default_viz() if save_attention else None,
                          batch_rows=batch_rows)
        run_jobs(jobs, dev, dtype_name(dt), options, report=report, log=log, written=written(json_), bars=bars(bar),
                 on_done=progress_lines(jobs, rank, world, started, log) if world > 1 else None)
        settled = runner.settle(jobs, out, rank=rank, world=world, started=started, invalid=skipped, index=True)
        if world > 1:
            log(f"process {rank} of {world}: {settled.tally.line()}")
        if rank == 0:
            log(f"{'all ' + str(world) + ' processes: ' if world > 1 else ''}{settled.total.line()}"
                + (f" (the failed manifest lines: {Path(out) / 'failures.jsonl'})" if settled.failures else ""))
    codes = [job.code for job in jobs]
    if skipped:  # a manifest that lost lines still ran the rest: exit 1, the lines in failures.jsonl
        codes = [code if code != EXIT_INVALID else EXIT_FAILED for code in codes] + [EXIT_FAILED]
    raise typer.Exit(exit_code(codes))


def progress_lines(jobs: list, rank: int, world: int, started: float, log):
    """Under a launcher: after each recipe, "process 1 of 2: 3/8 recipes (1 failed), 6 pictures, 1.20 pictures/s"."""
    def done(_job) -> None:
        finished = [j for j in jobs if j.done and not j.kept]
        left = [j for j in jobs if not j.kept]
        failed = sum(1 for j in finished if j.code != EXIT_OK)
        pictures = sum(j.pictures for j in finished)
        rate = pictures / max(time.perf_counter() - started, 1e-9)
        log(f"process {rank} of {world}: {len(finished)}/{len(left)} recipes"
            + (f" ({failed} failed)" if failed else "") + f", {pictures} pictures, {rate:.2f} pictures/s")

    return done
