"""FLUX.2 [klein] against diffusers' own Flux2KleinPipeline (a seed is the pipeline's CPU generator, its noise drawn
in 2x2 patches), its chat-template text sequence, its batch-normed patched VAE latents."""

from __future__ import annotations

import pytest
import torch
from diffusers import Flux2KleinPipeline

from lab.arch import tiny_flux2_klein_components
from p2p_cli.engine.pipeline import encode_prompts, initial_latent, run_edit, text_tokenizers
from p2p_cli.models import Model, from_components
from p2p_cli.recipe import parse_recipe
from p2p_cli.text.tokens import PromptError, find_tokens, token_ids, word_spans

SOURCE, TARGET = "a big red circle on the left", "a big red squirrel on the left"
STEPS = 3


def recipe(**top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 5, "size": 128, "edits": [{"target": TARGET}]}
    return parse_recipe({**data, **top})


@pytest.fixture(scope="module")
def parts():
    return tiny_flux2_klein_components(seed=0)


def pipeline_images(parts, prompts, guidance, **kwargs):
    pipe = Flux2KleinPipeline(**parts, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return torch.cat([pipe(prompt=p, num_inference_steps=STEPS, height=128, width=128, output_type="pt",
                           guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(5)).images
                      for p in prompts])


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_uncontrolled_rows_equal_the_pipeline_called_with_the_seed(parts, guidance):
    """Windows 0: source and edit are Flux2KleinPipeline's pictures for each prompt alone with
    generator=torch.Generator("cpu").manual_seed(seed): CFG over the empty negative prompt, or none at guidance 1."""
    model = from_components(dict(parts))
    ours = run_edit(model, recipe(cross_replace=0.0, self_replace=0.0, guidance=guidance))
    theirs = pipeline_images(parts, (SOURCE, TARGET), guidance)
    assert torch.allclose(ours.images, theirs, atol=1e-4, rtol=0)
    assert (ours.images[0] - ours.images[1]).abs().max() > 1e-3  # the prompts matter: the check can fail


def test_a_distilled_model_runs_no_unconditional_batch(parts):
    model = Model(**dict(parts), options={"is_distilled": True}).to("cpu", torch.float32)
    assert not model.family.unconditional(model)
    ours = run_edit(model, recipe(cross_replace=0.0, self_replace=0.0, guidance=4.0))
    theirs = pipeline_images(parts, (SOURCE, TARGET), 4.0, is_distilled=True)  # the pipeline ignores guidance
    assert torch.allclose(ours.images, theirs, atol=1e-4, rtol=0)


def test_the_noise_is_drawn_in_patches(tiny_flux2_klein_model):
    """The engine's latent is the patched one: (1, 128, H/16, W/16) from the seed's generator, as prepare_latents."""
    model = tiny_flux2_klein_model
    assert model.latent_channels == 128 and model.vae_scale == 16 and model.native_size == (1024, 1024)
    pipe = Flux2KleinPipeline(**model.parts())
    theirs, _ = pipe.prepare_latents(1, 32, 128, 128, torch.float32, "cpu", torch.Generator("cpu").manual_seed(5))
    ours = initial_latent(5, model.latent_channels, (8, 8))
    assert torch.equal(ours.flatten(2).transpose(1, 2), theirs)


def test_the_text_sequence_is_the_pipelines_and_the_template_is_no_word(parts, tiny_flux2_klein_model):
    model = tiny_flux2_klein_model
    cond = encode_prompts(model, [SOURCE])
    embeds, _ = Flux2KleinPipeline(**parts).encode_prompt(SOURCE, device="cpu")
    assert torch.allclose(cond.hidden, embeds, atol=1e-5)
    tok = text_tokenizers(model)
    spans = word_spans(tok, SOURCE)
    assert spans[0].positions[0] == tok.prompt_lead == 3  # <|im_start|> user \n: read, but no word
    assert [s.word for s in spans] == SOURCE.split()
    for special in ("user", "assistant", "think"):
        with pytest.raises(PromptError):
            find_tokens(tok, SOURCE, special)
    assert len(find_tokens(tok, TARGET, "squirrel")) > 1
    assert tok.model_max_length == cond.hidden.shape[1] == 512
    assert len(token_ids(tok, SOURCE)) == spans[-1].positions[-1] + 1 + tok.prompt_trail


def test_the_vae_latents_are_batch_normed_in_patches(tiny_flux2_klein_model):
    model = tiny_flux2_klein_model
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    theirs = Flux2KleinPipeline(**model.parts())._encode_vae_image(x, None)
    assert torch.allclose(model.family.to_latent(model, x), theirs, atol=1e-5)


def test_a_users_distilled_klein_pipeline_runs_no_unconditional_batch(parts):
    """from_pipeline reads is_distilled from the pipeline's config, as a folder's model_index.json is read."""
    from p2p_cli.user_pipeline import from_pipeline

    distilled = from_pipeline(Flux2KleinPipeline(**parts, is_distilled=True))
    assert not distilled.family.unconditional(distilled)
    model = from_pipeline(Flux2KleinPipeline(**parts))
    assert model.family.unconditional(model)
