"""Benchmark: plain diffusers vs our fused P2P edit vs explicit-probability P2P, same recipe, one process.

Timings are interleaved (each repeat runs every variant once, in a rotated order) after warm-up, so slow
phases of a shared machine hit all variants alike; medians are reported. Peak memory: on a GPU
torch.cuda.max_memory_allocated around each timed run in this process; on the CPU each variant runs in a
fresh child process (`--one VARIANT`), which warms up, returns freed heap to the OS (malloc_trim), resets
the kernel's peak-RSS mark (/proc/self/clear_refs) and reads VmHWM after one run. Used by `python -m lab.bench` (`make bench`)
and `python -m lab.bench`; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from p2p_cli.models import Model, from_components, pick_device, pick_dtype
from p2p_cli.engine.pipeline import initial_latent, run_edit
from p2p_cli.recipe import Recipe, parse_recipe

VARIANTS = ("plain", "p2p", "explicit")
SOURCE = "a photo of a cat sitting on a red sofa"
_ANIMALS = ("dog", "lion", "fox", "rabbit", "tiger", "bear", "horse", "owl")
_ADJECTIVES = ("fluffy", "sleepy", "striped", "tiny", "grumpy", "spotted", "young", "black")
CASES = ("replace+blend", "refine+reweight")


@dataclass
class BenchConfig:
    """One benchmark configuration; every variant and case runs with these settings."""

    arch: str = "tiny"  # tiny / tiny-xl: random tiny components (CPU); sd15 / sdxl: the real architectures, random weights
    device: str = "auto"  # auto: cuda if available, else cpu
    dtype: str = "auto"  # auto: fp16 on cuda, fp32 elsewhere
    size: int | None = None  # image side in pixels; None: the architecture's native size (128 tiny, 512 sd15)
    steps: int = 50
    targets: int = 1  # edited prompts besides the source
    repeats: int = 5  # timed runs of each variant, after warm-up
    warmup: int = 1
    compile: bool = False  # torch.compile the UNet (all variants share it)
    cases: tuple[str, ...] = CASES
    variants: tuple[str, ...] = VARIANTS
    threads: int | None = None  # torch.set_num_threads; None leaves the default
    memory: bool = True  # measure peak memory (CPU: one child process per case and variant)
    seed: int = 0
    quantize: str | None = None  # the denoiser quantized (loading.KINDS, e.g. int8): the model is saved and loaded
    # by p2p's loader with it, and diffusers' plain pipeline runs on the same quantized components

    def __post_init__(self) -> None:
        self.cases, self.variants = tuple(self.cases), tuple(self.variants)
        problems = [f"unknown case {c!r} (cases: {', '.join(CASES)})" for c in self.cases if c not in CASES]
        problems += [f"unknown variant {v!r} (variants: {', '.join(VARIANTS)})"
                     for v in self.variants if v not in VARIANTS]
        if self.arch not in ARCHS:
            problems.append(f"unknown arch {self.arch!r}: use one of {', '.join(ARCHS)}")
        if not 1 <= self.targets <= len(_ANIMALS):
            problems.append(f"targets must be in 1..{len(_ANIMALS)}, not {self.targets}")
        if self.repeats < 1 or self.warmup < 0 or self.steps < 1:
            problems.append("repeats and steps must be at least 1, warmup at least 0")
        if self.quantize is not None and self.compile:
            problems.append("--quantize and --compile are not measured together")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be at least 1, not {self.threads}")
        if problems:
            raise ValueError("; ".join(problems))

    def argv(self) -> list[str]:
        """Command-line arguments that rebuild this configuration (for the memory child processes)."""
        args = ["--arch", self.arch, "--device", self.device, "--dtype", self.dtype, "--steps", str(self.steps),
                "--targets", str(self.targets), "--seed", str(self.seed), "--warmup", str(self.warmup)]
        args += ["--size", str(self.size)] if self.size else []
        args += ["--threads", str(self.threads)] if self.threads else []
        args += ["--compile"] if self.compile else []
        args += ["--quantize", self.quantize] if self.quantize else []
        return args


# arch -> native image side. sd3 / flux / qwen-image / flux2 / flux2-dev / chroma: the families' layouts scaled down
# to run on a CPU (bench_*_components in lab/arch.py; flux2 is FLUX.2 klein, flux2-dev FLUX.2 dev); flux-dev:
# FLUX.1-dev's published architecture (12B parameters: a GPU's)
ARCHS = {"tiny": 128, "tiny-xl": 128, "sd15": 512, "sdxl": 1024, "sd3": 256, "flux": 256, "flux-dev": 1024,
         "qwen-image": 256, "flux2": 256, "flux2-dev": 256, "chroma": 256}
JOINT_ARCHS = ("sd3", "flux", "flux-dev", "qwen-image", "flux2", "flux2-dev", "chroma")


def case_recipe(case: str, cfg: BenchConfig) -> Recipe:
    """The recipe of a case: source + cfg.targets edits (replace with local blend, or refine with reweight)."""
    if case == "replace+blend":
        edits = [{"target": SOURCE.replace("cat", a), "local_blend": {"words": ["cat", a]}}
                 for a in _ANIMALS[: cfg.targets]]
    elif case == "refine+reweight":
        edits = [{"target": SOURCE.replace("cat", f"{a} cat"), "reweight": {a: 2.0}}
                 for a in _ADJECTIVES[: cfg.targets]]
    else:
        raise ValueError(f"unknown case {case!r}")
    size = [cfg.size, cfg.size] if cfg.size else [ARCHS[cfg.arch]] * 2
    guidance = {} if cfg.arch in JOINT_ARCHS else {"guidance": 7.5}  # SD3 / FLUX: the family's default
    return parse_recipe({"name": case, "source": SOURCE, "steps": cfg.steps, "seed": cfg.seed, "size": size,
                         "edits": edits, **guidance})


def build_model(cfg: BenchConfig) -> Model:
    """Random components of cfg.arch on cfg's device and dtype; the UNet compiled when cfg.compile."""
    from lab.arch import (bench_chroma_components, bench_flux2_dev_components, bench_flux2_klein_components,
                          bench_flux_components,
                          bench_qwen_image_components, bench_sd3_components,
                          flux_dev_components, sd15_components, sdxl_components, tiny_components, tiny_xl_components)

    device = pick_device(cfg.device)
    build = {"tiny": tiny_components, "tiny-xl": tiny_xl_components, "sd15": sd15_components,
             "sdxl": sdxl_components, "sd3": bench_sd3_components, "flux": bench_flux_components,
             "flux-dev": flux_dev_components, "qwen-image": bench_qwen_image_components,
             "flux2": bench_flux2_klein_components, "flux2-dev": bench_flux2_dev_components,
             "chroma": bench_chroma_components}[cfg.arch]
    with torch.device(device) if device.type == "cuda" else contextlib.nullcontext():  # random init on the GPU: fast
        parts = build(seed=cfg.seed)
    parts["scheduler"] = type(parts["scheduler"]).from_config(parts["scheduler"].config)  # its tensors on the CPU
    model = from_components(parts, id=cfg.arch, device=str(device), dtype=pick_dtype(cfg.dtype, device))
    if cfg.quantize:
        model = quantized(model, cfg)
    if cfg.compile:
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)  # one graph per variant
        torch._dynamo.config.automatic_dynamic_shapes = False  # static shapes: every variant has one batch size
        if model.unet is not None:
            model.unet = torch.compile(model.unet)
        else:
            model.transformer = torch.compile(model.transformer)
    return model


