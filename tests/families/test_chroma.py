"""Chroma against diffusers' own ChromaPipeline (a seed is the pipeline's CPU generator), its T5 sequence and the
attention mask its blocks hand the attention processors; the edits on it, fused as explicit."""

from __future__ import annotations

import pytest
import torch
from diffusers import ChromaPipeline

from lab.arch import tiny_chroma_components
from p2p_cli.engine.control.run import Control
from p2p_cli.engine.joint_attention import JointControl
from p2p_cli.engine.pipeline import encode_prompts, run_edit, text_tokenizers
from p2p_cli.models import from_components
from p2p_cli.recipe import parse_recipe
from p2p_cli.text.tokens import find_tokens, word_spans

SOURCE, TARGET = "a big red circle on the left", "a big blue circle on the left"
STEPS = 3


def recipe(*edits, **top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 5, "size": 128, "edits": list(edits) or [{"target": TARGET}]}
    return parse_recipe({**data, **top})


@pytest.fixture(scope="module")
def parts():
    return tiny_chroma_components(seed=0)


def pipeline_images(parts, prompts, guidance, negative=None):
    pipe = ChromaPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return torch.cat([pipe(prompt=p, negative_prompt=negative, num_inference_steps=STEPS, height=128, width=128,
                           output_type="pt", guidance_scale=guidance,
                           generator=torch.Generator("cpu").manual_seed(5)).images for p in prompts])


@pytest.mark.parametrize("guidance, negative", [(5.0, "blurry"), (5.0, None), (1.0, None)])
def test_uncontrolled_rows_equal_the_pipeline_called_with_the_seed(parts, guidance, negative):
    """Windows 0: source and edit are ChromaPipeline's pictures for each prompt alone with
    generator=torch.Generator("cpu").manual_seed(seed): true CFG over the negative prompt, or none at guidance 1."""
    model = from_components(dict(parts))
    ours = run_edit(model, recipe(cross_replace=0.0, self_replace=0.0, guidance=guidance,
                                  negative_prompt=negative or ""))
    theirs = pipeline_images(parts, (SOURCE, TARGET), guidance, negative)
    assert torch.allclose(ours.images, theirs, atol=1e-4, rtol=0)
    assert (ours.images[0] - ours.images[1]).abs().max() > 1e-3  # the prompts matter: the check can fail


def test_the_equality_depends_on_the_attention_mask(parts, monkeypatch):
    """The pipeline with its transformer mask dropped draws another picture: the equality above holds because our
    attention processors apply the mask the blocks hand them as the pipeline's do."""
    model = from_components(dict(parts))
    ours = run_edit(model, recipe(cross_replace=0.0, self_replace=0.0)).images[:1]
    monkeypatch.setattr(ChromaPipeline, "_prepare_attention_mask", lambda self, *a, **k: None)
    unmasked = pipeline_images(parts, (SOURCE,), 5.0)
    assert (ours - unmasked).abs().max() > 1e-3


def test_the_text_sequence_and_mask_are_the_pipelines(parts, tiny_chroma_model):
    """T5 run with the tokenizer's mask; the transformer mask keeps the prompt, its end token and one padding token;
    words are planned on the T5 tokenizer over the 512 positions (no start token: the first word is at 0)."""
    model = tiny_chroma_model
    cond = encode_prompts(model, [SOURCE, "a cat"])
    embeds, _, mask, *_ = ChromaPipeline(**parts).encode_prompt([SOURCE, "a cat"], device="cpu",
                                                                 do_classifier_free_guidance=False)
    assert torch.equal(cond.hidden, embeds) and torch.equal(cond.added["attention_mask"], mask)
    real = model.tokenizer([SOURCE], return_tensors="pt").input_ids.shape[1]  # the words and </s>
    assert cond.added["attention_mask"][0].sum() == real + 1 and cond.hidden.shape[1] == 512
    tok = text_tokenizers(model)
    assert tok.model_max_length == 512
    assert [s.word for s in word_spans(tok, SOURCE)] == SOURCE.split()
    assert find_tokens(tok, SOURCE, "a")[0] == 0


EDITS = {
    "replace": {"target": TARGET},
    "refine": {"target": "a big red circle on the left at night"},
    "reweight": {"target": SOURCE, "reweight": {"red": 3.0}},
    "blend": {"target": TARGET, "local_blend": {"words": ["red", "blue"], "threshold": 0.3}},
}


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_edits_run_fused_as_explicit(tiny_chroma_model, kind):
    """Each edit kind changes the target, and the fused attention equals the explicit probabilities times V."""
    r = recipe(EDITS[kind], baseline=True)
    fused = run_edit(tiny_chroma_model, r)
    explicit = run_edit(tiny_chroma_model, r, attention="explicit")
    assert torch.allclose(fused.latents, explicit.latents, atol=2e-4)
    plain = fused.roles.index("baseline-1") if "baseline-1" in fused.roles else 0  # reweight: the source is its prompt
    assert not torch.allclose(fused.latents[1], fused.latents[plain], atol=1e-3)  # the control moved the edit
    if kind == "blend":
        assert torch.equal(fused.masks[1], explicit.masks[1])


