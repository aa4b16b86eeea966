"""Attention pictures (paper fig. 4): token heat maps over the image, self-attention components, word maps,
local-blend masks, and the maps as numbers (maps.npz)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from p2p_cli.engine.control.store import AttentionStore
from p2p_cli.render.grid import PAD, Tile, make_grid
from p2p_cli.render.images import DIM, mask_over, save_png, smooth_mask, to_pil  # noqa: F401 (DIM: re-exported)
from p2p_cli.analysis.maps import (VizSpec, cross_maps, min_max, self_components, token_labels, upsample, word_map,
                         word_positions)

TILE = 256  # longest side of a token or component tile, in pixels (smaller images keep their size)
COLUMNS = 10  # tiles per row
OVERLAY = 0.5  # weight of the heat colour over the image
RESERVED = ("cross", "self", "mask")  # picture names a word file must not take
# "jet" at 9 even stops: dark blue (0) .. dark red (1)
JET = torch.tensor([
    [0.0, 0.0, 0.5], [0.0, 0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 1.0, 1.0], [0.5, 1.0, 0.5],
    [1.0, 1.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0],
])


def colorize(map_: torch.Tensor) -> torch.Tensor:
    """(H, W) values in [0, 1] -> (3, H, W) colours, linear between the JET stops."""
    x = map_.float().clamp(0, 1) * (len(JET) - 1)
    low = x.floor().long().clamp(max=len(JET) - 2)  # (H, W)
    frac = (x - low)[..., None]  # (H, W, 1)
    rgb = JET[low] * (1 - frac) + JET[low + 1] * frac  # (H, W, 3)
    return rgb.permute(2, 0, 1)


BACKGROUNDS = ("image", "grey")
BAR_HEIGHT = 12  # the colour bar under a heat-map picture, in pixels


def grey(image: torch.Tensor) -> torch.Tensor:
    """The (3, H, W) image in greyscale (Rec. 601 luma), still 3 channels."""
    luma = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    return luma[None].expand(3, -1, -1)


def heat_over(image: torch.Tensor, map_: torch.Tensor, background: str = "image") -> torch.Tensor:
    """The (3, H, W) image with the (H, W) map in [0, 1] as a heat colour over it; background "grey" lays the
    heat over the image in greyscale, so the heat colours are not mixed with the picture's own."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background {background!r}: expected one of {', '.join(BACKGROUNDS)}")
    under = grey(image) if background == "grey" else image
    return (1 - OVERLAY) * under + OVERLAY * colorize(map_)


