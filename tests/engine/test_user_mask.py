"""A user's mask (white = may change, grey soft) confines every target, alone or with local blend; it follows the
picture's crop; the mask applied is what edit-<k>-mask.png shows."""

from __future__ import annotations


import numpy as np
import torch
from PIL import Image

from p2p_cli.engine.pipeline import run_edit
from p2p_cli.recipe import parse_recipe
from p2p_cli.render.load import load_mask

SOURCE = "a painting of a squirrel eating a burger"


def recipe(top=None, **edit):
    return parse_recipe({"source": SOURCE, "steps": 3, "seed": 2, **(top or {}),
                         "edits": [{"target": "a painting of a lion eating a burger", **edit}]})


def test_the_edit_changes_only_where_the_mask_allows(family_model):
    mask = torch.zeros(128, 128)
    mask[:, :64] = 1.0  # the left half may change
    mask[:, 64:96] = 0.5  # soft: half the change
    out = run_edit(family_model, recipe(), user_mask=mask)
    src, edit = out.latents[0], out.latents[1]
    assert torch.equal(edit[..., 12:], src[..., 12:])  # latent columns 12-15: mask 0
    assert not torch.allclose(edit[..., 8:12], src[..., 8:12], atol=1e-3)  # grey: some change
    assert not torch.allclose(edit[..., :8], src[..., :8], atol=1e-3)
    assert torch.equal(out.masks[1], mask)  # what edit-1-mask.png shows


def test_with_local_blend_the_edit_changes_only_where_both_allow(tiny_model):
    mask = torch.zeros(128, 128)
    mask[:64] = 1.0  # the top half
    r = recipe({"blend_res": 16}, local_blend={"words": ["squirrel", "lion"], "threshold": 0.95, "start": 0.0})
    out = run_edit(tiny_model, r, user_mask=mask)
    assert float(out.masks[1][64:].max()) == 0.0 and 0 < float(out.masks[1][:64].mean()) < 1  # product, partial
    src, edit = out.latents[0], out.latents[1]
    assert torch.equal(edit[:, 8:], src[:, 8:])  # the bottom half never changes


def test_the_mask_follows_the_pictures_crop(tmp_path):
    mask = np.zeros((64, 80), dtype=np.uint8)  # half the picture's size: scaled to it first
    mask[:, :40] = 255  # the picture's left half (x < 80 of 160)
    Image.fromarray(mask).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", (128, 128), None, picture_size=(160, 128))  # centre crop: x 16..144
    assert m.shape == (128, 128)
    assert float(m[:, :60].min()) > 0.99 and float(m[:, 68:].max()) < 0.01  # white up to x = 64 of 128