def quantized(model: Model, cfg: BenchConfig) -> Model:
    """The model saved as a diffusers folder and loaded back by p2p's loader with its denoiser quantized (the
    diffusers / torchao config a recipe's `quantize:` makes)."""
    import tempfile

    from p2p_cli.loading import parse
    from p2p_cli.models import load_model

    folder = Path(tempfile.mkdtemp(prefix="p2p-bench-"))
    plain_pipeline(model).save_pretrained(folder)
    dtype = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[model.dtype]
    return load_model(str(folder), device=str(model.device), dtype=dtype, loading=parse(cfg.quantize))


def plain_pipeline(model: Model):
    """diffusers' own pipeline of the model's family on the same components (models.family_pipeline:
    StableDiffusionPipeline ... ChromaPipeline; DDIM or flow matching; default fused attention)."""
    from p2p_cli.models import family_pipeline

    return family_pipeline(model)


def variant_fns(model: Model, recipe: Recipe, pipe=None) -> dict[str, Callable[[], object]]:
    """One zero-argument callable per variant, each producing the images of source + targets on the CPU."""
    pipe = pipe or plain_pipeline(model)
    prompts = [recipe.source] + [e.target for e in recipe.edits]
    h, w = recipe.size or model.native_size
    latent = initial_latent(recipe.seed, model.latent_channels, (h // model.vae_scale, w // model.vae_scale))
    latents = latent.expand(len(prompts), -1, -1, -1).to(model.device, model.dtype)
    guidance = recipe.guidance if "guidance" in recipe.model_fields_set else model.family.default_guidance
    extra = {}
    scale = {"guidance_scale": guidance}
    if model.family.name in ("flux", "qwen-image", "chroma"):
        from p2p_cli.families.flux import pack

        latents = pack(latents)
        extra = {"max_sequence_length": model.family.t5_length(model)} if model.family.name == "flux" else {}
    if model.family.name == "qwen-image":  # true CFG over the negative prompt, as the p2p run
        scale = {"true_cfg_scale": guidance, "negative_prompt": [recipe.negative_prompt] * len(prompts)}
    if model.family.name == "chroma":  # CFG over the negative prompt, as the p2p run
        scale["negative_prompt"] = [recipe.negative_prompt] * len(prompts)
    # FLUX.2 klein and dev take latents (B, 4C, h, w) already patched, as the engine's are: nothing to pack

    def plain():
        with torch.inference_mode():
            return pipe(prompt=prompts, latents=latents.clone(), num_inference_steps=recipe.steps, height=h, width=w,
                        output_type="pt", **scale, **extra).images.float().cpu()

    return {"plain": plain, "p2p": lambda: run_edit(model, recipe).images,
            "explicit": lambda: run_edit(model, recipe, attention="explicit").images}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Times = dict[str, list[float]]  # variant -> seconds of each timed run


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int,
                     log: Callable[[str], None] = lambda s: None) -> tuple[Times, Times, dict[str, dict]]:
    """Wall and process-CPU seconds of every timed run per variant, rotating the order each round; on cuda peak memory.

    Process CPU time (all threads of this process) is what a variant costs on a shared CPU, where wall time
    also counts the time other jobs hold the cores.
    """
    names = list(fns)
    for r in range(warmup):
        for name in names:
            tic = time.perf_counter()
            fns[name]()
            _sync(device)
            log(f"  warm-up {r + 1}/{warmup} {name}: {time.perf_counter() - tic:.3f} s")
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    mem: dict[str, dict] = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                resting = torch.cuda.memory_allocated(device)
            tic, cpu_tic = time.perf_counter(), time.process_time()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - tic)
            cpu[name].append(time.process_time() - cpu_tic)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device)
                old = mem.get(name, {"peak_mib": 0.0})
                if peak / 2**20 >= old["peak_mib"]:
                    mem[name] = {"peak_mib": peak / 2**20, "run_mib": (peak - resting) / 2**20,
                                 "method": "torch.cuda.max_memory_allocated (max over timed runs)"}
            log(f"  run {r + 1}/{repeats} {name}: {times[name][-1]:.3f} s ({cpu[name][-1]:.3f} s CPU)")
    return times, cpu, mem


