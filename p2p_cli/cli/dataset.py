"""`p2p dataset PAIRS.jsonl --out DIR`: caption pairs -> sampled, scored, filtered edits, written as a dataset the
Hugging Face `datasets` library loads as it is (the work is the runner's: runs/datasets.py; the format files/dataset.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from p2p_cli.analysis.dataset import DEFAULT_KEEP, METRICS, needs, parse_keep, parse_range
from p2p_cli.cli import options as o
from p2p_cli.cli.common import overrides_from, use_threads
from p2p_cli.runs.edits import model_key
from p2p_cli.cli.errors import EXIT_FAILED, EXIT_OK, UsageError, handled, report
from p2p_cli.cli.jobs import reporter
from p2p_cli.runs import runner
from p2p_cli.runs.edits import check_out
from p2p_cli.runs.launch import device_for, launch
from p2p_cli.runs.records import invalid_row

CLIP_DEFAULT = "openai/clip-vit-large-patch14"  # metrics.CLIP_DEFAULT (metrics imports torch; help must not)

PairsArg = Annotated[Path, typer.Argument(help="Caption pairs, JSON lines: {\"source\": ..., \"target\": ...} and"
                                          " optional edit fields (type, reweight, local_blend, cross_replace,"
                                          " self_replace).", metavar="PAIRS")]
Out = Annotated[Path, typer.Option("--out", "-o", help="The dataset's folder (metadata.jsonl, pairs/).")]
Samples = Annotated[int, typer.Option("--samples", "-k", min=1, help="Edits sampled per pair, each with its own seed"
                                      " and windows.")]
Cross = Annotated[str, typer.Option("--cross", help="Range the cross_replace tau is drawn from (LO:HI, or one value).")]
SelfRange = Annotated[str, typer.Option("--self", help="Range the self_replace tau is drawn from (LO:HI, or one"
                                        " value).")]
Keep = Annotated[str, typer.Option("--keep", help=f"Samples kept: METRIC>=V (or <=, >, <), comma-separated, all must"
                                   f" hold; 'none' keeps all. Metrics: {', '.join(METRICS)}.")]
BaseSeed = Annotated[int, typer.Option("--seed", help="Base seed: sample j of the pair on line n gets a seed drawn"
                                       " from (seed, n - 1, j).")]
Clip = Annotated[str, typer.Option("--clip", help="CLIP model for clip_img, clip and clip_dir: hub id or local folder;"
                                   " 'none' skips them.")]


SampleSteps = Annotated[Optional[int], typer.Option("--steps", help="Sampling steps of every sample (same as --set"
                                                                      " steps=N; default: 50).")]
ResumePairs = Annotated[bool, typer.Option("--resume", help="Keep each pair's folder that a finished run with the same"
                                                            " settings wrote; run only the other pairs (a killed run,"
                                                            " started again).")]

def dataset(
    pairs: PairsArg,
    out: Out = Path("dataset"),
    samples: Samples = 4,
    cross: Cross = "0.1:0.9",
    self_: SelfRange = "0.1:0.9",
    keep: Keep = DEFAULT_KEEP,
    seed: BaseSeed = 0,
    clip: Clip = CLIP_DEFAULT,
    model: o.ModelOnly = None,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    steps: SampleSteps = None,
    set_: o.Sets = None,
    resume: ResumePairs = False,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
    attention: o.AttentionOpt = o.Attention.fused,
    allow_pickle: o.AllowPickle = False,
    threads: o.Threads = None,
    debug: o.Debug = False,
) -> None:
    """Make an edit dataset from caption pairs: K sampled edits per pair, scored, kept by --keep; writes
    OUT/metadata.jsonl and OUT/pairs/ (datasets.load_dataset("imagefolder", data_dir=OUT) loads it). Under torchrun
    or accelerate launch each process takes its share of the pairs."""
    overrides = overrides_from(set_, steps=steps)
    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    code = EXIT_OK
    with handled(debug):
        try:  # every option is checked before any model loads
            windows = parse_range("--cross", cross), parse_range("--self", self_)
            rules = parse_keep(keep)
        except ValueError as err:
            raise UsageError(str(err)) from None
        wanted = needs(rules)
        no_clip = clip.strip().lower() == "none"
        if wanted["clip"] and no_clip:
            raise UsageError(f"--keep {', '.join(wanted['clip'])} needs a CLIP model, and --clip is none; give --clip a"
                             " CLIPModel folder or hub id, or keep by scores without CLIP (e.g. --keep \"ssim>=0.5\"),"
                             " or --keep none")
        if not pairs.is_file():
            raise UsageError(f"{pairs}: no such file; PAIRS is a JSON-lines file of caption pairs")
        from p2p_cli.paths import open_regular

        with open_regular(pairs) as lines:
            if not any(line.strip() for line in lines):
                raise UsageError(f"{pairs}: holds no caption pairs; write one JSON object a line, e.g."
                                 ' {"source": "a cat on a mat", "target": "a dog on a mat"}')
        check_out(out)
        rank, world, local_rank = launch()
        started = time.perf_counter()
        use_threads(threads)
        from p2p_cli.analysis.metrics import ClipScorer, Lpips, MetricUnavailable
        from p2p_cli.api import load_model, pick_device
        from p2p_cli.files.dataset import assemble
        from p2p_cli.runs.datasets import dataset as make_dataset

        dev = device_for(pick_device(device.value), world, local_rank)
        scorer = None
        if not no_clip:
            try:
                scorer = ClipScorer(clip, dev).load()
            except MetricUnavailable as err:
                if wanted["clip"]:
                    raise UsageError(f"--keep {', '.join(wanted['clip'])} needs a CLIP model: {err}; give --clip a"
                                     " CLIPModel folder, or keep by scores without CLIP (e.g. --keep \"ssim>=0.5\"),"
                                     " or --keep none") from None
                log(f"CLIP scores are empty: {err}")
        lpips = None
        try:
            lpips = Lpips(dev)
        except MetricUnavailable as err:
            if wanted["lpips"]:
                raise UsageError(f"--keep {', '.join(wanted['lpips'])}: {err}") from None
        spec = model_key(model)
        log(f"loading model {spec} ({dev})" + (f": process {rank} of {world}" if world > 1 else ""))
        sd = load_model(spec, device=str(dev), dtype=dtype.value, allow_pickle=allow_pickle)
        where = f"process {rank} of {world}: " if world > 1 else ""
        run = make_dataset(sd, pairs, out, samples=samples, cross=windows[0], self_range=windows[1], keep=keep,
                           seed=seed, clip=scorer, lpips=lpips, overrides=overrides, resume=resume,
                           overwrite=overwrite, attention=attention.value, share=(rank, world), assemble=False,
                           log=lambda line: log(where + line), report=reporter(debug),
                           on_invalid=(lambda err: report(err, debug=debug)) if rank == 0 else None)
        settled = runner.settle(run.works, out, rank=rank, world=world, started=started,
                                invalid=[invalid_row(err) for err in run.invalid], error_text=str,
                                extra={"samples": run.samples, "kept": run.kept})
        if world > 1:
            log(f"process {rank} of {world}: pairs {settled.tally.line()}")
        failures = settled.failures
        if rank == 0:
            path, rows = assemble(out, run.pairs)
            made = sum(extra["samples"] for extra in settled.extras)
            log(f"{'all ' + str(world) + ' processes: ' if world > 1 else ''}pairs {settled.total.line()};"
                f" {sum(extra['kept'] for extra in settled.extras)} of {made} new samples kept; {path}: {rows} rows"
                + (f" (the failed lines: {Path(out) / 'failures.jsonl'})" if failures else ""))
            print(f"wrote {path} ({rows} rows)", flush=True)
        code = EXIT_FAILED if failures else EXIT_OK
    raise typer.Exit(code)
