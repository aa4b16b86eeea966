"""Several recipes in one batch (p2p edit --batch-rows) give exactly what each gives alone, for every family."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.engine.pipeline import run_edit, run_edits
from p2p_cli.recipe import parse_recipe


@pytest.fixture(scope="module", params=["tiny_model", "tiny_xl_model", "tiny_sd3_model", "tiny_flux_model",
                                                "tiny_qwen_image_model", "tiny_flux2_klein_model",
                                                "tiny_flux2_dev_model", "tiny_chroma_model"],
                ids=["sd", "sdxl", "sd3", "flux", "qwen-image", "flux2-klein", "flux2-dev", "chroma"])
def model(request):
    return request.getfixturevalue(request.param)


def recipes(model):
    joint = model.family.denoiser == "transformer"
    top = {"steps": 3, "size": 128, "guidance": 6.0}
    if not joint:
        top["self_replace_max_res"] = 8
    a = {"source": "a painting of a squirrel eating a burger", "seed": 1, "negative_prompt": "blurry",
         "edits": [{"target": "a painting of a lion eating a burger",
                    "local_blend": {"words": ["squirrel", "lion"], "threshold": 0.5}},
                   {"target": "a painting of a squirrel eating a big burger"}], **top}
    b = {"source": "a red circle on the left", "seed": 2, "baseline": True,
         "edits": [{"target": "a blue circle on the left", "cross_replace": {"default": 0.6, "blue": 0.3}}], **top}
    c = {"source": "a photo of a cat", "seed": 3,
         "edits": [{"target": "a photo of a cat", "reweight": {"cat": 2.0}}], **top}
    return [parse_recipe(r) for r in (a, b, c)]


@pytest.mark.parametrize("attention", ["fused", "explicit"])
def test_batched_recipes_equal_each_alone(model, attention):
    rs = recipes(model)
    together = run_edits(model, rs, attention=attention)
    for r, got in zip(rs, together):
        alone = run_edit(model, r, attention=attention)
        assert got.roles == alone.roles and got.prompts == alone.prompts
        assert torch.allclose(got.latents, alone.latents, atol=1e-4, rtol=0)
        assert torch.allclose(got.images, alone.images, atol=1e-4, rtol=0)
        assert got.masks.keys() == alone.masks.keys()
        for k in got.masks:
            assert torch.equal(got.masks[k], alone.masks[k])
    assert not torch.allclose(together[0].images[0], together[1].images[0], atol=1e-3)  # they are different runs


def test_recipes_that_differ_in_what_the_batch_shares_are_refused(tiny_model):
    rs = recipes(tiny_model)
    with pytest.raises(ValueError, match="must share steps"):
        run_edits(tiny_model, [rs[0], rs[1].model_copy(update={"steps": 4})])
