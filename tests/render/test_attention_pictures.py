"""Attention pictures that cannot mislead (issue 27): grey under the heat by default, "max" titles (never a
"6.9e-11-0.026" that reads as a subtraction), a colour scale on every picture, self-attention included, and a
legend wrapped rather than cut."""

from __future__ import annotations

import numpy as np
import torch
from PIL import ImageFont

from p2p_cli.analysis.maps import VizSpec
from p2p_cli.render.attention import JET, SELF_SCALE, _wrap, component_tiles, cross_tiles, with_colour_bar
from p2p_cli.render.grid import make_grid


def test_grey_is_the_default_background():
    assert VizSpec().background == "grey"


def test_titles_say_max_and_never_a_range():
    maps = torch.zeros(4, 4, 3)
    maps[..., 1] = torch.linspace(6.9e-11, 0.026, 16).reshape(4, 4)
    (tile,) = cross_tiles(torch.rand(3, 16, 16), maps, [(1, "red")], "grey")
    assert tile.title == "1 · max 0.026"


def test_self_attention_pictures_carry_a_scale():
    tiles = component_tiles(torch.rand(2, 4, 4), torch.tensor([0.6, 0.3]), (16, 16))
    picture = with_colour_bar(make_grid(tiles), *SELF_SCALE)
    bottom = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1)[:, -60:]
    for end in (JET[0], JET[-1]):  # both ends of the colour ramp are drawn under the tiles
        assert ((bottom - end[:, None, None]).abs().amax(0) < 0.02).sum() >= 8


def test_a_long_legend_wraps_to_the_picture():
    from PIL import Image

    font = ImageFont.load_default(size=12)
    note = "colour: attention from 0 to each tile's own max (its title) " * 3
    lines = _wrap(note, font, 150)
    assert len(lines) > 1 and all(font.getlength(line) <= 150 for line in lines)
    assert " ".join(lines) == " ".join(note.split())  # every word kept, none cut
    narrow = Image.new("RGB", (100, 40), (0, 0, 0))
    one = with_colour_bar(narrow, "0", "tile max", "short")
    many = with_colour_bar(narrow, "0", "tile max", note)
    assert many.height > one.height and many.width == one.width >= 100
