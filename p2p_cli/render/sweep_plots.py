"""Pictures of a tau sweep: the labelled grid with numbers under every image, and the kept-vs-edited plot."""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw, ImageFont

from p2p_cli.render.grid import (BACKGROUND, MARK, MIN_TILE, PAD, TEXT, TITLE, _fit, _spans, _wrap,
                                 changed_positions)
from p2p_cli.render.images import to_pil
from p2p_cli.analysis.tau_sweep import Sweep, SweepResult, fmt

LABELS = {
    "ssim": "SSIM to the source",
    "psnr": "PSNR to the source (dB)",
    "lpips": "LPIPS to the source",
    "ssim_bg": "background SSIM (outside the blend mask)",
    "psnr_bg": "background PSNR (dB)",
    "lpips_bg": "background LPIPS",
    "clip": "CLIP score: edited image vs target prompt",
    "clip_dir": "directional CLIP similarity",
}
SHORT = {"ssim": "ssim", "psnr": "psnr", "lpips": "lpips", "clip": "clip", "clip_dir": "dir"}
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
GRID_LINE = (225, 225, 225)


def _num(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def metric_lines(row: dict) -> list[str]:
    """The numbers written under an image: kept, background kept (with a blend), edit."""
    lines = [" · ".join(f"{SHORT[m]} {_num(row.get(m))}" for m in ("ssim", "psnr", "lpips") if row.get(m) is not None
                        or m != "lpips")]
    if row.get("ssim_bg") is not None:
        lines.append(f"bg ssim {_num(row['ssim_bg'])} · psnr {_num(row['psnr_bg'])}")
    if row.get("clip") is not None:
        lines.append(f"clip {_num(row['clip'])} · dir {_num(row.get('clip_dir'))}")
    return lines


def wrap_pieces(text: str, font, width: int, sep: str = " · ") -> list[str]:
    """A label as lines of at most `width` pixels, broken between its " · " pieces (a piece too long for a line is
    broken between words): nothing is cut, so what tells two tiles apart (e.g. "self 0.4") always shows."""
    lines: list[str] = []
    for piece in text.split(sep):
        words = [" ".join(w for w, _ in ws) for ws in _wrap([(w, False) for w in piece.split()], font, width)]
        for k, chunk in enumerate(words):
            joined = f"{lines[-1]}{sep}{chunk}" if lines and k == 0 else None
            if joined is not None and font.getlength(joined) <= width:
                lines[-1] = joined
            else:
                lines.append(chunk)
    return lines or [""]


def sweep_grid(sweep: Sweep, result: SweepResult, rows: list[dict], baselines: dict[int, dict],
               picked: set[int] = frozenset(), font_size: int | None = None) -> Image.Image:
    """Rows: the swept values; columns: the edits (x self tau in a 2-D sweep); the first column holds the row
    labels under the source; the header row holds the uncontrolled targets; numbers under every image.
    Pictures smaller than MIN_TILE are scaled up (nearest); labels wrap, never cut."""
    height, width = result.source.shape[-2:]
    scale = -(-MIN_TILE // min(height, width)) if min(height, width) < MIN_TILE else 1
    height, width = height * scale, width * scale
    size = font_size or max(10, min(18, width // 20))
    font, big = ImageFont.load_default(size=size), ImageFont.load_default(size=round(size * 1.5))
    line = size + size // 2
    recipe = sweep.recipe
    both = sweep.taus is not None and sweep.self_taus is not None
    row_name = "tau" if sweep.taus is not None else "self tau"

    def tile_title(i: int, point) -> str:
        title = f"{row_name} {fmt(sweep.row_value(point))}" + (f" · self {fmt(point.self_tau)}" if both else "")
        return title + (" · picked" if i in picked else "")

    def tile_lines(title: str, numbers: list[str]) -> list[tuple[str, bool]]:
        """(text, is_title) lines under a picture."""
        return ([(t, True) for t in wrap_pieces(title, font, width)]
                + [(t, False) for n in numbers for t in wrap_pieces(n, font, width)])

    captions = []
    for k, self_tau in sweep.columns:
        edit = recipe.edits[k - 1]
        title = " · ".join([f"edit-{k}"] + ([edit.type] if edit.type else []) + ([f"self {fmt(self_tau)}"] if both else []))
        words = _wrap(_spans(edit.target, changed_positions(recipe.source, edit.target)), font, width)
        captions.append((wrap_pieces(title, font, width), words))
    under = [tile_lines(tile_title(i, p), metric_lines(r)) for i, (p, r) in enumerate(zip(sweep.points, rows))]
    under += [tile_lines(f"baseline-{k} · no control", metric_lines(b)) for k, b in baselines.items()]
    source_lines = [("source", True)] + [(t, False) for t in _wrap_text(recipe.source, font, width, 99)]
    n_lines = max(len(u) for u in [*under, source_lines])
    corner = wrap_pieces(f"{row_name} sweep · seed {recipe.seed} · {recipe.steps} steps", font, width)
    head_h = PAD + line * max(len(corner), max(len(t) + len(w) for t, w in captions))
    text_h = PAD // 2 + line * n_lines + PAD // 2
    cell_w, cell_h = width + PAD, height + text_h
    cols = 1 + len(sweep.columns)
    grid = Image.new("RGB", (cols * cell_w + PAD, head_h + (1 + len(sweep.rows)) * cell_h + PAD), BACKGROUND)
    draw = ImageDraw.Draw(grid)

    def put(image: torch.Tensor, x: int, y: int, lines: list[tuple[str, bool]], mark: bool = False) -> None:
        picture = to_pil(image)
        if scale > 1:
            picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        grid.paste(picture, (x, y))
        if mark:
            draw.rectangle([x - 3, y - 3, x + width + 2, y + height + 2], outline=MARK, width=3)
        ty = y + height + PAD // 2
        for text, is_title in lines:
            draw.text((x, ty), text, font=font, fill=(MARK if mark else TITLE) if is_title else TEXT)
            ty += line

    for k, text in enumerate(corner):
        draw.text((PAD, PAD + k * line), text, font=font, fill=TITLE)
    for c, (title, words) in enumerate(captions, start=1):  # column labels
        x, y = PAD + c * cell_w, PAD
        for text in title:
            draw.text((x, y), text, font=font, fill=TITLE)
            y += line
        for pieces in words:
            cx = x
            for word, marked in pieces:
                draw.text((cx, y), word, font=font, fill=MARK if marked else TEXT)
                cx += font.getlength(word) + font.getlength(" ") * 1.5
            y += line

    top = head_h
    put(result.source, PAD, top, source_lines)
    shown = set()
    for c, (k, _) in enumerate(sweep.columns, start=1):  # the header row: uncontrolled targets, once per edit
        if k in result.baselines and k not in shown:
            shown.add(k)
            put(result.baselines[k], PAD + c * cell_w, top,
                tile_lines(f"baseline-{k} · no control", metric_lines(baselines[k])))
    for r, value in enumerate(sweep.rows):  # row labels in the first column
        y = top + (r + 1) * cell_h + height // 2 - size
        for text in wrap_pieces(f"{row_name} {fmt(value)}", big, width):
            draw.text((PAD, y), text, font=big, fill=TEXT)
            y += round(line * 1.5)
    for i, (point, row) in enumerate(zip(sweep.points, rows)):
        r, c = sweep.place(point)
        put(result.images[i], PAD + (c + 1) * cell_w, top + (r + 1) * cell_h, under[i], i in picked)
    return grid


def _wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    lines = [" ".join(word for word, _ in pieces) for pieces in _wrap(_spans(text, set()), font, width)]
    return lines[:max_lines]


# --- the trade-off plot ----------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi], about `count` of them (steps 1, 2, 2.5, 5 x 10^k)."""
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _span(values: list[float], extra: list[float] = ()) -> tuple[float, float]:
    lo, hi = min([*values, *extra]), max([*values, *extra])
    if hi - lo < 1e-9:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def tradeoff_plot(sweep: Sweep, rows: list[dict], *, kept: str = "ssim", edited: str = "clip",
                  picked: set[int] = frozenset(), threshold: float | None = None, size: tuple[int, int] = (860, 540)
                  ) -> Image.Image:
    """How much of the source is kept (y) against how much of the edit happened (x), one curve per grid column,
    points labelled by the swept value (the paper's tau ablation). Without `edited` scores x is the swept value."""
    def finite(v) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)

    has_x = any(finite(row.get(edited)) for row in rows)
    row_name = "tau" if sweep.taus is not None else "self tau"
    x_of = (lambda i, row: row.get(edited)) if has_x else (lambda i, row: sweep.row_value(sweep.points[i]))
    curves: dict[tuple, list[tuple[float, float, float, int]]] = {}
    for i, (point, row) in enumerate(zip(sweep.points, rows)):
        x, y = x_of(i, row), row.get(kept)
        if finite(x) and finite(y):
            curves.setdefault(sweep.columns[sweep.place(point)[1]], []).append((sweep.row_value(point), x, y, i))

    width, height = size
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=12)
    left, right, top, bottom = 80, 230, 60, 64
    plot = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(plot)
    title = f"{LABELS.get(kept, kept)} vs {LABELS.get(edited, edited) if has_x else row_name}"
    if not has_x:
        title += f" (no {edited} scores)"
    draw.text((left, 10), _fit(title, font, width - left - 10), font=font, fill=TEXT)
    x0, y0, x1, y1 = left, top, width - right, height - bottom  # the plot area
    draw.rectangle([x0, y0, x1, y1], outline=TEXT)
    points = [p for pts in curves.values() for p in pts]
    if not points:
        draw.text((x0 + 20, (y0 + y1) // 2), f"no finite {kept} / {edited} values to plot", font=font, fill=TITLE)
        return plot
    lines_at = [threshold] if threshold is not None and math.isfinite(threshold) else []
    xlo, xhi = _span([p[1] for p in points])
    ylo, yhi = _span([p[2] for p in points], lines_at)
    sx = lambda v: x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)  # noqa: E731
    sy = lambda v: y1 - (v - ylo) / (yhi - ylo) * (y1 - y0)  # noqa: E731
    for t in nice_ticks(xlo, xhi):
        draw.line([(sx(t), y0 + 1), (sx(t), y1 - 1)], fill=GRID_LINE)
        label = f"{t:g}"
        draw.text((sx(t) - small.getlength(label) / 2, y1 + 6), label, font=small, fill=TEXT)
    for t in nice_ticks(ylo, yhi):
        draw.line([(x0 + 1, sy(t)), (x1 - 1, sy(t))], fill=GRID_LINE)
        label = f"{t:g}"
        draw.text((x0 - 8 - small.getlength(label), sy(t) - 7), label, font=small, fill=TEXT)
    x_label = f"{LABELS.get(edited, edited)} (more edit: right)" if has_x else row_name
    draw.text(((x0 + x1 - font.getlength(x_label)) / 2, y1 + 28), x_label, font=font, fill=TEXT)
    up = "higher" if kept not in ("lpips", "lpips_bg") else "lower"
    draw.text((8, y0 - 22), f"{LABELS.get(kept, kept)} (more kept: {up})", font=small, fill=TEXT)
    for value in lines_at:  # the pick threshold, dashed
        for xa in range(x0, x1, 12):
            draw.line([(xa, sy(value)), (min(xa + 6, x1), sy(value))], fill=MARK, width=1)
        draw.text((x1 - 90, sy(value) - 16), f"pick: {kept} {fmt(value)}", font=small, fill=MARK)
    recipe = sweep.recipe
    for n, (column, pts) in enumerate(curves.items()):
        colour = PALETTE[n % len(PALETTE)]
        pts = sorted(pts)
        xy = [(sx(x), sy(y)) for _, x, y, _ in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for m, ((value, _, _, i), (px, py)) in enumerate(zip(pts, xy)):
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
            if i in picked:
                draw.ellipse([px - 9, py - 9, px + 9, py + 9], outline=MARK, width=2)
            draw.text((px + 6, py - 18 if m % 2 == 0 else py + 4), fmt(value), font=small, fill=colour)
        k, self_tau = column
        name = f"edit-{k}" + (f" · self {fmt(self_tau)}" if self_tau is not None else "")
        ly = y0 + 4 + n * 36
        draw.line([(x1 + 14, ly + 8), (x1 + 34, ly + 8)], fill=colour, width=3)
        draw.text((x1 + 40, ly), name, font=small, fill=TEXT)
        draw.text((x1 + 40, ly + 15), _fit(recipe.edits[k - 1].target, small, right - 46), font=small, fill=TITLE)
    return plot
