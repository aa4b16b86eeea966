"""Benchmark: seconds (and peak memory) of one inversion of a picture, per method, in one process.

Each method (null-text, negative-prompt, ddim) inverts the same picture with the same prompt, steps and
guidance, after warm-up, in rounds whose order rotates; the time is `Inversion.seconds` (encode, DDIM
backwards and, for null-text, the optimisation, up to a final synchronisation). UNet forward calls are
counted, so a null-text time says how many of its up-to-10 inner steps ran (random weights never reach the
early stop: the worst case). Architectures: `shapes` (the bundled model), `tiny`, `sd15` (the Stable
Diffusion 1.5 architecture with random weights). Used by `python -m lab.bench_inversion`; see
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lab.bench import BenchConfig, _loadavg, _ProbeUNet, build_model, environment, write_results
from p2p_cli.engine.inversion import METHODS, invert
from p2p_cli.family_defaults import inversion_problem
from p2p_cli.models import Model, load_model

PROMPT = "a big red circle on the left on a white background"


@dataclass
class InversionBenchConfig:
    arch: str = "shapes"  # shapes: the bundled model; tiny / sd15: random components (see lab.bench)
    device: str = "auto"
    dtype: str = "auto"
    size: int | None = None  # picture side in pixels; None: the model's native size
    steps: int = 50
    guidance: float = 7.5
    # every arch here is a UNet: the methods a DDIM sampler runs (not flowedit)
    methods: tuple[str, ...] = tuple(m for m in METHODS if inversion_problem(m, "ddim", True, "") is None)
    repeats: int = 3
    warmup: int = 1
    compile: bool = False  # torch.compile the UNet (null-text also compiles its backward pass)
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        problems = [f"unknown method {m!r} (methods: {', '.join(METHODS)})" for m in self.methods if m not in METHODS]
        problems += [f"{m}: every arch here is a UNet (DDIM); {m} inverts a flow model" for m in self.methods
                     if m in METHODS and inversion_problem(m, "ddim", True, "") is not None]
        if self.arch not in ("shapes", "tiny", "sd15"):
            problems.append(f"unknown arch {self.arch!r}: use shapes, tiny or sd15")
        if self.repeats < 1 or self.warmup < 0 or self.steps < 1:
            problems.append("repeats and steps must be at least 1, warmup at least 0")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class InversionReport:
    config: dict
    environment: dict
    command: str
    seconds: dict = field(default_factory=dict)  # method -> [s] of each timed inversion
    unet_calls: dict = field(default_factory=dict)  # method -> UNet forward calls of the last timed inversion
    memory: dict = field(default_factory=dict)  # method -> peak MiB (cuda only)


def build(cfg: InversionBenchConfig) -> Model:
    if cfg.arch == "shapes":
        model = load_model(None, device=cfg.device, dtype=cfg.dtype)
        if cfg.compile:
            model.unet = torch.compile(model.unet)
        return model
    return build_model(BenchConfig(arch=cfg.arch, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile,
                                   seed=cfg.seed))


def picture(model: Model, size: int | None, seed: int) -> torch.Tensor:
    """A (3, H, W) picture in [0, 1]: smooth random colour blobs (the timing does not depend on the content)."""
    h, w = (size, size) if size else model.native_size
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(h // 16, 2), max(w // 16, 2), generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]


def run_inversion_bench(cfg: InversionBenchConfig, command: str = "",
                        log: Callable[[str], None] = lambda s: None) -> InversionReport:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build(cfg)
    calls = 0  # UNet forward calls of the inversion under way

    def count(unet, args, kwargs) -> None:
        nonlocal calls
        calls += 1

    model.unet = _ProbeUNet(model.unet, count)
    image = picture(model, cfg.size, cfg.seed)
    report = InversionReport(config=asdict(cfg) | {"size": image.shape[-1]},
                             environment=environment(model.device, model.dtype), command=command)
    cuda = model.device.type == "cuda"

    def once(method: str) -> float:
        nonlocal calls
        calls = 0
        gc.collect()
        if cuda:
            torch.cuda.synchronize(model.device)
            torch.cuda.reset_peak_memory_stats(model.device)
        seconds = invert(model, image, PROMPT, method=method, steps=cfg.steps, guidance=cfg.guidance).seconds
        report.unet_calls[method] = calls
        if cuda:
            peak = torch.cuda.max_memory_allocated(model.device) / 2**20
            report.memory[method] = max(peak, report.memory.get(method, 0.0))
        return seconds

    for r in range(cfg.warmup):
        for method in cfg.methods:
            log(f"  warm-up {r + 1}/{cfg.warmup} {method}: {once(method):.2f} s")
    report.memory.clear()
    names = list(cfg.methods)
    report.seconds = {m: [] for m in names}
    for r in range(cfg.repeats):
        for method in names[r % len(names):] + names[: r % len(names)]:
            report.seconds[method].append(once(method))
            log(f"  run {r + 1}/{cfg.repeats} {method}: {report.seconds[method][-1]:.2f} s"
                f" ({report.unet_calls[method]} UNet calls)")
    report.environment["loadavg_end"] = _loadavg()
    return report


def markdown(report: InversionReport) -> str:
    c, e = report.config, report.environment
    lines = [
        f"### inversion, {c['arch']}, {e['device']}, {e['dtype']}, {c['size']} px, {c['steps']} steps, guidance"
        f" {c['guidance']}{', compiled' if c['compile'] else ''} ({e['date']})",
        "",
        f"Command: `{report.command}`  ",
        f"torch {e['torch']} (cuda {e['cuda']}), diffusers {e['diffusers']}, python {e['python']};"
        f" {e['threads']} thread(s); load average {e['loadavg_start']:.1f} at start, {e.get('loadavg_end', 0):.1f}"
        f" at end; {c['warmup']} warm-up and {c['repeats']} timed inversion(s) of each method, interleaved.",
        "",
        "| method | seconds per inversion | UNet forward calls | peak MiB |",
        "| --- | --- | --- | --- |",
    ]
    for method, times in report.seconds.items():
        med = statistics.median(times)
        mem = f"{report.memory[method]:.0f}" if method in report.memory else "-"
        lines.append(f"| {method} | {med:.2f} [{min(times):.2f}-{max(times):.2f}] | {report.unet_calls[method]} |"
                     f" {mem} |")
    lines += ["", "Seconds: median [min-max] of `Inversion.seconds` (encode, DDIM backwards, null-text's optimisation)."
              " Null-text makes T forward calls backwards, T with the prompt, one per inner step (each with a"
              " backward pass) and one per step that did not stop early."]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.bench_inversion", description=__doc__.splitlines()[0])
    d = InversionBenchConfig()
    p.add_argument("--arch", default=d.arch, choices=("shapes", "tiny", "sd15"))
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype, choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--size", type=int, default=None, help="picture side in pixels (default: native)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--guidance", type=float, default=d.guidance)
    p.add_argument("--methods", default=",".join(d.methods), help=f"comma-separated: {', '.join(METHODS)}")
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--results", help="append a markdown section to this file (e.g. benchmarks/RESULTS.md)")
    p.add_argument("--json", help="write the whole report as JSON to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ns = parser().parse_args(argv)
    try:
        cfg = InversionBenchConfig(arch=ns.arch, device=ns.device, dtype=ns.dtype, size=ns.size, steps=ns.steps,
                                   guidance=ns.guidance, methods=tuple(ns.methods.split(",")), repeats=ns.repeats,
                                   warmup=ns.warmup, compile=ns.compile, threads=ns.threads, seed=ns.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if cfg.compile:
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    report = run_inversion_bench(cfg, "python -m lab.bench_inversion " + shlex.join(argv),
                                 log=lambda s: print(s, file=sys.stderr, flush=True))
    text = markdown(report)
    print(text, end="", flush=True)
    if ns.results:
        write_results(report, ns.results, text)
    if ns.json:
        Path(ns.json).write_text(json.dumps(asdict(report), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
