"""`p2p invert IMAGE --prompt TEXT`: invert a picture once (cached), write its reconstruction; also for `edit`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.errors import EXIT_OK, UsageError, handled
from p2p_cli.models import Model, load_model, pick_device, pick_dtype
from p2p_cli.outputs import DTYPE_NAMES, atomic_folder, check_free, library_versions, write_json
from p2p_cli.recipe import DEFAULT_INVERSION, Recipe, RecipeError


class Method(str, Enum):
    null_text = "null-text"
    negative_prompt = "negative-prompt"
    ddim = "ddim"


@dataclass
class RealSource:
    """A real picture ready to edit: the picture at the model's size, its inversion, where both came from."""

    path: Path
    crop: tuple[int, int, int, int] | None
    picture: Any  # (3, H, W) float tensor in [0, 1]: what input.png holds
    inversion: Any  # p2p_cli.invert.Inversion
    cached: bool
    seconds: float  # spent in this run (loading, hashing, inverting or reading the cache)

    def write(self, folder: Path) -> dict[str, str]:
        """input.png and inversion.safetensors in `folder`; role -> file name."""
        from p2p_cli.inversion_cache import FILE_NAME, save_inversion
        from p2p_cli.render.images import save_png

        save_png(self.picture, folder / "input.png")
        save_inversion(self.inversion, folder / FILE_NAME, self.inversion.settings.get("key", ""))
        return {"input": "input.png", "inversion": FILE_NAME}

    def record(self, reconstruction) -> dict[str, Any]:
        """The run.json entry: method, seconds, reconstruction PSNR against input.png and the VAE ceiling."""
        from p2p_cli.invert import psnr

        inv = self.inversion
        return {
            "image": str(self.path),
            "crop": list(self.crop) if self.crop else "centre",
            "method": inv.method,
            "seconds": round(inv.seconds, 3),
            "cached": self.cached,
            "psnr": round(psnr(reconstruction, self.picture), 2),
            "psnr_vae_ceiling": None if inv.vae_psnr is None else round(inv.vae_psnr, 2),
            "key": inv.settings.get("key"),
            "settings": {k: v for k, v in inv.settings.items() if k not in ("key", "model")},
        }


def resolve_image(recipe: Recipe, recipe_path: str) -> Path | None:
    """The recipe's picture (relative to the recipe file's folder), checked before any model loads."""
    from p2p_cli.render.load import ImageError, check_picture

    if recipe.image is None:
        return None
    path = Path(recipe.image).expanduser()
    if not path.is_absolute() and recipe_path != "-":
        path = Path(recipe_path).parent / path
    try:
        check_picture(path, recipe.crop)
    except ImageError as err:
        raise RecipeError([f"image: {err}"], recipe_path) from None
    return path.resolve()


def invert_source(model: Model, path: Path, prompt: str, *, size: tuple[int, int] | None, crop, method: str,
                  steps: int, guidance: float, negative_prompt: str, label: str, log, bar,
                  where: str | None = None, geo=None) -> RealSource:
    """Load the picture at the model's size and invert it, or take its inversion from the cache."""
    from p2p_cli.inversion_cache import cached_invert
    from p2p_cli.render.load import ImageError, load_image

    start = time.perf_counter()
    try:
        picture = load_image(path, size or model.native_size, crop)
    except ImageError as err:
        if where is None:
            raise UsageError(str(err)) from None
        raise RecipeError([f"image: {err}"], where) from None
    progress, task = None, None
    if bar is not None:
        task = bar.add_task(f"{label}: inverting ({method})", total=steps)
        progress = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        bar.start()
    try:
        inversion, cached = cached_invert(model, picture, prompt=prompt, method=method, steps=steps,
                                          guidance=guidance, negative_prompt=negative_prompt, progress=progress,
                                          geo=geo)
    finally:
        if bar is not None:
            bar.stop()
            bar.remove_task(task)
    if cached:
        log(f"{label}: reusing the {method} inversion of {path.name} from the cache"
            f" (it took {inversion.seconds:.1f} s)")
    else:
        log(f"{label}: inverted {path.name} ({method}, {steps} steps) in {inversion.seconds:.1f} s")
    return RealSource(path, crop, picture, inversion, cached, time.perf_counter() - start)


