"""Tensors -> PNG files."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (3, H, W) float image in [0, 1] -> an 8-bit RGB picture."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)  # (3, H, W)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), mode="RGB")  # (H, W, 3)


def mask_to_pil(mask: torch.Tensor) -> Image.Image:
    """An (H, W) float mask in [0, 1] -> an 8-bit greyscale picture (white = edited)."""
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {tuple(mask.shape)}")
    pixels = (mask.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(pixels.cpu().numpy(), mode="L")


def png_info(texts: dict[str, str] | None) -> PngInfo | None:
    """PNG text chunks (tEXt, or iTXt for text outside Latin-1)."""
    if not texts:
        return None
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    return info


def save_png(picture: Image.Image | torch.Tensor, path: Path, texts: dict[str, str] | None = None) -> Path:
    """Write a picture (or a (3, H, W) / (H, W) tensor) as PNG, with text chunks, and return the path."""
    if isinstance(picture, torch.Tensor):
        picture = to_pil(picture) if picture.ndim == 3 else mask_to_pil(picture)
    picture.save(path, format="PNG", pnginfo=png_info(texts))
    return Path(path)


def read_png_texts(path: Path) -> dict[str, str]:
    """The text chunks of a PNG file (empty when it has none)."""
    with Image.open(path) as im:
        im.load()
        return dict(getattr(im, "text", {}) or {})


def save_images(
    folder: Path, roles: list[str], images: torch.Tensor, masks: dict[int, torch.Tensor] | None = None,
    texts: dict[str, dict[str, str]] | None = None,
) -> dict[str, str]:
    """`<role>.png` for each (3, H, W) image and `edit-<k>-mask.png` per local-blend mask; role -> file name.
    texts: role -> PNG text chunks (a mask takes its edit's)."""
    if len(roles) != len(images):
        raise ValueError(f"{len(roles)} roles for {len(images)} images")
    texts = texts or {}
    files = {}
    for role, image in zip(roles, images):
        files[role] = save_png(image, Path(folder) / f"{role}.png", texts.get(role)).name
    for k, mask in sorted((masks or {}).items()):
        files[f"edit-{k}-mask"] = save_png(mask, Path(folder) / f"edit-{k}-mask.png", texts.get(f"edit-{k}")).name
    return files
