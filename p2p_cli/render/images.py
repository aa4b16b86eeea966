"""Tensors -> PNG files."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
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


DIM = 0.3  # brightness left outside a local-blend mask


def block_size(mask: torch.Tensor, largest: int = 16) -> int:
    """The side of the square blocks a nearest-upsampled (H, W) mask is made of (1 when it is not blocky)."""
    h, w = mask.shape
    for f in (16, 8, 4, 2):
        if f <= largest and h % f == 0 and w % f == 0:
            if _blocky(mask, f):
                return f
    return 1


def _blocky(mask: torch.Tensor, f: int) -> bool:
    low = mask[::f, ::f]
    return torch.equal(low.repeat_interleave(f, 0).repeat_interleave(f, 1), mask)


def smooth_mask(mask: torch.Tensor, latent_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """The (H, W) mask as applied, at picture size without the latent's blocks: a mask made of blocks of the
    latent's grid (latent_hw, or the block size found in it; local blend's, nearest-upsampled) is taken on that
    grid and upsampled bilinearly. A mask that is not blocky (a recipe's own mask, already smooth) is kept as is.
    (H, W) in [0, 1]."""
    mask = mask.detach().float().cpu()
    h, w = mask.shape
    f = block_size(mask) if latent_hw is None else h // latent_hw[0]
    if f <= 1 or h % f or w % f or not _blocky(mask, f):
        return mask.clamp(0, 1)
    low = mask[::f, ::f][None, None]
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


def mask_over(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The (3, H, W) image as is where the (H, W) mask is 1, dimmed where the blend kept the source."""
    keep = mask.float().clamp(0, 1)[None]
    return image * (keep + (1 - keep) * DIM)


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
    """The text chunks of a PNG file (empty when it has none; picture_texts.read_texts). OSError when it cannot be
    opened, ImageError when it is not a picture that can be read safely."""
    from p2p_cli.picture_texts import UnreadablePicture, read_texts
    from p2p_cli.render.load import ImageError

    try:
        return read_texts(path)
    except UnreadablePicture as err:
        raise ImageError(str(err)) from None


def save_images(
    folder: Path, roles: list[str], images: torch.Tensor, masks: dict[int, torch.Tensor] | None = None,
    texts: dict[str, dict[str, str]] | None = None, latent_hw: tuple[int, int] | None = None,
) -> dict[str, str]:
    """`<role>.png` for each (3, H, W) image; per local-blend mask `edit-<k>-mask.png` (white: edited; at picture
    size, smoothed: smooth_mask) and `edit-<k>-mask-over.png` (the edit, dimmed where the source was kept);
    role -> file name. texts: role -> PNG text chunks (a mask takes its edit's); latent_hw: the mask's grid."""
    if len(roles) != len(images):
        raise ValueError(f"{len(roles)} roles for {len(images)} images")
    texts = texts or {}
    files = {}
    for role, image in zip(roles, images):
        files[role] = save_png(image, Path(folder) / f"{role}.png", texts.get(role)).name
    for k, mask in sorted((masks or {}).items()):
        smooth = smooth_mask(mask, latent_hw)
        files[f"edit-{k}-mask"] = save_png(smooth, Path(folder) / f"edit-{k}-mask.png", texts.get(f"edit-{k}")).name
        if f"edit-{k}" in roles:
            over = mask_over(images[roles.index(f"edit-{k}")].float().cpu(), smooth)
            files[f"edit-{k}-mask-over"] = save_png(over, Path(folder) / f"edit-{k}-mask-over.png",
                                                    texts.get(f"edit-{k}")).name
    return files



def painted_mask(layers: list[str | Path], path: Path) -> Path | None:
    """A recipe's `mask:` from brush layers (the web app's ImageEditor), white where any layer is painted, written
    to `path`; None (and no file) when nothing is painted."""
    from PIL import ImageChops

    painted = None
    for layer in layers:
        alpha = Image.open(layer).convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        painted = alpha if painted is None else ImageChops.lighter(painted, alpha)
    if painted is None or painted.getbbox() is None:
        return None
    painted.save(path)
    return path
