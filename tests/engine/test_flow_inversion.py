"""Real pictures on the flow-matching families (SD3, FLUX.1, Qwen-Image, FLUX.2 klein): the Euler ODE run backwards,
direct inversion's exact source row, the methods that need classifier-free guidance refused where there is none (FLUX.1)."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.engine.inversion import encode_image, invert, reconstruct_latent
from p2p_cli.engine.pipeline import decode_latents, run_edit
from p2p_cli.engine.sampler import FlowSchedule, euler_step
from p2p_cli.recipe import parse_recipe

PROMPT = "a big red circle on the left"
STEPS = 4


def test_euler_step_and_unstep_are_each_others_inverse_for_a_fixed_velocity():
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = FlowSchedule.from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0), 5)
    assert schedule.sigmas[0] == 1 and schedule.sigmas[-1] == 0 and len(schedule.sigmas) == 6
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for i in range(5):
        assert torch.allclose(schedule.unstep(v, schedule.step(v, x, i), i), x, atol=1e-6)
    assert torch.equal(schedule.step(v, x, 0), euler_step(v, x, schedule.sigmas[0], schedule.sigmas[1]))


def test_direct_inversion_holds_the_source_on_the_picture(joint_model, picture):
    guidance = joint_model.family.default_guidance
    inv = invert(joint_model, picture, PROMPT, method="direct", steps=STEPS, guidance=guidance)
    z0 = encode_image(joint_model, picture[None])
    assert torch.allclose(inv.trajectory[-1:], z0, atol=1e-4)
    recipe = parse_recipe({"source": PROMPT, "steps": STEPS, "size": 128,
                           "edits": [{"target": "a big blue circle on the left"}]})
    out = run_edit(joint_model, recipe, latent=inv.latent, uncond_per_step=inv.uncond,
                   uncond_added=inv.uncond_added, source_trajectory=inv.trajectory)
    assert torch.equal(out.latents[0:1], inv.trajectory[-1:])
    with torch.no_grad():
        assert torch.allclose(out.images[0], decode_latents(joint_model, z0)[0], atol=1e-5)
    assert torch.equal(reconstruct_latent(joint_model, inv, PROMPT, guidance), inv.trajectory[-1:])
    assert (out.images[1] - out.images[0]).abs().mean() > 1e-4  # the target still edits


def test_plain_flow_inversion_at_guidance_1_retraces_its_path(joint_model, picture):
    """Sampling forward from the inverted noise with the same prompt (no guidance) comes back near the picture
    (the first-order inversion's error only), far nearer than from other noise of the same size."""
    inv = invert(joint_model, picture, PROMPT, method="ddim", steps=8, guidance=1.0)
    z0 = encode_image(joint_model, picture[None])
    back = reconstruct_latent(joint_model, inv, PROMPT, 1.0)
    other = type(inv)(**{**inv.__dict__, "latent": torch.randn(inv.latent.shape, generator=torch.Generator().manual_seed(0))})
    elsewhere = reconstruct_latent(joint_model, other, PROMPT, 1.0)
    assert (back - z0).abs().mean() < 0.2 * (elsewhere - z0).abs().mean()


@pytest.mark.parametrize("name", ["tiny_sd3_model", "tiny_qwen_image_model", "tiny_chroma_model"])
def test_null_text_beats_plain_inversion_where_there_is_an_unconditional_batch(request, name, picture):
    model = request.getfixturevalue(name)
    guidance = model.family.default_guidance
    z0 = encode_image(model, picture[None])
    errors = {}
    for method in ("ddim", "null-text"):
        inv = invert(model, picture, PROMPT, method=method, steps=STEPS, guidance=guidance)
        errors[method] = float((reconstruct_latent(model, inv, PROMPT, guidance) - z0).abs().mean())
    assert errors["null-text"] < errors["ddim"]


@pytest.mark.parametrize("method", ["null-text", "negative-prompt"])
def test_flux_refuses_methods_that_need_an_unconditional_batch(tiny_flux_model, picture, method):
    with pytest.raises(ValueError, match="use direct or ddim"):
        invert(tiny_flux_model, picture, PROMPT, method=method, steps=2, guidance=3.5)