def test_blend_maps_from_the_text_block_alone_read_the_mask(tiny_chroma_model):
    """At 384 px (576 image tokens, more than the 512 text positions) the fused path makes local blend's maps from
    the text block alone (the share SDPA and the text softmax, each with the image queries' mask): the explicit
    path's masks and pictures (the maps themselves: the random-input test below)."""
    r = recipe(EDITS["blend"], size=384, steps=2)
    fused, explicit = run_edit(tiny_chroma_model, r), run_edit(tiny_chroma_model, r, attention="explicit")
    assert torch.equal(fused.masks[1], explicit.masks[1])
    assert torch.allclose(fused.latents, explicit.latents, atol=2e-4)


@pytest.mark.parametrize("attention", ["fused", "explicit"])
def test_an_identity_edit_gives_the_source(tiny_chroma_model, attention):
    """A target equal to the source under full windows is the source exactly: the control's own softmax and SDPA
    calls apply the mask as the layer's whole-sequence call does (a mask missing in either would move the row)."""
    out = run_edit(tiny_chroma_model, recipe({"target": SOURCE}, self_replace=1.0), attention=attention)
    assert torch.allclose(out.latents[1], out.latents[0], atol=1e-5)


@pytest.mark.parametrize("boolean", [False, True])
def test_a_full_mask_is_applied_fused_as_explicit_and_as_sdpa(boolean):
    """On random inputs with a (B, 1, S, S) mask (float: added; boolean: masked), the control's fused and explicit
    forms agree, and outside the windows the layer is SDPA with that mask."""
    n_text, n_image = 5, 16
    L, S = n_text, n_text + n_image
    mapper = torch.eye(L)[None].clone()
    mapper[0, 1, 1], mapper[0, 1, 2], mapper[0, 2, 2] = 0.0, 1.0, 0.0

    def control(explicit: bool, window: float) -> Control:
        return Control(n_prompts=2, n_targets=1, guided=False, latent_hw=(4, 4), mapper=mapper,
                       aligned=torch.ones(1, L), equalizer=torch.tensor([[1.0, 2.0, 0.5, 1.0, 1.0]]),
                       alpha=torch.full((1, 1, L), window), self_gate=torch.full((1, 1), window), self_max_res=0,
                       explicit=explicit, joint=True, self_blocks=frozenset({0}), text_mass="source")

    torch.manual_seed(3)
    q, k, v = torch.randn(3, 2, 2, S, 8).unbind(0)
    keep = torch.ones(2, S)
    keep[0, 3:n_text], keep[1, 4:n_text] = 0, 0  # each row's text padding past its kept positions
    mask = keep[:, None, None, :] * keep[:, None, :, None]
    mask = mask.bool() if boolean else mask
    text, image = slice(0, n_text), slice(n_text, None)
    outs = {}
    for explicit in (True, False):
        ctl = control(explicit, 1.0)
        outs[explicit] = JointControl(0, "b", ctl).attend(q, k, v, text, image, ctl.step_inputs()[0], mask=mask)
    assert torch.allclose(outs[True], outs[False], atol=1e-5)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert not torch.allclose(outs[True][1], sdpa[1], atol=1e-3)  # the edit moved the target
    ctl = control(True, 0.0)
    closed = JointControl(0, "b", ctl).attend(q, k, v, text, image, ctl.step_inputs()[0], mask=mask)
    assert torch.allclose(closed, sdpa, atol=1e-5)
    unmasked = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert not torch.allclose(sdpa[:, :, image], unmasked[:, :, image], atol=1e-3)  # the mask matters here
    # local blend's maps without the image-key block: the text block of the whole masked softmax
    rows = mask[:, :, image]
    scores = q[:, :, image] @ k.transpose(-1, -2) * 8 ** -0.5
    whole = torch.softmax(scores.masked_fill(~rows, float("-inf")) if boolean else scores + rows, dim=-1)
    alone = JointControl(0, "b", control(False, 1.0))._text_probs(q[:, :, image], k, text, 8 ** -0.5, rows)
    assert torch.allclose(alone, whole[..., text], atol=1e-6)
