"""`p2p edit RECIPE... | --prompt TEXT`: validate every recipe, load each model once, sample, write OUT/<name>/ whole
(the work is in cli/jobs.py, on the API)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.common import exit_code, overrides_from, progress_bar, use_threads
from p2p_cli.cli.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UsageError, handled
from p2p_cli.cli.jobs import check_folders, check_out, default_viz, is_manifest_line, read_jobs, run_jobs
from p2p_cli.cli.scale import finished, fingerprint, gather_index, launch, shard


def edit(
    recipes: o.OptionalRecipeArgs = None,
    prompt: o.InlinePrompts = None,
    out: o.OutDir = Path("outputs"),
    model: o.ModelSpec = None,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    steps: o.Steps = None,
    seed: o.Seed = None,
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
    debug: o.Debug = False,
) -> None:
    """Edit images as the recipes say; each recipe writes OUT/<name>/ (images, grid.png, run.json). Under torchrun
    or accelerate launch, each process takes its share of the recipes and rank 0 writes OUT/index.jsonl."""
    overrides = overrides_from(set_, steps=steps, seed=seed)
    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    with handled(debug):
        if not recipes and not prompt:
            raise UsageError("nothing to edit: give a RECIPE or --prompt \"a [cat->dog] on a mat\"")
        # everything is validated before any model loads
        skipped: list[dict] = []  # a manifest's invalid lines: reported, and the others run
        every = read_jobs(recipes or [], overrides, out, model, prompts=prompt or [], skipped=skipped)
        check_out(out)
        rank, world, local_rank = launch()
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
            if resume and finished(job.folder, job.digest):
                job.done = job.kept = True
                print(f"kept {job.folder}/ (finished earlier: --resume)", flush=True)
        check_folders(jobs, overwrite, debug)
        bar = None if quiet or not console.is_terminal else progress_bar(console)
        run_jobs(jobs, dev, dt, overrides=overrides, baseline=baseline, overwrite=overwrite, json_=json_,
                 attention=attention.value, allow_pickle=allow_pickle, log=log, bar=bar, debug=debug,
                 viz=default_viz() if save_attention else None)
        if world > 1:
            position = {id(job): i for i, job in enumerate(every)}
            entries = [{"index": position[id(job)], "name": job.recipe.name, "out": str(job.folder), "rank": rank,
                        "status": "kept" if job.kept else "ok" if job.code == EXIT_OK else "failed",
                        "exit": job.code} for job in jobs]
            gather_index(entries, out, rank, world)
        failures = skipped + [{"recipe": job.path, "line": int(job.path.rsplit("#", 1)[1]), "status": "failed",
                               "exit": job.code} for job in jobs if is_manifest_line(job.path)
                              and job.code != EXIT_OK]
        if failures and rank == 0:
            write_failures(out, failures)
    codes = [job.code for job in jobs]
    if skipped:  # a manifest that lost lines still ran the rest: exit 1, the lines in failures.jsonl
        codes = [code if code != EXIT_INVALID else EXIT_FAILED for code in codes] + [EXIT_FAILED]
    raise typer.Exit(exit_code(codes))


def write_failures(out: Path, failures: list[dict]) -> Path:
    """OUT/failures.jsonl: one line per manifest recipe that was invalid or failed, written whole."""
    import json
    import os

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, tmp = out / "failures.jsonl", out / f".failures.jsonl.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures), encoding="utf-8")
    os.replace(tmp, path)
    return path