def with_colour_bar(picture, low: str, high: str, note: str = ""):
    """The picture (PIL) with a colour scale under it: the JET ramp from `low` (value 0) to `high`, and a note
    wrapped to the picture's width (a narrow picture is widened so that the scale and a word fit)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    width = max(picture.width, 2 * PAD + round(font.getlength(low) + font.getlength(high)) + 12 + 64)
    bar_w = max(64, min(256, width - 2 * PAD - 120))
    notes = _wrap(note, font, width - 2 * PAD) if note else []
    out = Image.new("RGB", (width, picture.height + BAR_HEIGHT + 3 * PAD + 14 * len(notes)), (255, 255, 255))
    out.paste(picture, (0, 0))
    ramp = colorize(torch.linspace(0, 1, bar_w)[None].expand(BAR_HEIGHT, -1))  # (3, BAR_HEIGHT, bar_w)
    x, y = PAD + font.getlength(low) + 6, picture.height + PAD
    out.paste(to_pil(ramp), (round(x), y))
    draw = ImageDraw.Draw(out)
    draw.rectangle([round(x) - 1, y - 1, round(x) + bar_w, y + BAR_HEIGHT], outline=(20, 20, 20))
    draw.text((PAD, y - 1), low, font=font, fill=(20, 20, 20))
    draw.text((round(x) + bar_w + 6, y - 1), high, font=font, fill=(20, 20, 20))
    for i, line in enumerate(notes):
        draw.text((PAD, y + BAR_HEIGHT + PAD // 2 + 14 * i), line, font=font, fill=(110, 110, 110))
    return out


def _wrap(text: str, font, width: float) -> list[str]:
    """Lines of `text` that fit `width` pixels in `font` (a word longer than the width stands alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def tile_size(image_hw: tuple[int, int], longest: int = TILE) -> tuple[int, int]:
    """(h, w) of a tile: the image's shape with its longest side at most `longest`."""
    h, w = image_hw
    scale = min(1.0, longest / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def _placed(tiles: list[Tile], columns: int = COLUMNS) -> list[Tile]:
    for i, tile in enumerate(tiles):
        tile.row, tile.col = divmod(i, columns)
    return tiles


def cross_tiles(image: torch.Tensor, maps: torch.Tensor, labels: list[tuple[int, str]],
                background: str = "image") -> list[Tile]:
    """One tile per (position, text) label: the token's map (h, w, L), own max, smooth, over the image; the
    title holds the position and the map's max (the colour scale's top)."""
    size = tile_size(tuple(image.shape[-2:]))
    small = _resize(image, size)
    tiles = []
    for pos, text in labels:
        m = maps[..., pos]
        title = f"{pos} · max {float(m.max()):.2g}"
        tiles.append(Tile(heat_over(small, upsample(m, size), background), title, text or " "))
    return _placed(tiles)


CROSS_SCALE = ("0", "tile max", "colour: attention from 0 to each tile's own max (its title)")
SELF_SCALE = ("min", "max", "colour: each component from its own min to its max; under it, its share of the"
              " variance")


def component_tiles(components: torch.Tensor, shares: torch.Tensor, image_hw: tuple[int, int]) -> list[Tile]:
    """One tile per self-attention component (k, h, w), min-max scaled, with its share (k,) of the variance."""
    size = tile_size(image_hw)
    tiles = []
    for i, comp in enumerate(components):
        smooth = F.interpolate(min_max(comp)[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        tiles.append(Tile(colorize(smooth), f"component {i + 1}", f"{shares[i].item():.1%} of the variance"))
    return _placed(tiles)


def word_tiles(image: torch.Tensor, wmap: torch.Tensor, word: str, role: str, background: str = "image"
               ) -> list[Tile]:
    """The word's map at full image size: heat over the image, and the plain map (white = most) beside it."""
    full = upsample(wmap, tuple(image.shape[-2:]))
    title = f"{role} · {word}"
    return [Tile(heat_over(image, full, background), title, f"over the image · max {float(wmap.max()):.2g}",
                 col=0),
            Tile(full[None].expand(3, -1, -1), title, "map (white = most)", col=1)]


def file_word(word: str) -> str:
    """A word (phrase, word#k) as a file name part: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^\w]+", "-", word.lower(), flags=re.UNICODE).strip("-") or "word"


def save_attention(
    folder: Path,
    *,
    roles: list[str],
    prompts: list[str],
    images: torch.Tensor,
    masks: dict[int, torch.Tensor],
    store: AttentionStore,
    tokenizer,
    spec: VizSpec,
    res: int,
    texts: dict[str, dict[str, str]] | None = None,
    latent_hw: tuple[int, int] | None = None,
) -> dict[str, str]:
    """Write the pictures of every role and maps.npz into folder (made here); picture key -> file name.

    roles, prompts, images: the rows of the run to draw, in the store's batch order (row i of the store
    is roles[i]); masks: edit number -> (H, W) local-blend mask; texts: role -> PNG text chunks.
    """
    texts = texts or {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {
        "res": np.array(res), "places": np.array(list(spec.places)), "step_range": np.array(spec.step_range),
    }
    for row, (role, prompt, image) in enumerate(zip(roles, prompts, images)):
        maps = cross_maps(store, row, res, spec.places)  # (h, w, L)
        everything = token_labels(tokenizer, prompt, special=True)
        arrays[role] = maps[..., : len(everything)].permute(2, 0, 1).numpy().astype(np.float32)  # (n, h, w)
        arrays[f"{role}.tokens"] = np.array([text for _, text in everything])
        arrays[f"{role}.prompt"] = np.array(prompt)
        labels = everything if spec.special else token_labels(tokenizer, prompt)
        chunks = texts.get(role)
        background = getattr(spec, "background", "image")
        files[f"{role}-cross"] = _save(with_colour_bar(make_grid(cross_tiles(image, maps, labels, background)),
                                                       *CROSS_SCALE), folder / f"{role}-cross.png", chunks)
        if spec.components > 0:
            comps, shares = self_components(store, row, res, spec.places, spec.components)
            files[f"{role}-self"] = _save(with_colour_bar(make_grid(component_tiles(comps, shares,
                                                                                    tuple(image.shape[-2:]))),
                                                          *SELF_SCALE), folder / f"{role}-self.png", chunks)
        for word in spec.words:
            positions = word_positions(tokenizer, prompt, word)
            if positions is None:
                continue
            slug = file_word(word)
            name = f"{role}-{'word-' if slug in RESERVED else ''}{slug}"
            tiles = word_tiles(image, word_map(maps, positions), word, role, background)
            files[name] = _save(with_colour_bar(make_grid(tiles), "0", "max", "colour: the word's attention, 0 to"
                                                " its max (caption)"), folder / f"{name}.png", chunks)
    for k, mask in sorted(masks.items()):
        role = f"edit-{k}"
        if role in roles:
            picture = mask_over(images[roles.index(role)], smooth_mask(mask, latent_hw))
            files[f"{role}-mask"] = save_png(picture, folder / f"{role}-mask.png", texts.get(role)).name
    np.savez_compressed(folder / "maps.npz", **arrays)
    files["maps"] = "maps.npz"
    return files


def _save(picture, path: Path, texts: dict[str, str] | None = None) -> str:
    from p2p_cli.render.images import png_info

    picture.save(path, format="PNG", pnginfo=png_info(texts))
    return path.name