# --- CPU peak memory, one fresh child process per variant ---------------------------------------------------

def _status_mib(key: str) -> float:
    """VmRSS / VmHWM of this process in MiB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Return freed heap to the OS and reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_one(cfg: BenchConfig, case: str, variant: str) -> dict:
    """Peak memory of one run of one variant in THIS process (call it in a fresh one): warm-up, reset, run."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build_model(cfg)
    fn = variant_fns(model, case_recipe(case, cfg))[variant]
    for _ in range(cfg.warmup):
        fn()
    if not _reset_peak_rss():  # no clear_refs (not Linux): fall back to ru_maxrss of a process that ran once
        import resource

        fn()
        scale = 1 if sys.platform == "darwin" else 1024
        return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "run_mib": None,
                "method": "ru_maxrss of a fresh process"}
    resting = _status_mib("VmRSS")
    fn()
    peak = _status_mib("VmHWM")
    return {"peak_mib": peak, "run_mib": peak - resting, "method": "VmHWM after clear_refs, fresh process"}


def _child_env() -> dict[str, str]:
    """This process's environment with the checkout on PYTHONPATH, so that `-m lab.bench` imports from any folder."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def memory_in_children(cfg: BenchConfig, case: str, log: Callable[[str], None] = lambda s: None) -> dict[str, dict]:
    """measure_one for every variant, each in a fresh `python -m lab.bench --one` process."""
    out = {}
    for variant in cfg.variants:
        cmd = [sys.executable, "-m", "lab.bench", "--one", variant, "--cases", case, *cfg.argv()]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
        if done.returncode:
            raise RuntimeError(f"memory child for {case}/{variant} failed:\n{done.stderr[-2000:]}")
        out[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"  memory {variant}: peak {out[variant]['peak_mib']:.0f} MiB")
    return out


# --- checks: graph breaks (torch._dynamo.explain) and GPU syncs in the sampling loop -------------------------

class _ProbeUNet:
    """Stands in for model.unet: delegates everything, and runs `probe(unet, args, kwargs)` on the first
    `calls` calls (every call when None)."""

    def __init__(self, unet, probe: Callable, calls: int | None = None):
        self._unet, self._probe, self._left = unet, probe, calls

    def __getattr__(self, name):
        return getattr(self._unet, name)

    def __call__(self, *args, **kwargs):
        if self._left is None or self._left > 0:
            self._left = None if self._left is None else self._left - 1
            self._probe(self._unet, args, kwargs)
        return self._unet(*args, **kwargs)


def graph_breaks(model: Model, recipe: Recipe, attention: str) -> dict:
    """torch._dynamo.explain of the UNet with our processors installed, at step 0 and step 1 of run_edit."""
    reports = []

    def explain(unet, args, kwargs):
        torch._dynamo.reset()
        ex = torch._dynamo.explain(getattr(unet, "_orig_mod", unet))(*args, **kwargs)
        reports.append(ex)

    unet = model.unet
    model.unet = _ProbeUNet(unet, explain, calls=2)
    try:
        run_edit(model, recipe.model_copy(update={"steps": 2}), attention=attention)
    finally:
        model.unet = unet
    reasons = sorted({f"{b.reason} at {b.user_stack[-1] if b.user_stack else '?'}"
                      for ex in reports for b in ex.break_reasons})
    return {"graphs": [ex.graph_count for ex in reports], "breaks": [ex.graph_break_count for ex in reports],
            "reasons": reasons}


def sync_check(model: Model, recipe: Recipe, attention: str) -> str:
    """On cuda: run an edit with torch.cuda.set_sync_debug_mode("error") from the first UNet call to the last step."""
    if model.device.type != "cuda":
        return "skipped (not cuda)"

    def arm(unet, args, kwargs):
        torch.cuda.set_sync_debug_mode("error")

    def disarm(i: int, steps: int) -> None:
        if i == steps:
            torch.cuda.set_sync_debug_mode(0)

    unet = model.unet
    model.unet = _ProbeUNet(unet, arm, calls=1)
    try:
        run_edit(model, recipe, attention=attention, progress=disarm)
        return "no sync in the sampling loop"
    except RuntimeError as err:
        import traceback

        ours = [f for f in traceback.extract_tb(err.__traceback__) if "/torch/" not in f.filename]
        where = f" at {ours[-1].filename}:{ours[-1].lineno} ({ours[-1].line})" if ours else ""
        return f"SYNC: {str(err).splitlines()[0]}{where}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
        model.unet = unet


def calls_per_step(model: Model, case: str, cfg: BenchConfig, pipe=None) -> dict[str, int]:
    """aten operator calls per sampling step of each variant (a run of 3 steps minus a run of 2).

    Where the host's kernel launches set the pace (small batches on a fast GPU), each call costs time
    whatever its size; the count is the same on every device, so it can be compared here.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for variant in cfg.variants:
        per_run = []
        for steps in (2, 3):
            fn = variant_fns(model, case_recipe(case, replace(cfg, steps=steps)), pipe)[variant]
            fn()  # the first call of a shape may differ (lazy initialisation)
            Count.calls = 0
            with Count():
                fn()
            per_run.append(Count.calls)
        counts[variant] = per_run[1] - per_run[0]
    return counts