Image = Annotated[Path, typer.Argument(help="The picture to invert (any format Pillow reads).", metavar="IMAGE",
                                       show_default=False)]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="What the picture shows: the source prompt of later edits.",
                                     show_default=False)]
MethodOpt = Annotated[Method, typer.Option("--method", help="null-text (faithful), negative-prompt (fast) or ddim.")]
InvSteps = Annotated[int, typer.Option("--steps", min=1, max=1000, help="DDIM steps (edits must use the same).")]
Guidance = Annotated[Optional[float], typer.Option(
    "--guidance", min=0.0, show_default=False,
    help="Guidance scale (edits must use the same). Default: the model family's (SD 7.5, SDXL 5.0).")]
Negative = Annotated[str, typer.Option("--negative-prompt", help="Unconditional prompt (ddim, start of null-text).")]
Crop = Annotated[Optional[str], typer.Option("--crop", metavar="L,T,R,B",
                                             help="Crop box in pixels (default: the largest centred box).")]
Name = Annotated[Optional[str], typer.Option("--name", help="Output folder name (default: the picture's file stem).")]


def invert(
    image: Image,
    prompt: Prompt,
    method: MethodOpt = Method(DEFAULT_INVERSION),
    steps: InvSteps = 50,
    guidance: Guidance = None,
    negative_prompt: Negative = "",
    crop: Crop = None,
    out: o.OutDir = Path("outputs"),
    name: Name = None,
    model: o.ModelSpec = None,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    overwrite: o.Overwrite = False,
    json_: o.Json = False,
    quiet: o.Quiet = False,
    allow_pickle: o.AllowPickle = False,
    debug: o.Debug = False,
) -> None:
    """Invert a picture (cached for later edits) and write OUT/<name>/: input.png, source.png, inversion.safetensors."""
    from p2p_cli.cli.common import dtype_name, model_key, progress_bar

    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    with handled(debug):
        start = time.perf_counter()
        if not prompt.strip():
            raise UsageError("--prompt must describe the picture")
        box = _parse_crop(crop)
        name = name or image.stem
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise UsageError(f"--name {name!r} cannot be a folder name (use letters, digits, - and _)")
        folder = Path(out) / name
        from p2p_cli.render.load import ImageError, check_picture

        try:
            check_picture(image, box)
        except ImageError as err:
            raise UsageError(str(err)) from None
        check_free(folder, overwrite)
        dev = pick_device(device.value)
        dt = pick_dtype(dtype.value, dev)
        spec = model_key(model)
        log(f"loading model {spec} ({dev}, {dtype_name(dt)})")
        net = load_model(spec, dev.type if dev.index is None else str(dev), dtype_name(dt), allow_pickle=allow_pickle)
        guidance = net.family.default_guidance if guidance is None else guidance
        n_tokens = len(net.tokenizer(prompt).input_ids)
        if n_tokens > net.tokenizer.model_max_length:
            most = net.tokenizer.model_max_length
            raise UsageError(f"--prompt has {n_tokens} tokens; the model reads at most {most}")
        bar = None if quiet or not console.is_terminal else progress_bar(console)
        real = invert_source(net, image, prompt, size=None, crop=box, method=method.value, steps=steps,
                             guidance=guidance, negative_prompt=negative_prompt, label=name, log=log, bar=bar)
        from p2p_cli.invert import reconstruct

        tic = time.perf_counter()
        reconstruction = reconstruct(net, real.inversion, prompt, guidance)
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
              f" PSNR {inv['psnr']:.2f} dB, VAE ceiling {inv['psnr_vae_ceiling']:.2f} dB)", flush=True)
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
