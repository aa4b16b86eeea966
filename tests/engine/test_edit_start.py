"""edit_start: every target (and baseline) follows its source for the first int(edit_start x steps) steps, then edits
from the source's latent there. Checked against an independent path (the plain DDIM sampler over the schedule split
in two), in a batch of several recipes (each row starts from its own source), and refused where out of range."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from p2p_cli.engine.pipeline import (encode_negative, encode_prompts, guided_predict, initial_latent, run_edit,
                                     run_edits, schedule_for)
from p2p_cli.engine.sampler import sample_ddim
from p2p_cli.families import Conditioning
from p2p_cli.recipe import RecipeError, parse_recipe

SOURCE, TARGET = "a red circle on the left", "a blue square on the left"


def two_part_ddim(model, seed: int, steps: int, k: int, guidance: float) -> torch.Tensor:
    """The source prompt for the first k DDIM steps from the seed's noise, then the target prompt for the rest: what
    an uncontrolled target with edit_start k / steps must be."""
    hw = (model.native_size[0] // model.vae_scale, model.native_size[1] // model.vae_scale)
    schedule = schedule_for(model, steps, hw)
    first, rest = ({f.name: getattr(schedule, f.name)[part] if f.name != "prediction_type" else schedule.prediction_type
                    for f in dataclasses.fields(schedule)} for part in (slice(0, k), slice(k, None)))
    negative = encode_negative(model, "", 1)

    def predict(prompt: str, offset: int):
        both = Conditioning.cat([negative, encode_prompts(model, [prompt])])
        inner = guided_predict(model, lambda i: both, guidance)
        return lambda x, t, i: inner(x, t, i + offset)

    x = initial_latent(seed, model.latent_channels, hw) * model.scheduler.init_noise_sigma
    with torch.inference_mode():
        x = sample_ddim(predict(SOURCE, 0), x, type(schedule)(**first))
        return sample_ddim(predict(TARGET, k), x, type(schedule)(**rest))


def test_an_uncontrolled_target_is_the_source_then_the_target(tiny_model):
    steps, guidance = 6, 7.5
    recipe = parse_recipe({"source": SOURCE, "steps": steps, "guidance": guidance, "seed": 3, "edit_start": 0.5,
                           "self_replace_max_res": 8, "edits": [{"target": TARGET}]})
    out = run_edit(tiny_model, recipe, baseline=True)
    baseline = out.latents[out.roles.index("baseline-1")]
    expected = two_part_ddim(tiny_model, 3, steps, 3, guidance)[0]
    assert torch.allclose(baseline, expected, atol=1e-4), float((baseline - expected).abs().max())
    plain = run_edit(tiny_model, recipe.model_copy(update={"edit_start": None}), baseline=True)
    assert (plain.latents[out.roles.index("baseline-1")] - baseline).abs().mean() > 1e-3  # the setting does something
    assert torch.equal(plain.latents[0], out.latents[0])  # and never touches the source


@pytest.mark.parametrize("name", ["tiny_model", "tiny_sd3_model"])
def test_each_row_starts_from_its_own_source_in_a_batch(request, name):
    model = request.getfixturevalue(name)
    top = {"steps": 4, "size": 128, "guidance": 6.0, "edit_start": 0.5}
    rs = [parse_recipe({"source": SOURCE, "seed": 1, "baseline": True, "edits": [{"target": TARGET}], **top}),
          parse_recipe({"source": "a photo of a cat", "seed": 2, "edits": [{"target": "a photo of a dog"}], **top})]
    together = run_edits(model, rs)
    for r, got in zip(rs, together):
        alone = run_edit(model, r)
        assert got.roles == alone.roles
        assert torch.allclose(got.latents, alone.latents, atol=1e-4, rtol=0)


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_out_of_range_is_refused_naming_the_field(value):
    with pytest.raises(RecipeError, match="edit_start"):
        parse_recipe({"source": SOURCE, "edit_start": value, "edits": [{"target": TARGET}]})