# --- the whole benchmark ---------------------------------------------------------------------------------------

@dataclass
class Report:
    config: dict
    environment: dict
    command: str
    cases: dict = field(default_factory=dict)  # case -> {"times"|"cpu_times": {v: [s]}, "memory": {v: {...}}}
    checks: dict = field(default_factory=dict)  # "case/attention" -> graph breaks and sync findings
    calls: dict = field(default_factory=dict)  # case -> {variant: aten calls per sampling step} (with check)


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    """What the numbers depend on: device, versions, threads and the machine's load."""
    import diffusers
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpuinfo = Path("/proc/cpuinfo")
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")] if cpuinfo.exists() else []
        name = f"{models[0] if models else platform.processor()} ({os.cpu_count()} logical CPUs)"
    return {
        "device": f"{device.type}: {name}", "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def run_bench(cfg: BenchConfig, command: str = "", check: bool = False,
              log: Callable[[str], None] = lambda s: None) -> Report:
    """Time (and measure the memory of) every case and variant of cfg; with check, also graph breaks/syncs."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build_model(cfg)
    report = Report(config=asdict(cfg), environment=environment(model.device, model.dtype), command=command)
    pipe = plain_pipeline(model)
    for case in cfg.cases:
        recipe = case_recipe(case, cfg)
        if check:
            for attention in ("fused", "explicit"):
                log(f"{case}: checking {attention} attention")
                found = graph_breaks(model, recipe, attention)
                found["sync"] = sync_check(model, recipe, attention)
                report.checks[f"{case}/{attention}"] = found
            report.calls[case] = calls_per_step(model, case, cfg, pipe)
        log(f"{case}: timing {', '.join(cfg.variants)}")
        fns = variant_fns(model, recipe, pipe)
        fns = {v: fns[v] for v in cfg.variants}
        times, cpu, mem = time_interleaved(fns, model.device, cfg.repeats, cfg.warmup, log)
        report.cases[case] = {"times": times, "cpu_times": cpu, "memory": mem if cfg.memory else {}}
    if cfg.memory and model.device.type != "cuda":
        # each variant in a fresh process, after this one has let its model go: an SDXL-sized model in fp32
        # (14 GB) twice would not fit a 24 GB machine
        del model, pipe, fns
        gc.collect()
        for case in cfg.cases:
            report.cases[case]["memory"] = memory_in_children(cfg, case, log)
    report.environment["loadavg_end"] = _loadavg()
    return report


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def _time_cells(times: dict[str, list[float]]) -> tuple[dict[str, str], str, str]:
    """Per-variant "median [min-max]" cells and the p2p/plain, explicit/p2p ratios of the medians."""
    med = {v: statistics.median(t) for v, t in times.items()}
    cells = {v: f"{med[v]:.3f} [{min(t):.3f}-{max(t):.3f}]" for v, t in times.items()}
    return cells, _ratio(med.get("p2p"), med.get("plain")), _ratio(med.get("explicit"), med.get("p2p"))


def markdown(report: Report) -> str:
    """The report as a RESULTS.md section: configuration, environment, one table row per case."""
    c, e = report.config, report.environment
    size = c["size"] or ARCHS.get(c["arch"], "?")
    lines = [
        f"### {c['arch']}, {e['device']}, {e['dtype']}, {size}x{size}, {c['steps']} steps, source + {c['targets']}"
        f" target(s){', compiled' if c['compile'] else ''}"
        f"{', denoiser ' + c['quantize'] + ' (both variants)' if c.get('quantize') else ''} ({e['date']})",
        "",
        f"Command: `{report.command}`  ",
        f"torch {e['torch']} (cuda {e['cuda']}), diffusers {e['diffusers']}, transformers {e['transformers']},"
        f" python {e['python']}; {e['threads']} thread(s); load average {e['loadavg_start']:.1f} at start,"
        f" {e.get('loadavg_end', 0.0):.1f} at end; {c['warmup']} warm-up and {c['repeats']} timed run(s) of each"
        " variant, interleaved.",
        "",
        "| case | plain s | p2p s | explicit s | p2p/plain | explicit/p2p | plain peak MiB (run) |"
        " p2p peak MiB (run) | explicit peak MiB (run) | p2p/plain peak (run) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, res in report.cases.items():
        cells, p2p_plain, explicit_p2p = _time_cells(res["times"])
        mem = res["memory"]

        def mcell(v: str) -> str:
            if v not in mem:
                return "-"
            run = mem[v]["run_mib"]
            return f"{mem[v]['peak_mib']:.0f} ({run:.0f})" if run is not None else f"{mem[v]['peak_mib']:.0f}"

        def mratio(key: str) -> str:
            return _ratio(*(mem.get(v, {}).get(key) for v in ("p2p", "plain")))

        lines.append(
            f"| {case} | {cells.get('plain', '-')} | {cells.get('p2p', '-')} | {cells.get('explicit', '-')} |"
            f" {p2p_plain} | {explicit_p2p} | {mcell('plain')} | {mcell('p2p')} | {mcell('explicit')} |"
            f" {mratio('peak_mib')} ({mratio('run_mib')}) |"
        )
    if e["device"].startswith("cpu"):
        lines += ["", "Process CPU time (all threads; what a variant costs on a shared CPU):", "",
                  "| case | plain CPU s | p2p CPU s | explicit CPU s | p2p/plain | explicit/p2p |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for case, res in report.cases.items():
            cells, p2p_plain, explicit_p2p = _time_cells(res["cpu_times"])
            lines.append(f"| {case} | {cells.get('plain', '-')} | {cells.get('p2p', '-')} |"
                         f" {cells.get('explicit', '-')} | {p2p_plain} | {explicit_p2p} |")
    methods = sorted({m["method"] for res in report.cases.values() for m in res["memory"].values()})
    note = "Seconds: median [min-max] over the timed runs of one whole edit (encode, sample, decode)."
    if methods:
        note += f" Memory: {'; '.join(methods)}; (run) is the peak above the resting level before the run."
    lines += ["", note]
    lines += [""] if report.checks else []
    for case, calls in report.calls.items():
        lines.append(f"- aten calls per sampling step, {case}: "
                     + ", ".join(f"{v} {n}" for v, n in calls.items()) + ".")
    for key, found in report.checks.items():
        lines.append(f"- check {key}: graphs {found['graphs']}, graph breaks {found['breaks']}"
                     f"{': ' + '; '.join(found['reasons']) if found['reasons'] else ''}; {found['sync']}.")
    return "\n".join(lines) + "\n"


def write_results(report: Report, path: str | Path, text: str | None = None) -> None:
    """Append the report's markdown section (or `text`) to a RESULTS.md file (made with a title when new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "" if path.exists() else "# Benchmark results\n\nMade by `python -m lab.bench`; method in benchmarks/README.md.\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(head + "\n" + (text if text is not None else markdown(report)))


