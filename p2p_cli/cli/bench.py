"""`p2p bench`: plain diffusers vs our P2P edit vs explicit-probability P2P, timed and measured (p2p_cli/bench.py)."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from enum import Enum
from typing import Annotated, Optional

import typer

from p2p_cli.cli import options as o
from p2p_cli.cli.errors import UsageError, handled


class Arch(str, Enum):
    tiny = "tiny"
    tiny_xl = "tiny-xl"
    sd15 = "sd15"
    sdxl = "sdxl"
    sd3 = "sd3"
    flux = "flux"
    flux_dev = "flux-dev"


ArchOpt = Annotated[
    Arch, typer.Option("--arch", help="tiny, tiny-xl: random tiny SD / SDXL components (CPU); sd15, sdxl: the SD 1.5"
                                      " and SDXL base architectures with random weights; sd3, flux: the SD3 and FLUX.1"
                                      " layouts scaled down for a CPU (256 px); flux-dev: FLUX.1-dev's architecture"
                                      " (a GPU's).")
]
Size = Annotated[Optional[int], typer.Option("--size", help="Image side in pixels (default: the model's native size).")]
Steps = Annotated[int, typer.Option("--steps", help="Sampling steps.")]
Targets = Annotated[int, typer.Option("--targets", help="Edited prompts besides the source (1-8).")]
Repeats = Annotated[int, typer.Option("--repeats", help="Timed runs of each variant, interleaved.")]
Warmup = Annotated[int, typer.Option("--warmup", help="Untimed runs of each variant first.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the UNet (shared by all variants).")]
Cases = Annotated[str, typer.Option("--cases", help="Comma-separated: replace+blend, refine+reweight.")]
Variants = Annotated[str, typer.Option("--variants", help="Comma-separated: plain, p2p, explicit.")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, help="torch threads (default: as p2p edit:"
                                                " OMP_NUM_THREADS when set, else the CPUs this process may use, at"
                                                " most 4).")]
NoMemory = Annotated[bool, typer.Option("--no-memory", help="Skip the peak-memory measurement.")]
Check = Annotated[bool, typer.Option("--check", help="Also report graph breaks (dynamo explain) and GPU syncs.")]
Results = Annotated[Optional[str], typer.Option("--results", help="Append a markdown section to this file (default: print"
                                                                    " only).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the whole report as one JSON object instead of the"
                                       " markdown (as --json does for every command).")]


def bench(
    arch: ArchOpt = Arch.tiny,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    size: Size = None,
    steps: Steps = 50,
    targets: Targets = 1,
    repeats: Repeats = 5,
    warmup: Warmup = 1,
    compile_: Compile = False,
    cases: Cases = "replace+blend,refine+reweight",
    variants: Variants = "plain,p2p,explicit",
    threads: Threads = None,
    no_memory: NoMemory = False,
    check: Check = False,
    results: Results = None,
    json_: JsonOut = False,
    debug: o.Debug = False,
) -> None:
    """Benchmark one recipe per case: diffusers' plain pipeline, our fused P2P edit and explicit P2P, interleaved."""

    with handled(debug):
        from p2p_cli.bench import BenchConfig, markdown, run_bench, write_results
        from p2p_cli.models import default_threads

        try:
            threads = threads or default_threads()
            cfg = BenchConfig(arch=arch.value, device=device.value, dtype=dtype.value, size=size, steps=steps,
                              targets=targets, repeats=repeats, warmup=warmup, compile=compile_,
                              cases=tuple(cases.split(",")), variants=tuple(variants.split(",")), threads=threads,
                              memory=not no_memory)
        except ValueError as err:
            raise UsageError(str(err)) from None
        report = run_bench(cfg, command="p2p " + shlex.join(sys.argv[1:]), check=check,
                           log=lambda s: print(s, file=sys.stderr, flush=True))
        print(json.dumps(asdict(report)) if json_ else markdown(report), end="\n" if json_ else "", flush=True)
        if results:
            write_results(report, results)
