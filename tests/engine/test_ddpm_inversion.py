"""Edit-friendly DDPM inversion: the noise maps make the source row land on the picture, in the one batched loop,
while the targets edit; the maps survive the cache; flow-matching families refuse the method."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.engine.inversion import encode_image, invert, reconstruct_latent
from p2p_cli.engine.pipeline import run_edit
from tests.engine.conftest import invert_twice
from p2p_cli.api import resolve_recipe
from p2p_cli.recipe import RecipeError, parse_recipe

PROMPT = "a painting of a squirrel eating a burger"
STEPS = 4


def test_the_source_reconstructs_and_the_targets_edit(family_model, picture):
    inv = invert(family_model, picture, PROMPT, method="ddpm", steps=STEPS, guidance=7.5)
    assert inv.noise.shape == (STEPS, 4, 16, 16) and inv.trajectory is None
    z0 = encode_image(family_model, picture[None])
    assert torch.allclose(reconstruct_latent(family_model, inv, PROMPT, 7.5), z0, atol=1e-3)
    recipe = parse_recipe({"source": PROMPT, "steps": STEPS, "guidance": 7.5,
                           "edits": [{"target": "a painting of a lion eating a burger"}]})
    out = run_edit(family_model, recipe, latent=inv.latent, uncond_per_step=inv.uncond, uncond_added=inv.uncond_added,
                   noise_maps=inv.noise)
    assert torch.allclose(out.latents[0:1], z0, atol=1e-3)  # no trajectory correction: the maps do it
    assert (out.latents[1] - out.latents[0]).abs().mean() > 1e-3
    ddim = invert(family_model, picture, PROMPT, method="ddim", steps=STEPS, guidance=7.5)
    plain = reconstruct_latent(family_model, ddim, PROMPT, 7.5)
    assert (plain - z0).abs().mean() > 10 * (out.latents[0:1] - z0).abs().mean()


def test_the_cache_keeps_the_noise_maps(tiny_model, picture, tmp_path):
    first, again, hit = invert_twice(tiny_model, picture, PROMPT, "ddpm", STEPS, tmp_path)
    assert hit and torch.equal(again.noise, first.noise)


def test_flow_families_refuse_ddpm(joint_model, picture):
    with pytest.raises(ValueError, match="use flowedit"):
        invert(joint_model, picture, PROMPT, method="ddpm", steps=2, guidance=3.5)
    recipe = parse_recipe({"source": PROMPT, "steps": 2, "image": "p.png", "inversion": "ddpm",
                           "edits": [{"target": PROMPT + " at night"}]})
    with pytest.raises(RecipeError, match="inversion: ddpm"):
        resolve_recipe(joint_model, recipe)