# --- command line ------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.splitlines()[0])
    d = BenchConfig()
    p.add_argument("--arch", default=d.arch, choices=tuple(ARCHS))
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype, choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: native)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--targets", type=int, default=d.targets)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--quantize", default=None, help="quantize the denoiser (int8, fp8: torchao weight-only), loaded"
                                                     " by p2p's loader; plain diffusers runs on the same components")
    p.add_argument("--cases", default=",".join(d.cases), help=f"comma-separated: {', '.join(CASES)}")
    p.add_argument("--variants", default=",".join(d.variants), help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--check", action="store_true", help="also report graph breaks (dynamo explain) and GPU syncs")
    p.add_argument("--results", help="append a markdown section to this file (e.g. benchmarks/RESULTS.md)")
    p.add_argument("--json", help="write the whole report as JSON to this file")
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # memory child: one variant, one case
    return p


def config_from(ns: argparse.Namespace) -> BenchConfig:
    return BenchConfig(arch=ns.arch, device=ns.device, dtype=ns.dtype, size=ns.size, steps=ns.steps,
                       targets=ns.targets, repeats=ns.repeats, warmup=ns.warmup, compile=ns.compile,
                       cases=tuple(ns.cases.split(",")), variants=tuple(ns.variants.split(",")),
                       threads=ns.threads, memory=not ns.no_memory, seed=ns.seed, quantize=ns.quantize)


def bench(cfg: BenchConfig, command: str, check: bool = False, results: str | None = None,
          json_path: str | None = None, log: Callable[[str], None] = lambda s: None) -> Report:
    """run_bench, then print the markdown and write it (and the JSON) where asked."""
    report = run_bench(cfg, command=command, check=check, log=log)
    print(markdown(report), end="", flush=True)
    if results:
        write_results(report, results)
    if json_path:
        Path(json_path).write_text(json.dumps(asdict(report), indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ns = parser().parse_args(argv)
    try:
        cfg = config_from(ns)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if ns.one:
        print(json.dumps(measure_one(cfg, cfg.cases[0], ns.one)))
        return 0
    bench(cfg, "python -m lab.bench " + shlex.join(argv), check=ns.check, results=ns.results, json_path=ns.json,
          log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
