"""`p2p invert IMAGE --prompt TEXT`: invert a picture once (cached), write its reconstruction; also for `edit`."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.errors import EXIT_OK, UsageError, handled
from p2p_cli.files.outputs import DTYPE_NAMES, atomic_folder, check_free, library_versions, write_json
from p2p_cli.files.real import RealPicture
from p2p_cli.recipe import RecipeError

if TYPE_CHECKING:  # the engine is imported once the command runs a model, not for help
    from p2p_cli.api import Model


class Method(str, Enum):
    direct = "direct"
    null_text = "null-text"
    negative_prompt = "negative-prompt"
    ddim = "ddim"
    ddpm = "ddpm"
    flowedit = "flowedit"


def invert_source(model: Model, path: Path, prompt: str, *, size: tuple[int, int] | None, crop, method: str,
                  steps: int, guidance: float, negative_prompt: str, label: str, log, bar) -> RealPicture:
    """api.invert with a progress bar and a log line (a cache hit says how long the inversion once took)."""
    from p2p_cli.api import invert as invert_picture

    start = time.perf_counter()
    progress, remove = None, None
    if bar is not None:
        from p2p_cli.cli.common import phase_progress

        phases = ["DDIM inversion", "null-text optimisation"] if method == "null-text" else [f"{method} inversion"]
        progress, remove = phase_progress(bar, label, steps, phases)
        bar.start()
    try:
        real = invert_picture(model, path, prompt, method=method, steps=steps, guidance=guidance, crop=crop,
                              size=size, negative_prompt=negative_prompt, progress=progress,
                              warn=lambda message: print(f"warning: {label}: {message}", file=sys.stderr, flush=True))
    except RecipeError as err:  # `p2p invert IMAGE`: the picture is an argument, not a recipe field
        raise UsageError(err.problems[0].removeprefix("image: ")) from None
    finally:
        if bar is not None:
            bar.stop()
            remove()
    if real.cached:
        log(f"{label}: reusing the {method} inversion of {path.name} from the cache"
            f" ({time.perf_counter() - start:.1f} s now; inverting it took {real.inversion.seconds:.1f} s)")
    else:
        log(f"{label}: inverted {path.name} ({method}, {steps} steps) in {real.inversion.seconds:.1f} s")
    return real


Image = Annotated[Path, typer.Argument(help="The picture to invert (any format Pillow reads).", metavar="IMAGE",
                                       show_default=False)]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="What the picture shows: the source prompt of later edits.",
                                     show_default=False)]
MethodOpt = Annotated[Optional[Method], typer.Option(
    "--method", show_default=False,
    help="direct (exact and fast), null-text (optimised), negative-prompt (fast), ddim, ddpm (edit-friendly noise"
         " maps; SD, SDXL) or flowedit (their flow counterpart; SD3, FLUX). Default: the model's, as an edit's (its"
         " p2p-defaults.json; else direct).")]
InvSteps = Annotated[int, typer.Option("--steps", min=1, max=1000, help="DDIM steps (edits must use the same).")]
Guidance = Annotated[Optional[float], typer.Option(
    "--guidance", min=0.0, show_default=False,
    help="Guidance scale (edits must use the same). Default: the model family's (SD 7.5, SDXL 5.0).")]
Negative = Annotated[str, typer.Option("--negative-prompt", help="Unconditional prompt (direct, ddim, start of null-text).")]
Crop = Annotated[Optional[str], typer.Option("--crop", metavar="L,T,R,B",
                                             help="Crop box in pixels (default: the largest centred box).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the results: OUT/<name>/ (see --name).")]
Name = Annotated[Optional[str], typer.Option("--name", help="Output folder name (default: the picture's file stem).")]


def invert(
    image: Image,
    prompt: Prompt,
    method: MethodOpt = None,
    steps: InvSteps = 50,
    guidance: Guidance = None,
    negative_prompt: Negative = "",
    crop: Crop = None,
    out: OutOpt = Path("outputs"),
    name: Name = None,
    model: o.ModelOnly = None,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    overwrite: o.Overwrite = False,
    json_: o.JsonInvert = False,
    quiet: o.Quiet = False,
    allow_pickle: o.AllowPickle = False,
    threads: o.Threads = None,
    debug: o.Debug = False,
) -> None:
    """Invert a picture (cached for later edits) and write OUT/<name>/: input.png, source.png, inversion.safetensors."""
    from p2p_cli.cli.common import dtype_name, progress_bar, use_threads
    from p2p_cli.runs.edits import model_key

    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    with handled(debug):
        start = time.perf_counter()
        if not prompt.strip():
            raise UsageError("--prompt must describe the picture")
        box = _parse_crop(crop)
        name = name or image.stem
        from p2p_cli.recipe import name_problem

        if why := name_problem(name):
            raise UsageError(f"--name {why}")
        folder = Path(out) / name
        from p2p_cli.render.load import ImageError, check_picture

        try:
            check_picture(image, box)
        except ImageError as err:
            raise UsageError(str(err)) from None
        check_free(folder, overwrite)
        n_threads = use_threads(threads)
        from p2p_cli.api import load_model
        from p2p_cli.api import pick_device, pick_dtype

        dev = pick_device(device.value)
        dt = pick_dtype(dtype.value, dev)
        spec = model_key(model)
        log(f"loading model {spec} ({dev}, {dtype_name(dt)})")
        net = load_model(spec, device=dev.type if dev.index is None else str(dev), dtype=dtype_name(dt),
                         allow_pickle=allow_pickle)
        guidance = net.family.default_guidance if guidance is None else guidance
        from p2p_cli.checks import DDIM_GUIDANCE, ddim_warning
        from p2p_cli.family_defaults import default_inversion, inversion_problem

        method = Method(default_inversion(net.defaults)) if method is None else method
        if why := inversion_problem(method.value, net.family.sampler, net.family.unconditional(net), net.family.label):
            raise UsageError(f"--method {method.value}: {why}")

        if method.value == "ddim" and guidance > DDIM_GUIDANCE:
            print(f"warning: {ddim_warning('--method', guidance)}", file=sys.stderr)
        n_tokens = len(net.tokenizer(prompt).input_ids)
        if n_tokens > net.tokenizer.model_max_length:
            most = net.tokenizer.model_max_length
            raise UsageError(f"--prompt has {n_tokens} tokens; the model reads at most {most}")
        bar = None if quiet or not console.is_terminal else progress_bar(console)
        real = invert_source(net, image, prompt, size=None, crop=box, method=method.value, steps=steps,
                             guidance=guidance, negative_prompt=negative_prompt, label=name, log=log, bar=bar)
        tic = time.perf_counter()
        reconstruction = real.reconstruction(net)
        seconds = {"invert": real.seconds, "reconstruct": time.perf_counter() - tic}
        with atomic_folder(folder, overwrite) as tmp:
            from p2p_cli.render.images import save_png

            files = real.write(tmp)
            files["source"] = save_png(reconstruction, tmp / "source.png").name
            seconds["total"] = time.perf_counter() - start
            record = {
                "name": name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "prompt": prompt,
                "inversion": real.record(reconstruction),
                "model": {"id": net.id, "revision": net.revision, "path": net.path},
                "device": str(net.device),
                "dtype": DTYPE_NAMES.get(str(net.dtype), str(net.dtype)),
                "threads": n_threads,
                "versions": library_versions(),
                "images": files,
                "seconds": {k: round(v, 3) for k, v in seconds.items()},
            }
            write_json(tmp / "run.json", record)
    inv = record["inversion"]
    if json_:
        print(json.dumps({"name": name, "out": str(folder), "run": str(folder / "run.json"),
                          "images": {k: str(folder / v) for k, v in files.items()}, "inversion": inv}), flush=True)
    else:
        print(f"wrote {folder}/ ({inv['method']}{', cached' if inv['cached'] else ''}, {inv['seconds']:.1f} s;"
              f" PSNR {inv['psnr']:.2f} dB, VAE round trip {inv['psnr_vae_ceiling']:.2f} dB)", flush=True)
    raise typer.Exit(EXIT_OK)


def _parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """"L,T,R,B" -> a box, with the recipe's rules."""
    if text is None:
        return None
    from p2p_cli.recipe import parse_crop

    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--crop {text}: expected L,T,R,B in pixels, e.g. 0,0,512,512") from None
    try:
        return parse_crop(values)
    except ValueError as err:
        raise UsageError(f"--crop {text}: {err}") from None
