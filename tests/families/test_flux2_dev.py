"""FLUX.2 [dev] against diffusers' own Flux2Pipeline: its pictures for a seed (guidance an input, no unconditional
batch), its system-message template read as lead tokens, and the user's own Flux2Pipeline as a model."""

from __future__ import annotations

import pytest
import torch
from diffusers import Flux2Pipeline
from diffusers.pipelines.flux2.pipeline_flux2 import format_input

import p2p_cli as p2p
from lab.arch import tiny_flux2_dev_components
from p2p_cli.checks import model_problems
from p2p_cli.engine.pipeline import encode_prompts, run_edit, text_tokenizers
from p2p_cli.models import from_components
from p2p_cli.recipe import parse_recipe
from p2p_cli.text.tokens import PromptError, find_tokens, token_ids, word_spans
from p2p_cli.user_pipeline import from_pipeline

SOURCE, TARGET = "a big red circle on the left", "a big red squirrel on the left"
STEPS = 3


def recipe(**top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 5, "size": 128, "edits": [{"target": TARGET}]}
    return parse_recipe({**data, **top})


@pytest.fixture(scope="module")
def parts():
    return tiny_flux2_dev_components(seed=0)


def pipeline_images(pipe, prompts, guidance):
    pipe.set_progress_bar_config(disable=True)
    return torch.cat([pipe(prompt=p, num_inference_steps=STEPS, height=128, width=128, output_type="pt",
                           guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(5)).images
                      for p in prompts])


@pytest.mark.parametrize("guidance", [4.0, 2.5])
def test_uncontrolled_rows_equal_the_pipeline_called_with_the_seed(parts, guidance):
    """Windows 0: source and edit are Flux2Pipeline's pictures for each prompt alone with
    generator=torch.Generator("cpu").manual_seed(seed); the guidance goes into the transformer, no CFG batch."""
    model = from_components(dict(parts))
    assert model.family.name == "flux2-dev" and not model.family.unconditional(model)
    ours = run_edit(model, recipe(cross_replace=0.0, self_replace=0.0, guidance=guidance))
    theirs = pipeline_images(Flux2Pipeline(**parts), (SOURCE, TARGET), guidance)
    assert torch.allclose(ours.images, theirs, atol=1e-4, rtol=0)
    assert (ours.images[0] - ours.images[1]).abs().max() > 1e-3  # the prompts matter: the check can fail


def test_the_guidance_is_the_transformers_input(tiny_flux2_dev_model):
    """A guidance-distilled model: the recipe's guidance changes the picture through the guidance embedding."""
    a = run_edit(tiny_flux2_dev_model, recipe(cross_replace=0.0, self_replace=0.0, guidance=4.0)).images
    b = run_edit(tiny_flux2_dev_model, recipe(cross_replace=0.0, self_replace=0.0, guidance=1.5)).images
    assert (a - b).abs().max() > 1e-4


def test_the_text_sequence_is_the_pipelines_and_the_system_message_is_no_word(parts, tiny_flux2_dev_model):
    """Our embedding is encode_prompt's; our ids are the pipeline's own (one <s>, though the tokenizer adds one
    to plain text); the system prefix is lead tokens and each word maps to all its pieces."""
    model = tiny_flux2_dev_model
    cond = encode_prompts(model, [SOURCE])
    embeds, _ = Flux2Pipeline(**parts).encode_prompt(SOURCE, device="cpu")
    assert torch.allclose(cond.hidden, embeds, atol=1e-5)
    tokenizer = parts["tokenizer"]
    theirs = tokenizer.apply_chat_template(format_input([SOURCE]), add_generation_prompt=False, tokenize=True,
                                           return_dict=True, padding="max_length", truncation=True, max_length=512)
    used = sum(theirs["attention_mask"][0])
    tok = text_tokenizers(model)
    assert token_ids(tok, SOURCE) == list(theirs["input_ids"][0][:used])
    assert tokenizer.convert_ids_to_tokens(token_ids(tok, SOURCE)[:2]) == ["<s>", "[SYSTEM_PROMPT]"]
    spans = word_spans(tok, SOURCE)
    assert [s.word for s in spans] == SOURCE.split()
    lead = tokenizer.convert_ids_to_tokens(token_ids(tok, SOURCE)[: tok.prompt_lead])
    assert lead[-1] == "[INST]" and "[/SYSTEM_PROMPT]" in lead and len(lead) > 20  # <s>, the system message
    assert spans[0].positions[0] == tok.prompt_lead
    assert tokenizer.convert_ids_to_tokens(token_ids(tok, SOURCE)[spans[-1].positions[-1] + 1]) == "[/INST]"
    pieces = find_tokens(tok, TARGET, "squirrel")
    assert len(pieces) > 1
    assert tokenizer.decode(token_ids(tok, TARGET)[pieces[0] : pieces[-1] + 1]).strip() == "squirrel"
    for word in ("You", "SYSTEM_PROMPT", "INST"):  # the system message's words are no words of the prompt
        with pytest.raises(PromptError):
            find_tokens(tok, SOURCE, word)
    assert tok.model_max_length == cond.hidden.shape[1] == 512


def test_a_prompt_the_pipeline_would_change_is_a_recipe_error(tiny_flux2_dev_model):
    """format_input drops "[IMG]" from prompts: such a prompt is refused with its field, not read differently."""
    data = {"source": SOURCE, "steps": 2, "edits": [{"target": "a big red [IMG] squirrel on the left"}]}
    problems = model_problems(parse_recipe(data), tiny_flux2_dev_model.spec)
    assert len(problems) == 1 and problems[0].startswith('edits[0].target: Flux2Pipeline removes "[IMG]"')
    assert model_problems(parse_recipe({**data, "edits": [{"target": TARGET}]}), tiny_flux2_dev_model.spec) == []


def test_the_users_own_flux2_pipeline_is_a_model(parts):
    """A Flux2Pipeline passed as the model: the pipeline's own pictures with windows 0, its processors and pictures
    as before afterwards, and a system message the user changed on it is the one p2p reads."""
    pipe = Flux2Pipeline(**tiny_flux2_dev_components(seed=0))
    before = pipeline_images(pipe, (SOURCE,), 4.0)
    processors = dict(pipe.transformer.attn_processors)
    model = from_pipeline(pipe)
    assert model.family.name == "flux2-dev" and model.transformer is pipe.transformer
    data = {"source": SOURCE, "steps": STEPS, "seed": 5, "size": 128, "cross_replace": 0.0, "self_replace": 0.0,
            "edits": [{"target": TARGET}]}
    ours = p2p.edit(pipe, data, maps=False).run.images
    assert torch.allclose(ours, pipeline_images(pipe, (SOURCE, TARGET), 4.0), atol=1e-4, rtol=0)
    assert dict(pipe.transformer.attn_processors) == processors
    assert torch.equal(pipeline_images(pipe, (SOURCE,), 4.0), before)

    pipe.system_message = "You describe pictures."
    changed = p2p.edit(pipe, {**data, "edits": [{"target": SOURCE}]}, maps=False).run.images
    assert torch.allclose(changed[:1], pipeline_images(pipe, (SOURCE,), 4.0), atol=1e-4, rtol=0)
    assert (changed[:1] - before).abs().max() > 1e-4

