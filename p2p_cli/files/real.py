"""Real pictures: the picture of a recipe found and checked, loaded at the model's size, inverted (or taken
from the inversion cache), and what an output folder records about it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_cli.recipe import Recipe, RecipeError, beside_recipe


@dataclass
class RealPicture:
    """A real picture ready to edit: the picture at the model's size, its inversion, where both came from."""

    path: Path
    crop: tuple[int, int, int, int] | None
    picture: Any  # (3, H, W) float tensor in [0, 1]: what input.png holds
    inversion: Any  # p2p_cli.engine.inversion.Inversion
    cached: bool
    seconds: float  # spent in this run (loading, hashing, inverting or reading the cache)

    def write(self, folder: Path) -> dict[str, str]:
        """input.png and inversion.safetensors in `folder`; role -> file name."""
        from p2p_cli.files.inversion_cache import FILE_NAME, save_inversion
        from p2p_cli.render.images import save_png

        save_png(self.picture, folder / "input.png")
        save_inversion(self.inversion, folder / FILE_NAME, self.inversion.settings.get("key", ""))
        return {"input": "input.png", "inversion": FILE_NAME}

    def box(self) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """The pixel box (left, top, right, bottom) of the original picture that was edited (its crop, else the
        largest centred box) and the picture's (width, height), upright."""
        from p2p_cli.render.load import centre_box, check_picture

        width, height = check_picture(self.path)
        box = tuple(self.crop) if self.crop else centre_box(width, height, tuple(self.picture.shape[-2:]))
        return box, (width, height)

    def summary(self, reconstruction) -> str:
        """What a real-picture edit says about its picture: the pixel box edited, and how faithful the source is
        (its PSNR against input.png, beside the VAE's own round trip)."""
        from p2p_cli.engine.inversion import psnr

        (left, top, right, bottom), (width, height) = self.box()
        h, w = self.picture.shape[-2:]
        vae = self.inversion.vae_psnr
        return (f"crop box ({left}, {top}, {right}, {bottom}) of the {width}x{height} picture, resized to {w}x{h};"
                f" source PSNR {psnr(reconstruction, self.picture):.1f} dB"
                + (f" (VAE round trip {vae:.1f} dB)" if vae is not None else ""))

    def tile_note(self, reconstruction) -> str:
        """The grid's source tile title: the inversion method and the source's PSNR."""
        from p2p_cli.engine.inversion import psnr

        return f"{self.inversion.method}, PSNR {psnr(reconstruction, self.picture):.1f} dB"

    def record(self, reconstruction) -> dict[str, Any]:
        """The run.json entry: method, seconds, reconstruction PSNR against input.png and the VAE ceiling."""
        from p2p_cli.engine.inversion import psnr

        inv = self.inversion
        return {
            "image": str(self.path),
            "crop": list(self.crop) if self.crop else "centre",
            "box": list(self.box()[0]),  # the pixels edited, either way
            "method": inv.method,
            "seconds": round(inv.seconds, 3),
            "cached": self.cached,
            "psnr": round(psnr(reconstruction, self.picture), 2),
            "psnr_vae_ceiling": None if inv.vae_psnr is None else round(inv.vae_psnr, 2),
            "key": inv.settings.get("key"),
            "settings": {k: v for k, v in inv.settings.items() if k not in ("key", "model")},
        }

    def reconstruction(self, model):
        """The source picture (3, H, W) in [0, 1] that guided sampling makes from this inversion, no edit."""
        from p2p_cli.engine.inversion import reconstruct

        settings = self.inversion.settings
        return reconstruct(model, self.inversion, settings["prompt"], float(settings["guidance"]))

    def check_matches(self, recipe: Recipe, model, where: str = "recipe") -> None:
        """An inversion serves an edit only with the same steps, guidance, prompt, method and model: RecipeError if
        not."""
        settings = self.inversion.settings
        problems = []
        steps = self.inversion.uncond.shape[0]
        if steps != recipe.steps:
            problems.append(f"steps: the inversion was made with {steps} steps and the recipe has {recipe.steps};"
                            f" invert again with steps={recipe.steps} (or set the recipe's steps to {steps})")
        if "guidance" in settings and float(settings["guidance"]) != float(recipe.guidance):
            problems.append(f"guidance: the inversion was made at guidance {settings['guidance']} and the recipe"
                            f" has {recipe.guidance}; invert again at the recipe's guidance")
        if "prompt" in settings and settings["prompt"] != recipe.source:
            problems.append(f"source: the inversion was made for the prompt {settings['prompt']!r}, not"
                            f" {recipe.source!r}; invert again with the recipe's source")
        if settings.get("vae") != recipe.vae:
            problems.append(f"vae: the inversion was made with vae {settings.get('vae') or 'auto'} and the recipe has"
                            f" {recipe.vae or 'auto'}; invert again with the recipe's vae")
        if settings.get("shift") != recipe.shift:
            problems.append(f"shift: the inversion was made with shift {settings.get('shift')} and the recipe has"
                            f" {recipe.shift}; invert again with the recipe's shift")
        if recipe.inversion is not None and recipe.inversion != self.inversion.method:
            problems.append(f"inversion: the picture was inverted with {self.inversion.method} and the recipe asks"
                            f" for {recipe.inversion}; invert again with method={recipe.inversion!r}")
        made_for = (settings.get("model") or {}).get("id")
        if made_for is not None and made_for != model.id:
            problems.append(f"model: the inversion was made with {made_for}, not {model.id}; invert again with"
                            " this model")
        if problems:
            raise RecipeError(problems, where)


