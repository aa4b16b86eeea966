"""A grid of the images of one edit, each with its prompt under it and the changed words marked."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw, ImageFont

from p2p_cli.render.images import to_pil

_WORD = re.compile(r"[\w'’-]+", re.UNICODE)  # the same words as p2p_cli.text.words.split_words
PAD = 8
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
TITLE = (110, 110, 110)
MARK = (200, 30, 30)
MIN_TILE = 128  # smaller pictures are scaled up (nearest, whole multiples) so that labels fit and pixels show


@dataclass
class Tile:
    """One image of the grid and what is written under it."""

    image: torch.Tensor  # (3, H, W) in [0, 1]
    title: str  # e.g. "edit-1 · replace"
    caption: str  # the prompt
    marked: set[int] = field(default_factory=set)  # indices of the caption's words to mark
    row: int = 0
    col: int = 0


def changed_positions(source: str, prompt: str) -> set[int]:
    """Indices of the words of `prompt` that are not in `source` at the same place (inserted or swapped)."""
    src = [w.lower() for w in _WORD.findall(source)]
    tgt = [w.lower() for w in _WORD.findall(prompt)]
    changed = set()
    for op, _, _, j1, j2 in difflib.SequenceMatcher(a=src, b=tgt, autojunk=False).get_opcodes():
        if op != "equal":
            changed.update(range(j1, j2))
    return changed


def word_positions(prompt: str, words) -> set[int]:
    """Indices of the prompt's words that are among `words` (case-insensitive)."""
    wanted = {w.lower() for w in words}
    return {i for i, w in enumerate(_WORD.findall(prompt)) if w.lower() in wanted}


def edit_tiles(
    images: torch.Tensor, prompts: list[str], roles: list[str], kinds: dict[int, str], reweights: dict[int, dict],
    masks: dict[int, torch.Tensor] | None = None, picture: torch.Tensor | None = None,
    source_note: str | None = None, picture_note: str | None = None,
) -> list[Tile]:
    """Tiles for an edit run: the source and edits on the first row, each baseline-k under edit-k, and under
    those each blended edit's local-blend mask; with a real picture, the input first, beside its reconstruction.

    kinds: edit number -> edit type; reweights: edit number -> {word: factor} (marked, noted in the title);
    masks: edit number -> (H, W) local-blend mask in [0, 1]; picture: (3, H, W) the input as the model saw it;
    source_note: added to the source's title (a real picture's inversion and PSNR); picture_note: the input's
    caption (its crop box).
    """
    tiles = []
    shift = 1 if picture is not None else 0
    if picture is not None:
        tiles.append(Tile(picture, "input", picture_note or "the picture, as cropped and resized", col=0))
    source = prompts[roles.index("source")] if "source" in roles else prompts[0]
    for image, prompt, role in zip(images, prompts, roles):
        kind, _, number = role.partition("-")
        k = int(number) if number.isdigit() else 0
        marked = changed_positions(source, prompt) if kind != "source" else set()
        title = role
        if kind == "edit":
            factors = reweights.get(k) or {}
            marked |= word_positions(prompt, factors)
            notes = [kinds.get(k, "")] + [f"{w} x{f:g}" for w, f in factors.items()]
            notes += ["local blend"] if k in (masks or {}) else []
            title = " · ".join([role] + [n for n in notes if n])
        elif kind == "baseline":
            title = f"{role} · no control"
        elif kind == "source" and source_note:
            title = f"{role} · {source_note}"
        tiles.append(Tile(image, title, prompt, marked, row=1 if kind == "baseline" else 0, col=k + shift))
    mask_row = 1 + any(t.row == 1 for t in tiles)
    for k, mask in sorted((masks or {}).items()):
        mask = mask.float().expand(3, *mask.shape[-2:])
        tiles.append(Tile(mask, f"edit-{k} · blend mask", "white: where the edit is kept", row=mask_row,
                          col=k + shift))
    return tiles


def make_grid(tiles: list[Tile], font_size: int | None = None) -> Image.Image:
    """Paste tiles at (row, col) with their titles and wrapped captions under them; changed words marked."""
    if not tiles:
        raise ValueError("no images to put in a grid")
    height, width = tiles[0].image.shape[-2:]
    scale = -(-MIN_TILE // min(height, width)) if min(height, width) < MIN_TILE else 1
    height, width = height * scale, width * scale
    size = font_size or max(10, min(18, width // 20))
    font = ImageFont.load_default(size=size)
    line = size + size // 2
    space = font.getlength(" ") * 1.5
    titles = [_wrap([(w, False) for w in t.title.split()], font, width) for t in tiles]  # wrapped, never cut
    wrapped = [_wrap(_spans(t.caption, t.marked), font, width) for t in tiles]
    n_title = max(len(t) for t in titles)
    caption_h = PAD // 2 + line * (n_title + max(len(w) for w in wrapped)) + PAD // 2
    rows, cols = max(t.row for t in tiles) + 1, max(t.col for t in tiles) + 1
    cell_w, cell_h = width + PAD, height + caption_h + PAD
    grid = Image.new("RGB", (cols * cell_w + PAD, rows * cell_h + PAD), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for tile, title, lines in zip(tiles, titles, wrapped):
        x, y = PAD + tile.col * cell_w, PAD + tile.row * cell_h
        picture = to_pil(tile.image)
        if scale > 1:
            picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        grid.paste(picture, (x, y))
        y += height + PAD // 2
        for k, words in enumerate(title):
            draw.text((x, y + k * line), " ".join(w for w, _ in words), font=font, fill=TITLE)
        y += (n_title - 1) * line
        for words in lines:
            y += line
            cx = x
            for word, marked in words:
                draw.text((cx, y), word, font=font, fill=MARK if marked else TEXT)
                w = font.getlength(word)
                if marked:  # coloured and underlined
                    draw.line([(cx, y + size + 1), (cx + w, y + size + 1)], fill=MARK, width=max(1, size // 12))
                cx += w + space
    return grid


def _spans(caption: str, marked: set[int]) -> list[tuple[str, bool]]:
    """Split a caption at spaces; a piece is marked when one of its words (by index in the caption) is."""
    spans, index = [], 0
    for piece in caption.split():
        n = len(_WORD.findall(piece))
        spans.append((piece, any(i in marked for i in range(index, index + n))))
        index += n
    return spans


def _wrap(spans: list[tuple[str, bool]], font, width: int) -> list[list[tuple[str, bool]]]:
    """Greedy word wrap to `width` pixels (a word longer than a line gets a line of its own)."""
    lines: list[list[tuple[str, bool]]] = [[]]
    used = 0.0
    for word, marked in spans:
        w = font.getlength(word) + font.getlength(" ") * 1.5
        if lines[-1] and used + font.getlength(word) > width:
            lines.append([])
            used = 0.0
        lines[-1].append((word, marked))
        used += w
    return lines


def _fit(text: str, font, width: int) -> str:
    """Cut a one-line text to `width` pixels with an ellipsis."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def save_grid(path, tiles: list[Tile], texts: dict[str, str] | None = None) -> str:
    """Write make_grid(tiles) as PNG (with text chunks); return the file name."""
    from p2p_cli.render.images import png_info

    grid = make_grid(tiles)
    grid.save(path, format="PNG", pnginfo=png_info(texts))
    return path.name
