"""Direct inversion (PnP Inversion): the source row is held on the DDIM trajectory, so it reconstructs the
picture's VAE encoding exactly, for every family, and the targets still edit; the cache keeps the trajectory."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.engine.inversion import encode_image, invert, reconstruct_latent
from p2p_cli.engine.pipeline import decode_latents, run_edit
from p2p_cli.files.inversion_cache import CacheEntryError, read_inversion, save_inversion
from tests.engine.conftest import invert_twice
from p2p_cli.recipe import parse_recipe

PROMPT = "a painting of a squirrel eating a burger"
STEPS = 4


def test_the_source_row_is_the_picture_and_the_targets_edit(family_model, picture):
    inv = invert(family_model, picture, PROMPT, method="direct", steps=STEPS, guidance=7.5)
    assert inv.trajectory.shape == (STEPS + 1, 4, 16, 16) and torch.equal(inv.trajectory[:1], inv.latent)
    z0 = encode_image(family_model, picture[None])
    assert torch.allclose(inv.trajectory[-1:], z0, atol=1e-4)  # the trajectory ends at the picture
    recipe = parse_recipe({"source": PROMPT, "steps": STEPS, "guidance": 7.5,
                           "edits": [{"target": "a painting of a lion eating a burger"}]})
    out = run_edit(family_model, recipe, latent=inv.latent, uncond_per_step=inv.uncond,
                   uncond_added=inv.uncond_added, source_trajectory=inv.trajectory)
    assert torch.equal(out.latents[0:1], inv.trajectory[-1:])  # exact: the source is the inverted picture
    with torch.no_grad():
        assert torch.allclose(out.images[0], decode_latents(family_model, z0)[0], atol=1e-5)
    assert torch.equal(reconstruct_latent(family_model, inv, PROMPT, 7.5), inv.trajectory[-1:])
    assert (out.images[1] - out.images[0]).abs().mean() > 1e-3  # the target still edits

    plain = run_edit(family_model, recipe, latent=inv.latent, uncond_per_step=inv.uncond,
                     uncond_added=inv.uncond_added)  # the same inversion without the correction: ddim
    assert (plain.latents[0:1] - z0).abs().mean() > (out.latents[0:1] - z0).abs().mean() + 1e-3


def test_the_cache_keeps_the_trajectory_and_refuses_a_wrong_one(tiny_model, picture, tmp_path):
    first, again, hit = invert_twice(tiny_model, picture, PROMPT, "direct", STEPS, tmp_path)
    assert hit and torch.equal(again.trajectory, first.trajectory)
    bad = type(first)(**{**first.__dict__, "trajectory": first.trajectory[:-1]})
    path = save_inversion(bad, tmp_path / "bad.safetensors", "k")
    with pytest.raises(CacheEntryError, match="trajectory has shape"):
        read_inversion(path, "k")


def test_direct_is_the_default_for_real_pictures():
    recipe = parse_recipe({"source": PROMPT, "image": "photo.png", "edits": [{"target": PROMPT + " at night"}]})
    assert recipe.inversion_method == "direct"
