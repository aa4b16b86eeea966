"""flowedit inversion on the flow-matching families: the residual maps make the source row land on the picture in
the one batched loop while the targets edit; an uncontrolled target is FlowEdit's own edit (Kulikov et al., 2024,
Algorithm 1, n_avg = 1), computed here by an independent loop written from the paper; the maps survive the cache;
the DDIM families refuse the method and name ddpm."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.api import resolve_recipe
from p2p_cli.engine.inversion import DDPM_SEED, encode_image, invert, reconstruct_latent
from p2p_cli.engine.pipeline import encode_negative, encode_prompts, run_edit, schedule_for
from p2p_cli.recipe import RecipeError, parse_recipe
from tests.engine.conftest import invert_twice

PROMPT = "a big red circle on the left"
TARGET = "a big blue circle on the left"
STEPS = 4


def test_the_source_reconstructs_and_the_targets_edit(joint_model, picture):
    guidance = joint_model.family.default_guidance
    inv = invert(joint_model, picture, PROMPT, method="flowedit", steps=STEPS, guidance=guidance)
    z0 = encode_image(joint_model, picture[None])
    assert inv.noise.shape == (STEPS, *z0.shape[1:]) and inv.trajectory is None
    assert torch.allclose(reconstruct_latent(joint_model, inv, PROMPT, guidance), z0, atol=1e-4)
    recipe = parse_recipe({"source": PROMPT, "steps": STEPS, "size": 128, "guidance": guidance,
                           "edits": [{"target": TARGET}]})
    out = run_edit(joint_model, recipe, latent=inv.latent, uncond_per_step=inv.uncond, uncond_added=inv.uncond_added,
                   noise_maps=inv.noise)
    assert torch.allclose(out.latents[0:1], z0, atol=1e-4)  # no trajectory correction: the maps do it
    assert (out.latents[1] - out.latents[0]).abs().mean() > 1e-4
    plain = reconstruct_latent(joint_model, invert(joint_model, picture, PROMPT, method="ddim", steps=STEPS,
                                                   guidance=guidance), PROMPT, guidance)
    assert (plain - z0).abs().mean() > 10 * (out.latents[0:1] - z0).abs().mean()


def flowedit_reference(model, z0: torch.Tensor, source: str, target: str, steps: int, guidance: float,
                       n_max: int | None = None) -> torch.Tensor:
    """FlowEdit's Algorithm 1 as the paper writes it (n_min = 0, n_avg = 1; n_max: the last n_max of the steps,
    default all), with the noise at step i drawn as flowedit inversion draws it: Z_edit starts at X_src; each step
    noises X_src afresh to Z_src, shifts it by Z_edit - X_src to Z_tar, and moves Z_edit by the step's length times
    V(Z_tar, target) - V(Z_src, source)."""
    schedule = schedule_for(model, steps, tuple(z0.shape[-2:]))
    noises = torch.randn((steps, *z0.shape[1:]), generator=torch.Generator("cpu").manual_seed(DDPM_SEED))
    guided = guidance > 1.0 and model.family.unconditional(model)
    negative = encode_negative(model, "", 1)

    def velocity(z: torch.Tensor, prompt: str, t: torch.Tensor) -> torch.Tensor:
        cond = model.family.with_guidance(model, encode_prompts(model, [prompt]), guidance)
        v = model.family.denoise(model, z, t, cond).float()
        if not guided:
            return v
        return model.family.guide(model.family.denoise(model, z, t, negative).float(), v, guidance)

    z_edit = z0.clone()
    with torch.no_grad():
        for i, t in enumerate(schedule.timesteps):
            if i < steps - (steps if n_max is None else n_max):
                continue
            s, s_next = schedule.sigmas[i], schedule.sigmas[i + 1]
            z_src = (1 - s) * z0 + s * noises[i : i + 1]
            z_tar = z_edit + z_src - z0
            z_edit = z_edit + (s_next - s) * (velocity(z_tar, target, t) - velocity(z_src, source, t))
    return z_edit


@pytest.mark.parametrize("name", ["tiny_sd3_model", "tiny_flux_model"])
def test_an_uncontrolled_target_is_flowedits_edit(request, name, picture):
    """The baseline row (the target prompt with no attention control) under the maps equals FlowEdit computed by
    the independent loop above: one velocity difference per step, no inversion, no batch."""
    model = request.getfixturevalue(name)
    guidance = model.family.default_guidance
    inv = invert(model, picture, PROMPT, method="flowedit", steps=STEPS, guidance=guidance)
    recipe = parse_recipe({"source": PROMPT, "steps": STEPS, "size": 128, "guidance": guidance,
                           "edits": [{"target": TARGET}]})
    out = run_edit(model, recipe, baseline=True, latent=inv.latent, uncond_per_step=inv.uncond,
                   uncond_added=inv.uncond_added, noise_maps=inv.noise)
    baseline = out.latents[out.roles.index("baseline-1")]
    z0 = encode_image(model, picture[None])
    reference = flowedit_reference(model, z0, PROMPT, TARGET, STEPS, guidance)[0]
    assert (baseline - z0[0]).abs().mean() > 1e-3  # an edit, not the picture
    assert torch.allclose(baseline, reference, atol=1e-4), float((baseline - reference).abs().max())


def test_edit_start_is_flowedits_n_max(tiny_sd3_model, picture):
    """edit_start 0.5 of 6 steps: the uncontrolled target is FlowEdit run over the last 3 steps only (n_max = 3),
    and it differs from the edit over all 6 (so the setting does something)."""
    steps, guidance = 6, tiny_sd3_model.family.default_guidance
    inv = invert(tiny_sd3_model, picture, PROMPT, method="flowedit", steps=steps, guidance=guidance)
    z0 = encode_image(tiny_sd3_model, picture[None])
    rows = {}
    for start in (None, 0.5):
        recipe = parse_recipe({"source": PROMPT, "steps": steps, "size": 128, "guidance": guidance, "edit_start": start,
                               "edits": [{"target": TARGET}]})
        out = run_edit(tiny_sd3_model, recipe, baseline=True, latent=inv.latent, uncond_per_step=inv.uncond,
                       uncond_added=inv.uncond_added, noise_maps=inv.noise)
        rows[start] = out.latents[out.roles.index("baseline-1")]
        assert torch.allclose(out.latents[0:1], z0, atol=1e-4)  # the source is still the picture
    reference = flowedit_reference(tiny_sd3_model, z0, PROMPT, TARGET, steps, guidance, n_max=3)[0]
    assert torch.allclose(rows[0.5], reference, atol=1e-4), float((rows[0.5] - reference).abs().max())
    assert (rows[0.5] - rows[None]).abs().mean() > 1e-3


def test_the_cache_keeps_the_maps(tiny_sd3_model, picture, tmp_path):
    first, again, hit = invert_twice(tiny_sd3_model, picture, PROMPT, "flowedit", STEPS, tmp_path)
    assert hit and torch.equal(again.noise, first.noise)


def test_ddim_families_refuse_flowedit_and_name_ddpm(family_model, picture):
    with pytest.raises(ValueError, match="use ddpm"):
        invert(family_model, picture, PROMPT, method="flowedit", steps=2, guidance=7.5)
    recipe = parse_recipe({"source": PROMPT, "steps": 2, "image": "p.png", "inversion": "flowedit",
                           "edits": [{"target": TARGET}]})
    with pytest.raises(RecipeError, match="inversion: flowedit inverts a flow-matching ODE.*use ddpm"):
        resolve_recipe(family_model, recipe)