def _checked_picture(field: str, value: str | None, recipe_path: str, crop=None) -> Path | None:
    """A picture file a recipe names in `field` (relative to the recipe file), checked before any model loads."""
    from p2p_cli.render.load import ImageError, check_picture

    if value is None:
        return None
    path = beside_recipe(value, recipe_path)
    try:
        check_picture(path, crop)
    except ImageError as err:
        raise RecipeError([f"{field}: {err}"], recipe_path) from None
    return path.resolve()


def resolve_image(recipe: Recipe, recipe_path: str) -> Path | None:
    """The recipe's picture (relative to the recipe file's folder), checked before any model loads."""
    return _checked_picture("image", recipe.image, recipe_path, recipe.crop)


def prepare(model, path: Path, prompt: str, *, size: tuple[int, int] | None, crop, method: str, steps: int,
            guidance: float, negative_prompt: str, geo=None, where: str = "recipe", vae: str | None = None,
            progress: Callable[[int, int], None] | None = None,
            warn: Callable[[str], None] | None = None) -> RealPicture:
    """Load the picture at the model's size and invert it, or take its inversion from the cache.

    A picture that cannot be loaded is a RecipeError on `image` (where: the recipe's name for the message). A
    cache entry that is damaged, or a cache that cannot be written, is a warning through `warn`.
    """
    from p2p_cli.files.inversion_cache import cached_invert
    from p2p_cli.render.load import ImageError, load_image

    start = time.perf_counter()
    try:
        picture = load_image(path, size or model.native_size, crop)
    except ImageError as err:
        raise RecipeError([f"image: {err}"], where) from None
    inversion, cached = cached_invert(model, picture, prompt=prompt, method=method, steps=steps, guidance=guidance,
                                      negative_prompt=negative_prompt, progress=progress, geo=geo, vae=vae, warn=warn)
    return RealPicture(path, crop, picture, inversion, cached, time.perf_counter() - start)


def resolve_mask(recipe: Recipe, recipe_path: str) -> Path | None:
    """The recipe's mask (relative to the recipe file's folder), checked before any model loads."""
    return _checked_picture("mask", recipe.mask, recipe_path)


def recipe_loras(recipe: Recipe, recipe_path: str) -> tuple[tuple[str, float], ...]:
    """The recipe's LoRA files (relative to the recipe file's folder) and scales, checked before any model loads
    (no torch: `p2p validate` runs it too)."""
    found, problems = [], []
    for i, lora in enumerate(recipe.loras):
        path = beside_recipe(lora.path, recipe_path)
        if not path.is_file():
            problems.append(f"loras[{i}].path: no file at {path}")
            continue
        found.append((str(path.resolve()), lora.scale))
    if problems:
        raise RecipeError(problems, recipe_path)
    return tuple(found)


def user_mask(recipe: Recipe, recipe_path: str, size: tuple[int, int], picture: Path | None = None):
    """The recipe's mask at the output size (h, w), (h, w) float in [0, 1]; over a real picture it is scaled to
    the picture and cut with its crop, so it covers the same pixels. None without a mask."""
    from p2p_cli.render.load import ImageError, check_picture, load_mask

    path = resolve_mask(recipe, recipe_path)
    if path is None:
        return None
    picture_size = check_picture(picture) if picture is not None else None
    try:
        return load_mask(path, size, recipe.crop, picture_size)
    except ImageError as err:
        raise RecipeError([f"mask: {err}"], recipe_path) from None


def picture_file(image: Any) -> Path:
    """A picture given as a PIL image, as a file: written once as PNG into the cache (pictures/<sha256>.png), so
    a recipe can name it and its inversion is cached like a file's. A path comes back as it is."""
    if not hasattr(image, "save") or not hasattr(image, "mode"):
        return Path(image).expanduser()
    import hashlib
    import io

    from p2p_cli.files.inversion_cache import cache_dir

    data = io.BytesIO()
    image.save(data, format="PNG")
    blob = data.getvalue()
    folder = cache_dir().parent / "pictures"
    path = folder / f"{hashlib.sha256(blob).hexdigest()}.png"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    return path
