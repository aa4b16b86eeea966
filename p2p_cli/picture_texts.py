"""The text chunks of a PNG picture, read safely, and the recipe a picture p2p wrote holds in them.

Every PNG p2p writes carries two text chunks (files/metadata.py writes them): "parameters", the settings in the
form Automatic1111's web UI shows, and "p2p-recipe", the full resolved recipe as JSON, which `p2p edit FILE.png`
runs again and `p2p show` prints. The recipe reader (overrides.read_recipe) reads a PNG's recipe here, below the
rendering layer, so that reading a recipe never climbs back up the layers. Pillow is imported when a picture is
read."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from p2p_cli.paths import open_regular
from p2p_cli.recipe import MAX_RECIPE_BYTES, RecipeError

PARAMETERS = "parameters"
RECIPE = "p2p-recipe"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UnreadablePicture(ValueError):
    """A picture that cannot be read safely (a decompression bomb, a text chunk that inflates beyond Pillow's
    limit, a damaged file); the message says which."""


def max_pixels() -> int:
    """The largest picture read: Pillow's decompression-bomb warning limit (Image.MAX_IMAGE_PIXELS)."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def read_texts(path: Path) -> dict[str, str]:
    """The text chunks of a PNG file (empty when it has none). OSError when it cannot be opened, UnreadablePicture
    when it cannot be read safely."""
    import struct
    import warnings

    from PIL import Image, UnidentifiedImageError

    with open_regular(path) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as im:
                    im.load()
                    return dict(getattr(im, "text", {}) or {})
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise UnreadablePicture(f"{path} has more than {max_pixels():,} pixels, the most p2p reads (Pillow's"
                                    " decompression-bomb limit)") from None
        except UnidentifiedImageError:
            raise UnreadablePicture(f"{path} is not a picture Pillow can read") from None
        except (ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, MemoryError, OSError) as err:
            # "Decompressed Data Too Large": a zTXt / iTXt chunk that inflates beyond Pillow's limit; a damaged file
            raise UnreadablePicture(f"{path} is a damaged or hostile picture ({type(err).__name__}:"
                                    f" {str(err)[:200]})") from None


def recipe_from_texts(texts: dict[str, str]) -> dict | None:
    """The recipe stored in a picture's text chunks, or None when it holds none."""
    raw = texts.get(RECIPE)
    if raw is None:
        return None
    if len(raw) > MAX_RECIPE_BYTES:
        raise ValueError(f"it holds {len(raw):,} characters; a recipe is at most {MAX_RECIPE_BYTES // 1024} KiB")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"the {RECIPE} chunk does not hold a recipe")
    return data


def png_document(path: Path) -> dict:
    """The recipe a picture written by p2p holds (its "p2p-recipe" text chunk); RecipeError when it holds none or
    cannot be read."""
    try:
        texts = read_texts(path)
    except OSError as err:
        raise RecipeError([f"cannot read the picture: {getattr(err, 'strerror', None) or err}"], str(path)) from None
    except UnreadablePicture as err:
        raise RecipeError([str(err)], str(path)) from None
    try:
        data = recipe_from_texts(texts)
    except ValueError as err:
        raise RecipeError([f"its {RECIPE} text chunk is not a recipe: {err}"], str(path)) from None
    if data is None:
        raise RecipeError([f"this picture holds no recipe (no {RECIPE} text chunk): only pictures written by p2p"
                           " can be run again. To edit this picture, describe it and the change:"
                           f" p2p edit --image {shlex.quote(str(path))} --prompt \"a [blue->red] circle\""],
                          str(path))
    return data
