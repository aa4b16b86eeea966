"""Qwen-Image against diffusers' own QwenImagePipeline (a seed is the pipeline's CPU generator), its chat-template
text sequence, its VAE, and the causal encoder's effect on a replace edit."""

from __future__ import annotations

import pytest
import torch
from diffusers import QwenImagePipeline

from lab.arch import tiny_qwen_image_components
from p2p_cli.engine.pipeline import encode_prompts, run_edit, text_tokenizers
from p2p_cli.engine.plan import compile_plan
from p2p_cli.models import from_components
from p2p_cli.recipe import parse_recipe
from p2p_cli.text.tokens import find_tokens, token_ids

SOURCE, TARGET = "a big red circle on the left", "a big red squirrel on the left"  # squirrel: several tokens
STEPS = 4


def recipe(**top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 5, "size": 128, "edits": [{"target": TARGET}]}
    return parse_recipe({**data, **top})


@pytest.fixture(scope="module")
def parts():
    return tiny_qwen_image_components(seed=0)


@pytest.mark.parametrize("negative", ["blurry", None])
def test_uncontrolled_rows_equal_the_pipeline_called_with_the_seed(parts, negative):
    """Windows 0: source and edit are QwenImagePipeline's pictures for each prompt alone with
    generator=torch.Generator("cpu").manual_seed(seed) (its noise has a frame axis), with true CFG over a negative
    prompt (rescaled per patch) or without one (guidance 1); the two prompts have different token counts, so the
    batch's padding masks differ per row."""
    model = from_components(dict(parts))
    assert len(token_ids(text_tokenizers(model), SOURCE)) != len(token_ids(text_tokenizers(model), TARGET))
    guided = {"negative_prompt": negative, "guidance": 4.0} if negative else {"guidance": 1.0}
    ours = run_edit(model, recipe(cross_replace=0.0, self_replace=0.0, **guided))
    pipe = QwenImagePipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"negative_prompt": negative, "true_cfg_scale": 4.0} if negative else {}
    theirs = torch.cat([pipe(p, num_inference_steps=STEPS, height=128, width=128, output_type="pt",
                             generator=torch.Generator("cpu").manual_seed(5), **kwargs).images
                        for p in (SOURCE, TARGET)])
    assert torch.allclose(ours.images, theirs, atol=1e-4, rtol=0)
    assert (ours.images[0] - ours.images[1]).abs().max() > 1e-3  # the prompts matter: the check can fail


def test_the_text_sequence_is_the_pipelines_prompt_embeds_padded_and_masked(parts, tiny_qwen_image_model):
    model = tiny_qwen_image_model
    cond = encode_prompts(model, [SOURCE, TARGET])
    pipe = QwenImagePipeline(**parts)
    for row, prompt in enumerate((SOURCE, TARGET)):
        embeds, mask = pipe.encode_prompt(prompt, device="cpu")
        n = embeds.shape[1]
        assert mask is None  # one prompt: no padding in the pipeline
        assert torch.allclose(cond.hidden[row, :n], embeds[0], atol=1e-5)
        assert cond.added["encoder_hidden_states_mask"][row].tolist() == [1] * n + [0] * (cond.hidden.shape[1] - n)
        assert n == len(token_ids(text_tokenizers(model), prompt))  # the plan's positions are the sequence's


def test_the_vae_round_trip_follows_the_pipelines_normalisation(tiny_qwen_image_model):
    """to_latent inverts to_pixels' latent normalisation: decoding, encoding and decoding again is stable."""
    model = tiny_qwen_image_model
    family = model.family
    z = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    x = family.to_pixels(model, z).clamp(-1, 1)
    cfg = model.vae.config
    mean = model.vae.encode(x[:, :, None]).latent_dist.mean
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    expected = ((mean - torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)) / std)[:, :, 0]
    assert torch.allclose(family.to_latent(model, x), expected, atol=1e-5)
    assert model.vae_scale == 8 and model.native_size == (1024, 1024)


def test_the_causal_encoder_changes_later_tokens_and_replace_still_maps_them(tiny_qwen_image_model):
    """The language model is causal: a swapped word leaves the tokens before it unchanged and changes every later
    one. A replace edit maps the later words (and the template's suffix) one to one, as for T5: their keys carry the
    target's own states (the values read there are the target's), their maps the source's layout."""
    model = tiny_qwen_image_model
    tok = text_tokenizers(model)
    cond = encode_prompts(model, [SOURCE, TARGET])
    swap_s, swap_t = find_tokens(tok, SOURCE, "circle"), find_tokens(tok, TARGET, "squirrel")
    assert torch.allclose(cond.hidden[0, : swap_s[0]], cond.hidden[1, : swap_t[0]], atol=1e-6)
    after_s, after_t = find_tokens(tok, SOURCE, "left"), find_tokens(tok, TARGET, "left")
    assert not torch.allclose(cond.hidden[0, after_s], cond.hidden[1, after_t], atol=1e-3)
    plan = compile_plan(recipe(), tok)
    mapper = plan.mapper[0]
    assert mapper[after_s[0], after_t[0]] == 1
    n_t = len(token_ids(tok, TARGET))
    assert all(mapper[:, j].sum() > 0 for j in range(n_t)) and mapper[:, n_t:].sum() == 0


def test_family_is_detected_and_its_defaults(tiny_qwen_image_model):
    family = tiny_qwen_image_model.family
    assert family.name == "qwen-image" and family.default_guidance == 4.0 and family.cfg
    assert family.text_length(tiny_qwen_image_model) == 512
    assert len(family.blocks(tiny_qwen_image_model)) == 2


def test_a_run_reads_only_the_positions_its_longest_prompt_has(tiny_qwen_image_model, monkeypatch):
    """The masked padding beyond the run's longest prompt (negative prompt included) is dropped before sampling:
    the transformer gets that many text positions, not 512 (the pipeline's cost; the pictures are the pipeline's,
    test above)."""
    model = tiny_qwen_image_model
    seen = []
    denoise = type(model.family).denoise
    def recording(self, m, x, t, cond, kw=None):
        seen.append(cond.hidden.shape[1])
        return denoise(self, m, x, t, cond, kw)

    monkeypatch.setattr(type(model.family), "denoise", recording)
    negative = "blurry, low quality, a bad picture of nothing at all"
    run_edit(model, recipe(negative_prompt=negative))
    tok = text_tokenizers(model)
    assert set(seen) == {max(len(token_ids(tok, p)) for p in (SOURCE, TARGET, negative))}
