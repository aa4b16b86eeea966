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
    "change_in": "change inside the blend mask (1 - SSIM)",
    "change": "mean pixel change to the source",
}
SHORT = {"ssim": "ssim", "psnr": "psnr", "lpips": "lpips", "clip": "clip", "clip_dir": "dir"}
EDIT_AXES = ("clip", "change_in", "change")  # the x axis when the one asked for has no values, in this order
MARKERS = ("circle", "square", "triangle", "diamond", "down", "cross")
DASHES = (None, (10, 5), (3, 4))  # solid, dashed, dotted (on, off pixels)
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


def _marker(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, colour) -> None:
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "square":
        draw.rectangle([x - r * 0.85, y - r * 0.85, x + r * 0.85, y + r * 0.85], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x, y - r * 1.2), (x - r * 1.1, y + r * 0.8), (x + r * 1.1, y + r * 0.8)], fill=colour)
    elif shape == "down":
        draw.polygon([(x, y + r * 1.2), (x - r * 1.1, y - r * 0.8), (x + r * 1.1, y - r * 0.8)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(x, y - r * 1.3), (x + r * 1.1, y), (x, y + r * 1.3), (x - r * 1.1, y)], fill=colour)
    else:  # cross
        draw.line([(x - r, y - r), (x + r, y + r)], fill=colour, width=3)
        draw.line([(x - r, y + r), (x + r, y - r)], fill=colour, width=3)


def _polyline(draw: ImageDraw.ImageDraw, xy: list[tuple[float, float]], colour, dash, width: int = 2) -> None:
    """A line through the points, solid (dash None) or dashed with (on, off) pixels, the pattern running on."""
    if dash is None:
        draw.line(xy, fill=colour, width=width)
        return
    on, off = dash
    phase = 0.0
    for (xa, ya), (xb, yb) in zip(xy, xy[1:]):
        length = math.hypot(xb - xa, yb - ya)
        t = 0.0
        while t < length:
            cycle = phase % (on + off)
            run = (on - cycle) if cycle < on else (on + off - cycle)
            end = min(length, t + run)
            if cycle < on:
                f0, f1 = t / length, end / length
                draw.line([(xa + (xb - xa) * f0, ya + (yb - ya) * f0), (xa + (xb - xa) * f1, ya + (yb - ya) * f1)],
                          fill=colour, width=width)
            phase += end - t
            t = end


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(text: str, px: float, py: float, font, taken: list, area: tuple) -> tuple | None:
    """Where to write `text` beside the point (px, py): the first of some spots around it (near, then farther)
    whose box is inside `area` and clear of the boxes in `taken`; None when the same text is already written
    next to this point (another curve's point at the same place: written once). The box is added to `taken`."""
    w, h = font.getlength(text), font.size
    for box, label, (qx, qy) in [t for t in taken if len(t) == 3]:
        if label == text and abs(qx - px) < 6 and abs(qy - py) < 6:
            return None
    best = None
    for d in (6, 14, 24):
        for dx, dy in ((d, -h - d / 2), (d, d / 2), (-w - d, -h - d / 2), (-w - d, d / 2), (-w / 2, -h - d - 4),
                       (-w / 2, d + 4)):
            box = (px + dx, py + dy, px + dx + w, py + dy + h + 2)
            inside = area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1] and box[3] <= area[3]
            hits = sum(_overlaps(box, (t[0] if len(t) == 3 else t)) for t in taken)
            if inside and hits == 0:
                taken.append((box, text, (px, py)))
                return box
            if best is None or (inside and hits < best[0]):
                best = (hits if inside else 10**6, box)
    taken.append((best[1], text, (px, py)))
    return best[1]


def tradeoff_plot(sweep: Sweep, rows: list[dict], *, kept: str = "ssim", edited: str = "clip",
                  picked: set[int] = frozenset(), threshold: float | None = None, size: tuple[int, int] = (860, 540)
                  ) -> Image.Image:
    """How much of the source is kept (y) against how much of the edit happened (x), one curve per grid column
    (its own colour, marker and line style), points labelled by the swept value (the paper's tau ablation).
    Without `edited` scores (no CLIP model) x is the first of EDIT_AXES that has values: the change inside the
    blend mask, else the mean change to the source; the swept value only when no edit measure has any."""
    def finite(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    row_name = "tau" if sweep.taus is not None else "self tau"
    asked = edited
    edited = next((m for m in (edited, *EDIT_AXES) if any(finite(row.get(m)) for row in rows)), None)
    has_x = edited is not None
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
    if edited != asked:
        title += f" (no {asked} scores)"
    draw.text((left, 10), _fit(title, font, width - left - 10), font=font, fill=TEXT)
    x0, y0, x1, y1 = left, top, width - right, height - bottom  # the plot area
    draw.rectangle([x0, y0, x1, y1], outline=TEXT)
    points = [p for pts in curves.values() for p in pts]
    if not points:
        draw.text((x0 + 20, (y0 + y1) // 2), f"no finite {kept} / {asked} values to plot", font=font, fill=TITLE)
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
    taken: list = []
    for value in lines_at:  # the pick threshold, dashed
        for xa in range(x0, x1, 12):
            draw.line([(xa, sy(value)), (min(xa + 6, x1), sy(value))], fill=MARK, width=1)
        text = f"pick: {kept} {fmt(value)}"
        draw.text((x1 - 90, sy(value) - 16), text, font=small, fill=MARK)
        taken.append((x1 - 90, sy(value) - 16, x1 - 90 + small.getlength(text), sy(value) - 2))
    recipe = sweep.recipe
    styled = []
    for n, (column, pts) in enumerate(curves.items()):  # lines first, so no marker hides under another curve
        colour, marker, dash = PALETTE[n % len(PALETTE)], MARKERS[n % len(MARKERS)], DASHES[n % len(DASHES)]
        pts = sorted(pts)
        xy = [(sx(x), sy(y)) for _, x, y, _ in pts]
        if len(xy) > 1:
            _polyline(draw, xy, colour, dash)
        styled.append((n, column, pts, xy, colour, marker, dash))
    for n, column, pts, xy, colour, marker, dash in styled:
        radius = max(3.0, 5.5 - 1.0 * n)  # later curves smaller: one drawn on another still shows both
        for (value, _, _, i), (px, py) in zip(pts, xy):
            _marker(draw, marker, px, py, radius, colour)
            taken.append((px - radius, py - radius, px + radius, py + radius))
            if i in picked:
                draw.ellipse([px - 10, py - 10, px + 10, py + 10], outline=MARK, width=2)
    for n, column, pts, xy, colour, marker, dash in styled:  # labels last, clear of every marker and label
        for (value, _, _, _), (px, py) in zip(pts, xy):
            box = place_label(fmt(value), px, py, small, taken, (x0 + 2, y0 + 2, x1 - 2, y1 - 2))
            if box is not None:
                draw.text((box[0], box[1]), fmt(value), font=small, fill=colour)
        k, self_tau = column
        name = f"edit-{k}" + (f" · self {fmt(self_tau)}" if self_tau is not None else "")
        ly = y0 + 4 + n * 36
        _polyline(draw, [(x1 + 10, ly + 8), (x1 + 38, ly + 8)], colour, dash, width=3)
        _marker(draw, marker, x1 + 24, ly + 8, 5, colour)
        draw.text((x1 + 44, ly), name, font=small, fill=TEXT)
        draw.text((x1 + 44, ly + 15), _fit(recipe.edits[k - 1].target, small, right - 50), font=small, fill=TITLE)
    return plot
