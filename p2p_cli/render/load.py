"""Picture files -> RGB tensors at the model's size: centre crop (or a given box), then resize."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from p2p_cli.paths import open_regular
from p2p_cli.picture_texts import max_pixels

if TYPE_CHECKING:
    import torch

ASPECT_TOLERANCE = 0.05  # a crop box may differ this much (relative) in aspect ratio from the output size
WHITE = (255, 255, 255)


class ImageError(ValueError):
    """A picture that cannot be used; the message says why and what to do."""


def open_picture(path: str | Path) -> Image.Image:
    """The picture as 8-bit RGB, turned upright (EXIF); transparency is laid on white, grey becomes RGB."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"no picture at {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not a picture")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise ImageError(f"{path} is not a regular file (a pipe, socket or device); save the picture to a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path) as f, Image.open(f) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(f"{path} has more than {max_pixels():,} pixels, the most p2p reads (Pillow's"
                         f" decompression-bomb limit, Image.MAX_IMAGE_PIXELS); scale it down first") from None
    except UnidentifiedImageError as err:
        raise ImageError(f"{path} is not a picture Pillow can read ({type(err).__name__}: {err})") from None
    except OSError as err:  # truncated or damaged files, permissions
        raise ImageError(f"cannot read {path}: {err.strerror or err}") from None
    except (ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, MemoryError) as err:
        # what Pillow's decoders raise on some damaged files
        raise ImageError(f"{path} is a damaged picture ({type(err).__name__}: {err})") from None
    return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
    """RGBA / LA / transparent palette over white, 16-bit grey scaled to 8 bits, anything else converted."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode.startswith("I"):  # 16- or 32-bit integer grey: PNG 16-bit greyscale opens as I;16
        grey = np.asarray(im, dtype=np.float64)
        grey = grey / 257.0 if grey.max(initial=0) > 255 else grey
        return Image.fromarray(grey.clip(0, 255).round().astype(np.uint8), mode="L").convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def centre_box(width: int, height: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred (left, top, right, bottom) box of a width x height picture with the aspect of size (h, w)."""
    out_h, out_w = size
    if width * out_h > height * out_w:  # wider than wanted: cut the sides
        w = max(1, round(height * out_w / out_h))
        left = (width - w) // 2
        return left, 0, left + w, height
    h = max(1, round(width * out_h / out_w))
    top = (height - h) // 2
    return 0, top, width, top + h


def check_box(box: tuple[int, int, int, int], width: int, height: int, size: tuple[int, int]) -> None:
    """A crop box must lie inside the picture and have about the aspect ratio of the output size (h, w)."""
    left, top, right, bottom = box
    if right > width or bottom > height:
        raise ImageError(f"crop {list(box)} goes outside the {width}x{height} picture")
    out_h, out_w = size
    w, h = right - left, bottom - top
    if abs((w / h) / (out_w / out_h) - 1) > ASPECT_TOLERANCE:
        side = min(w * out_h // out_w, h)
        hint = [left, top, left + side * out_w // out_h, top + side]
        raise ImageError(
            f"crop {list(box)} is {w}x{h} px, but the model makes {out_w}x{out_h} pictures; give a box of"
            f" that shape (e.g. {hint}) or leave crop out for a centre crop"
        )


def min_side(size: tuple[int, int]) -> int:
    """The smallest crop side worth inverting: a quarter of the output's shorter side (at least 8 px)."""
    return max(8, min(size) // 4)


def load_image(path: str | Path, size: tuple[int, int], crop: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """The picture cropped (centre crop, or the box `crop`) and resized to size (h, w): (3, h, w) float in [0, 1]."""
    im = open_picture(path)
    width, height = im.size
    box = centre_box(width, height, size) if crop is None else tuple(crop)
    if crop is not None:
        check_box(box, width, height, size)
    w, h = box[2] - box[0], box[3] - box[1]
    need = min_side(size)
    if min(w, h) < need:
        what = f"its crop is {w}x{h} px" if crop is not None else f"it is {width}x{height} px"
        raise ImageError(
            f"{path} is too small: {what}, and this model needs at least {need} px a side (it works at"
            f" {size[1]}x{size[0]})"
        )
    out_h, out_w = size
    if box != (0, 0, width, height):
        im = im.crop(box)  # first: resize(box=) would blend in pixels from outside the box
    if (w, h) != (out_w, out_h):
        im = im.resize((out_w, out_h), Image.Resampling.LANCZOS)
    import torch  # here: checking a picture (p2p validate) needs no torch

    pixels = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())  # (h, w, 3)
    return pixels.permute(2, 0, 1).float() / 255  # (3, h, w)


def picture_at(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """Any picture centre-cropped to the aspect of size (h, w) and resized to it (Lanczos), whatever its own size:
    (3, h, w) float in [0, 1]. For scoring (a 64 px edit scored at a benchmark's 512 px), not for editing."""
    im = open_picture(path)
    box = centre_box(im.width, im.height, size)
    if box != (0, 0, im.width, im.height):
        im = im.crop(box)
    if im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    import torch

    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def check_picture(path: str | Path, crop: tuple[int, int, int, int] | None = None) -> tuple[int, int]:
    """Cheap early check (before any model loads): the file is a readable picture and the crop lies inside it."""
    im = open_picture(path)
    if crop is not None and (crop[2] > im.width or crop[3] > im.height):
        raise ImageError(f"crop {list(crop)} goes outside the {im.width}x{im.height} picture")
    return im.size


def load_mask(path: str | Path, size: tuple[int, int], crop: tuple[int, int, int, int] | None = None,
              picture_size: tuple[int, int] | None = None) -> torch.Tensor:
    """A user mask (white = may change, grey levels soft) as (h, w) float in [0, 1] at size (h, w).

    With a real picture (picture_size (width, height)) the mask is first scaled to the picture's size, whatever
    its own, then cut with the picture's crop (or centre box) and resized, so it stays over the same pixels;
    without one it is centre-cropped to the output's aspect and resized, as a picture would be.
    """
    im = open_picture(path)
    grey = im.convert("L") if im.mode not in ("RGBA", "LA", "P") else to_rgb(im).convert("L")
    if picture_size is not None and grey.size != tuple(picture_size):
        grey = grey.resize(tuple(picture_size), Image.Resampling.BILINEAR)
    width, height = grey.size
    box = tuple(crop) if crop is not None and picture_size is not None else centre_box(width, height, size)
    if box != (0, 0, width, height):
        grey = grey.crop(box)
    out_h, out_w = size
    if grey.size != (out_w, out_h):
        grey = grey.resize((out_w, out_h), Image.Resampling.BILINEAR)
    import torch

    return torch.from_numpy(np.asarray(grey, dtype=np.uint8).copy()).float() / 255  # (h, w)
