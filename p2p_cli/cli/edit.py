"""`p2p edit RECIPE... | --prompt TEXT`: validate every recipe, load each model once, sample, write OUT/<name>/ whole
(the work is in cli/jobs.py, on the API)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.common import exit_code, overrides_from, progress_bar, use_threads
from p2p_cli.cli.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UsageError, handled
from p2p_cli.cli.jobs import check_folders, check_out, default_viz, is_manifest_line, read_jobs, run_jobs
from p2p_cli.cli.scale import Tally, fingerprint, gather, launch, resume_state, shard, write_failures, write_index
from p2p_cli.files.outputs import remove_stale


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
        skipped: list[dict] = []  # a manifest's invalid lines: reported (by rank 0), and the others run
        every = read_jobs(recipes or [], overrides, out, model, prompts=prompt or [], skipped=skipped, loud=rank == 0,
                           trust=trust_recipe, names=name or [])
        check_out(out)
        started = time.perf_counter()
        jobs = shard(every, rank, world)  # all of them without a launcher
        if world > 1:
            log(f"process {rank} of {world}: {len(jobs)} of {len(every)} recipe(s)")
        use_threads(threads)
        from p2p_cli.models import pick_device, pick_dtype

        dev = pick_device(device.value)
        if world > 1 and dev.type == "cuda" and dev.index is None:
            import torch

            dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        dt = pick_dtype(dtype.value, dev)
        for job in jobs:
            job.digest = fingerprint(job, baseline=baseline, attention=attention.value, save_attention=save_attention)
            state = resume_state(job.folder, job.digest) if not overwrite else None
            if state == "finished":  # --resume, or a rerun: nothing changed, nothing to do
                job.done = job.kept = True
                why = "finished earlier: --resume" if resume else "this run is there already; --overwrite redoes it"
                print(f"kept {job.folder}/ ({why})", flush=True)
            elif state == "damaged" and resume:  # this recipe's folder, but a file it lists is gone or changed
                job.replace = True
                log(f"{job.folder}/ lacks files its run.json lists: running {job.recipe.name} again (--resume)")
        if stale := remove_stale([job.folder for job in jobs]):
            log(f"removed {len(stale)} temporary folder{'s' * (len(stale) != 1)} that killed runs left:"
                f" {', '.join(str(p) for p in stale)}")
        check_folders(jobs, overwrite, debug)
        # one live bar per terminal: under a launcher every process logs a line per recipe instead
        bar = None if quiet or not console.is_terminal or world > 1 else progress_bar(console)
        run_jobs(jobs, dev, dt, overrides=overrides, baseline=baseline, overwrite=overwrite, json_=json_,
                 attention=attention.value, allow_pickle=allow_pickle, log=log, bar=bar, debug=debug,
                 viz=default_viz() if save_attention else None, batch_rows=batch_rows,
                 on_done=progress_lines(jobs, rank, world, started, log) if world > 1 else None)
        position = {id(job): i for i, job in enumerate(every)}
        entries = [{"index": position[id(job)], "name": job.recipe.name, "out": str(job.folder), "rank": rank,
                    "status": "kept" if job.kept else "ok" if job.code == EXIT_OK else "failed",
                    "exit": job.code} for job in jobs]
        failures = [{"recipe": job.path, "line": int(job.path.rsplit("#", 1)[1]), "status": "failed",
                     "exit": job.code} for job in jobs if is_manifest_line(job.path) and job.code != EXIT_OK]
        tally = Tally(done=sum(1 for j in jobs if j.code == EXIT_OK and not j.kept), skipped=sum(j.kept for j in jobs),
                      failed=sum(1 for j in jobs if j.code != EXIT_OK), pictures=sum(j.pictures for j in jobs),
                      seconds=time.perf_counter() - started)
        parts = gather({"entries": entries, "failures": failures, "tally": tally}, world)  # waits for every process
        if world > 1:
            log(f"process {rank} of {world}: {tally.line()}")
        if rank == 0:
            if world > 1:
                write_index([e for part in parts for e in part["entries"]], out)
            failures = skipped + [f for part in parts for f in part["failures"]]
            if failures:
                write_failures(out, failures)
            total = Tally.total([part["tally"] for part in parts])
            total.failed += len(skipped)
            log(f"{'all ' + str(world) + ' processes: ' if world > 1 else ''}{total.line()}"
                + (f" (the failed manifest lines: {Path(out) / 'failures.jsonl'})" if failures else ""))
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
