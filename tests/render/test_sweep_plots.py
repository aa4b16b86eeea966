"""Sweep pictures without a model: the sweep grid's labels and the trade-off plot (text drawn is recorded)."""

from __future__ import annotations

import pytest
import torch
from PIL import ImageDraw

from p2p_cli.analysis.tau_sweep import SweepResult, expand
from p2p_cli.recipe import parse_recipe
from p2p_cli.render.sweep_plots import sweep_grid, tradeoff_plot

SOURCE = "a painting of a squirrel eating a burger"


def recipe(n_edits: int = 1, blend: bool = False):
    edits = [{"target": "a painting of a lion eating a burger", "type": "replace"},
             {"target": "a painting of a squirrel eating a burger at night", "type": "refine"}][:n_edits]
    if blend:
        edits[0]["local_blend"] = {"words": [["squirrel"], ["lion"]]}
    return parse_recipe({"source": SOURCE, "seed": 3, "steps": 10, "edits": edits})


def fake_result(sweep, side: int = 64) -> SweepResult:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, side, side, generator=g) for _ in sweep.points]
    return SweepResult(torch.rand(3, side, side, generator=g), images, [None] * len(images), {}, [], {})


def rows_for(sweep, clip: bool = False) -> list[dict]:
    rows = []
    for i, p in enumerate(sweep.points):
        rows.append({"edit": p.edit, "ssim": 0.9 - 0.1 * i, "psnr": 30.0 - i, "lpips": None, "ssim_bg": None,
                     "psnr_bg": None, "lpips_bg": None, "clip": 20.0 + i if clip else None,
                     "clip_dir": 0.1 if clip else None, "change": 0.05 * (i + 1), "change_in": None})
    return rows


class Calls(list):
    fills: list


@pytest.fixture
def drawn(monkeypatch):
    """Every (text, xy, font) that ImageDraw draws."""
    calls, fills = Calls(), []
    original = ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        calls.append((text, xy, kwargs.get("font")))
        fills.append(kwargs.get("fill"))
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    calls.fills = fills
    return calls


def test_two_dimensional_sweep_grid_never_cuts_the_self_value(drawn):
    sweep = expand(recipe(), [0.2, 0.8], [0.2, 0.4])  # columns: self 0.2 and self 0.4 at 64 px
    grid = sweep_grid(sweep, fake_result(sweep), rows_for(sweep), {})
    texts = [t for t, _, _ in drawn]
    assert not any("…" in t for t in texts), [t for t in texts if "…" in t]
    joined = "\n".join(texts)
    assert joined.count("self 0.4") >= 3 and joined.count("self 0.2") >= 3  # column labels and both tau rows
    for text, (x, _), font in drawn:  # every line fits its column (the first column holds the row labels)
        assert font.getlength(text) <= 128 + 1, text
    assert grid.width == 3 * (128 + 8) + 8  # 64 px pictures scaled up to 128, as in the edit grid


def two_equal_curves():
    sweep = expand(recipe(2), [0.15, 0.45, 0.85], None)
    rows = rows_for(sweep)
    for a, b in zip(rows[:3], rows[3:]):  # edit-2's points fall exactly on edit-1's
        b.update(ssim=a["ssim"], change=a["change"])
    return sweep, rows


def test_tradeoff_without_clip_plots_an_edit_measure_not_the_tau(drawn):
    sweep, rows = two_equal_curves()
    tradeoff_plot(sweep, rows, kept="ssim", edited="clip")
    texts = [t for t, _, _ in drawn]
    assert "mean pixel change to the source (more edit: right)" in texts
    assert any(t.startswith("SSIM to the source vs mean pixel change") and "(no clip scores)" in t for t in texts)
    drawn.clear()
    for row in rows:  # with blend masks: the change inside them comes first
        row["change_in"] = row["change"] * 2
    tradeoff_plot(sweep, rows, kept="ssim", edited="clip")
    assert "change inside the blend mask (1 - SSIM) (more edit: right)" in [t for t, _, _ in drawn]


def test_tradeoff_labels_do_not_overlap_and_a_curve_under_another_still_shows(drawn):
    sweep, rows = two_equal_curves()
    plot = tradeoff_plot(sweep, rows, kept="ssim", edited="change")
    from p2p_cli.render.sweep_plots import PALETTE

    labels = [(t, xy, f) for (t, xy, f), fill in zip(drawn, drawn.fills) if fill in PALETTE]  # the tau labels
    assert sorted(t for t, _, _ in labels) == ["0.15", "0.45", "0.85"]  # each value once: the curves coincide
    boxes = [(x, y, x + f.getlength(t), y + f.size) for t, (x, y), f in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # at a point both curves pass through, both colours are seen within a few pixels
    x, y = boxes[0][0], boxes[0][1]
    near = {plot.getpixel((px, py)) for px in range(int(x) - 40, int(x) + 40) for py in range(int(y) - 40, int(y) + 40)
            if 0 <= px < plot.width and 0 <= py < plot.height}
    assert PALETTE[0] in near and PALETTE[1] in near
