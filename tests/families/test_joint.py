"""SD3 and FLUX.1 (joint attention, flow matching) against independent paths: diffusers' own pipelines, the
explicit joint probabilities, the T5 tokenizer's own word positions; and the recipe errors of these families."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline

from lab.arch import tiny_flux_components, tiny_sd3_components
from p2p_cli.engine.control.run import Control
from p2p_cli.engine.joint_attention import JointControl
from p2p_cli.engine.pipeline import initial_latent, run_edit, text_tokenizers
from p2p_cli.engine.plan import compile_plan
from p2p_cli.families.flux import pack
from p2p_cli.models import from_components
from p2p_cli.api import resolve_recipe
from p2p_cli.recipe import RecipeError, parse_recipe
from p2p_cli.text.mappers import replace_map
from p2p_cli.text.tokens import find_tokens

SOURCE, TARGET = "a big red circle on the left", "a big blue circle on the left"
STEPS = 4


def recipe(**top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 5, "size": 128, "edits": [{"target": TARGET}]}
    return parse_recipe({**data, **top})


VARIANTS = {
    "sd3": (tiny_sd3_components, {}),
    "sd3-without-t5": (tiny_sd3_components, {"t5": False}),
    "sd3.5": (tiny_sd3_components, {"sd35": True}),
    "flux-dev": (tiny_flux_components, {}),
    "flux-schnell": (tiny_flux_components, {"guidance": False}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_uncontrolled_rows_equal_the_diffusers_pipeline(variant):
    """With windows of 0 the source and the edit are what StableDiffusion3Pipeline / FluxPipeline make from the
    same initial noise: drawn (1, C, h, w) on a CPU generator by the project's rule, packed afterwards for FLUX."""
    make, kwargs = VARIANTS[variant]
    parts = make(**kwargs)
    model = from_components(dict(parts))
    r = recipe(cross_replace=0.0, self_replace=0.0, negative_prompt="blurry" if variant.startswith("sd3") else "")
    ours = run_edit(model, r)
    latent = initial_latent(r.seed, model.latent_channels, (16, 16)).expand(2, -1, -1, -1)
    common = dict(num_inference_steps=STEPS, height=128, width=128, output_type="pt",
                  guidance_scale=model.family.default_guidance)
    if variant.startswith("sd3"):
        parts.setdefault("text_encoder_3", None)
        parts.setdefault("tokenizer_3", None)
        pipe = StableDiffusion3Pipeline(**parts)
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe([SOURCE, TARGET], negative_prompt=["blurry"] * 2, latents=latent.clone(), **common).images
    else:
        pipe = FluxPipeline(**parts)
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe([SOURCE, TARGET], latents=pack(latent.clone()), max_sequence_length=model.family.t5_length(model),
                      **common).images
    assert torch.allclose(ours.images, theirs, atol=1e-4, rtol=0)
    assert (ours.images[0] - ours.images[1]).abs().max() > 1e-3  # the prompts matter: the check can fail


def test_flux_dev_guidance_is_an_input_and_schnell_has_none(tiny_flux_model):
    """FLUX.1-dev's distilled guidance changes the picture without an unconditional batch; schnell ignores it."""
    a = run_edit(tiny_flux_model, recipe(guidance=1.5)).latents
    b = run_edit(tiny_flux_model, recipe(guidance=4.0)).latents
    assert not torch.allclose(a, b, atol=1e-5)
    schnell = from_components(tiny_flux_components(guidance=False))
    assert torch.equal(run_edit(schnell, recipe(guidance=1.5)).latents, run_edit(schnell, recipe(guidance=4.0)).latents)


def test_sd3_plan_maps_words_on_both_tokenizers(tiny_sd3_model):
    """SD3's text sequence is CLIP's 77 positions then T5's 256: each part's mapper is its own tokenizer's."""
    parts = text_tokenizers(tiny_sd3_model)
    clip, t5 = parts
    assert (clip.model_max_length, t5.model_max_length) == (77, 256)
    source, target = "a photo of a zebra at sunset", "a photo of a lemon at sunset"  # "zebra": T5 pieces
    plan = compile_plan(recipe(source=source, edits=[{"target": target}]), parts)
    assert plan.mapper.shape == (1, 333, 333)
    assert torch.equal(plan.mapper[0, :77, :77], replace_map(clip, source, target).mapper)
    assert torch.equal(plan.mapper[0, 77:, 77:], replace_map(t5, source, target).mapper)
    assert plan.mapper[0, :77, 77:].abs().sum() == 0 and plan.mapper[0, 77:, :77].abs().sum() == 0
    # the word's T5 positions differ from its CLIP positions: T5 has no start token and splits "zebra"
    assert find_tokens(clip, source, "zebra") == [5]
    z = find_tokens(t5, source, "zebra")
    assert len(z) > 1 and z[0] == 4
    r = recipe(source=source, edits=[{"target": source, "reweight": {"zebra": 3.0}}])
    eq = compile_plan(r, parts).equalizer[0]
    assert eq[5] == 3.0 and all(eq[77 + p] == 3.0 for p in z) and eq.sum() == 333 + 2 * (1 + len(z))


def test_sd3_without_t5_plans_the_zero_part_as_padding():
    model = from_components(tiny_sd3_components(t5=False))
    parts = text_tokenizers(model)
    assert parts[1] == 256
    plan = compile_plan(recipe(), parts)
    assert torch.equal(plan.mapper[0, 77:, 77:], torch.eye(256))


def test_flux_plans_the_t5_sequence(tiny_flux_model):
    (t5,) = [text_tokenizers(tiny_flux_model)]
    assert t5.model_max_length == 512
    plan = compile_plan(recipe(), t5)
    red, blue = find_tokens(t5, SOURCE, "red"), find_tokens(t5, TARGET, "blue")
    assert red == blue == [2]
    assert plan.mapper[0, 2, 2] == 1


@pytest.mark.parametrize("edit, problem", [
    ({"target": TARGET, "reweight": {"zebra": 2}}, 'edits[0].reweight.zebra: "zebra" is not in the prompt'),
    ({"target": "a big blue circle on the left " + "and a dog " * 200}, "edits[0].target: the prompt has"),
])
def test_word_and_length_problems_name_the_field(joint_model, edit, problem):
    with pytest.raises(RecipeError) as err:
        resolve_recipe(joint_model, recipe(edits=[edit]))
    assert any(line.startswith(problem) for line in err.value.problems), err.value.problems


@pytest.mark.parametrize("top, problem", [
    ({"self_replace_max_res": 8}, "self_replace_max_res: "),
    ({"blend_res": 16}, "blend_res: "),
    ({"self_blocks": [0, 9]}, "self_blocks: this model has blocks 0 to"),
    ({"blend_blocks": [7]}, "blend_blocks: this model has blocks 0 to"),
])
def test_unet_keys_and_missing_blocks_are_refused(joint_model, top, problem):
    with pytest.raises(RecipeError) as err:
        resolve_recipe(joint_model, recipe(**top))
    assert any(line.startswith(problem) for line in err.value.problems), err.value.problems


def test_block_keys_are_refused_by_unet_models(tiny_model):
    with pytest.raises(RecipeError) as err:
        resolve_recipe(tiny_model, parse_recipe({"source": SOURCE, "steps": 2, "self_blocks": [0], "text_mass": "target",
                                           "edits": [{"target": TARGET}]}))
    assert any(line.startswith("self_blocks: ") for line in err.value.problems)
    assert any(line.startswith("text_mass: only the flow-matching transformers") for line in err.value.problems)


def test_self_blocks_choose_where_the_source_image_attention_is_taken(tiny_sd3_model):
    """Injecting in no block is the same as a closed self window; in some blocks it changes the edit. (The text
    share is held at the source's: by default the window also decides it.)"""
    none = run_edit(tiny_sd3_model, recipe(self_blocks=[], self_replace=1.0, text_mass="source")).latents
    closed = run_edit(tiny_sd3_model, recipe(self_replace=0.0, text_mass="source")).latents
    first = run_edit(tiny_sd3_model, recipe(self_blocks=[0], self_replace=1.0, text_mass="source")).latents
    assert torch.allclose(none, closed, atol=1e-6)
    assert not torch.allclose(first[1], closed[1], atol=1e-6)


# --- the joint rule, on random probabilities -----------------------------------------------------------

def _joint_control(n_text: int, inject: bool, equalizer=None, text_mass: str = "source") -> Control:
    L, n = n_text, 1
    mapper = torch.eye(L)[None].clone()
    mapper[0, 1, 1], mapper[0, 1, 2], mapper[0, 2, 2] = 0.0, 1.0, 0.0  # target token 2 takes source token 1
    eq = torch.ones(n, L) if equalizer is None else equalizer
    return Control(n_prompts=2, n_targets=n, guided=False, latent_hw=(4, 4), mapper=mapper,
                   aligned=torch.ones(n, L), equalizer=eq, alpha=torch.ones(1, n, L),
                   self_gate=torch.ones(1, n) if inject else torch.zeros(1, n), self_max_res=0,
                   explicit=True, joint=True, self_blocks=frozenset({0}), text_mass=text_mass)


def _probs(n_text: int, n_image: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.softmax(torch.randn(2, 2, n_image, n_text + n_image) * 2, dim=-1)  # (rows, heads, N, S)


@pytest.mark.parametrize("inject", [False, True])
def test_edited_joint_rows_are_distributions(inject):
    """Inside the windows (no reweight) the edited row sums to 1: the image block takes the mass the edited text
    block leaves. Putting the source's text block beside the target's own image block, unscaled, does not."""
    ctl = _joint_control(5, inject)
    joint = JointControl(0, "transformer_blocks.0.attn", ctl)
    probs = _probs(5, 16)
    step = ctl.step_inputs()[0]
    text, image = slice(16, None), slice(0, 16)
    used = joint._used(probs.clone(), step, text, image, inject)
    assert torch.allclose(used[1].sum(-1), torch.ones(2, 16), atol=1e-6)
    src, tgt = probs[0], probs[1]
    mapped = src[..., text] @ ctl.mapper[0]
    assert torch.allclose(used[1][..., text], mapped, atol=1e-6)  # the text block: the source's, mapped
    naive = mapped.sum(-1) + (src if inject else tgt)[..., image].sum(-1)
    if not inject:
        assert (naive - 1).abs().max() > 1e-2
    own_image = (src if inject else tgt)[..., image]
    scaled = own_image * (1 - mapped.sum(-1, keepdim=True)) / own_image.sum(-1, keepdim=True)
    assert torch.allclose(used[1][..., image], scaled, atol=1e-6)


@pytest.mark.parametrize("inject", [False, True])
def test_the_target_text_share_moves_only_the_distribution_over_words(inject):
    """text_mass "target": the edited text block is the source's distribution over words (mapped) at the target's
    own text share, the image block the rest; the row still sums to 1. "self-window" is "source" while the self
    window is open and "target" after it."""
    probs = _probs(5, 16)
    text, image = slice(16, None), slice(0, 16)
    src, tgt = probs[0], probs[1]

    def used(mode):
        ctl = _joint_control(5, inject, text_mass=mode)
        return JointControl(0, "b", ctl)._used(probs.clone(), ctl.step_inputs()[0], text, image, inject)[1]

    mapped = src[..., text] @ _joint_control(5, inject).mapper[0]
    own = tgt[..., text].sum(-1, keepdim=True)
    target = used("target")
    assert torch.allclose(target.sum(-1), torch.ones(2, 16), atol=1e-6)
    assert torch.allclose(target[..., text].sum(-1, keepdim=True), own, atol=1e-6)  # the target's own share
    assert torch.allclose(target[..., text], mapped / mapped.sum(-1, keepdim=True) * own, atol=1e-6)
    assert not torch.allclose(target, used("source"), atol=1e-3)  # the shares differ on random probabilities
    assert torch.equal(used("self-window"), used("source" if inject else "target"))


def test_the_text_share_rule_is_fused_as_explicit_and_kept_in_blend_maps():
    torch.manual_seed(3)
    q, k, v = torch.randn(3, 2, 2, 21, 8).unbind(0)
    text, image = slice(16, None), slice(0, 16)
    eq = torch.tensor([[1.0, 2.0, 0.5, 1.0, 1.0]])
    for inject in (False, True):
        explicit, fused = (_joint_control(5, inject, eq, "target") for _ in range(2))
        fused.explicit = False
        a = JointControl(0, "b", explicit).attend(q, k, v, text, image, explicit.step_inputs()[0])
        b = JointControl(0, "b", fused).attend(q, k, v, text, image, fused.step_inputs()[0])
        assert torch.allclose(a, b, atol=1e-5)
    joint = JointControl(0, "b", explicit)
    full = torch.softmax(q[:, :, image] @ k.transpose(-1, -2) * 8 ** -0.5, dim=-1)
    alone = joint._text_probs(q[:, :, image], k, text, 8 ** -0.5)
    step = explicit.step_inputs()[0]
    assert torch.allclose(joint._used_text(alone, step), joint._used(full.clone(), step, text, image, False)[..., text],
                          atol=1e-6)


def test_text_mass_changes_the_edit_only_after_the_self_window(tiny_sd3_model):
    """self-window equals source when the self window spans the run and target when it is closed; the modes
    differ in between (an identity edit and closed windows are checked for every mode by the engine tests)."""
    def latents(mode, self_replace):
        return run_edit(tiny_sd3_model, recipe(text_mass=mode, self_replace=self_replace)).latents[1]

    assert torch.equal(latents("self-window", 1.0), latents("source", 1.0))
    assert torch.equal(latents("self-window", 0.0), latents("target", 0.0))
    assert not torch.allclose(latents("source", 0.0), latents("target", 0.0), atol=1e-5)


def test_reweight_scales_words_on_top_of_the_rescaled_image_block():
    eq = torch.ones(1, 5)
    eq[0, 2] = 3.0
    ctl = _joint_control(5, False, eq)
    plain = JointControl(0, "b", _joint_control(5, False))._used(_probs(5, 16), _joint_control(5, False).step_inputs()[0],
                                                               slice(16, None), slice(0, 16), False)
    used = JointControl(0, "b", ctl)._used(_probs(5, 16), ctl.step_inputs()[0], slice(16, None), slice(0, 16), False)
    assert torch.allclose(used[1][..., 16 + 2], 3 * plain[1][..., 16 + 2], atol=1e-6)
    assert torch.allclose(used[1][..., :16], plain[1][..., :16], atol=1e-6)  # the image block is unchanged


def test_fused_joint_attention_equals_explicit_on_random_inputs():
    """The two-call fused form against the explicit probabilities times V, for one layer."""
    for inject in (False, True):
        explicit = _joint_control(5, inject, torch.tensor([[1.0, 2.0, 0.5, 1.0, 1.0]]))
        fused = _joint_control(5, inject, torch.tensor([[1.0, 2.0, 0.5, 1.0, 1.0]]))
        fused.explicit = False
        torch.manual_seed(1)
        q, k, v = torch.randn(3, 2, 2, 21, 8).unbind(0)
        text, image = slice(16, None), slice(0, 16)
        a = JointControl(0, "b", explicit).attend(q, k, v, text, image, explicit.step_inputs()[0])
        b = JointControl(0, "b", fused).attend(q, k, v, text, image, fused.step_inputs()[0])
        assert torch.allclose(a, b, atol=1e-5)
        assert not torch.allclose(a[1], torch.nn.functional.scaled_dot_product_attention(q, k, v)[1], atol=1e-3)


def test_text_maps_without_the_image_block_equal_the_full_softmax():
    """Local blend's maps come from the text block alone (no image x image map): the same as slicing the full
    joint softmax, and the same edit."""
    ctl = _joint_control(5, False, torch.tensor([[1.0, 2.0, 0.5, 1.0, 1.0]]))
    joint = JointControl(0, "b", ctl)
    torch.manual_seed(2)
    q, k = torch.randn(2, 2, 2, 21, 8).unbind(0)
    text, image = slice(16, None), slice(0, 16)
    full = torch.softmax(q[:, :, image] @ k.transpose(-1, -2) * 8 ** -0.5, dim=-1)
    alone = joint._text_probs(q[:, :, image], k, text, 8 ** -0.5)
    assert torch.allclose(alone, full[..., text], atol=1e-6)
    step = ctl.step_inputs()[0]
    assert torch.allclose(joint._used_text(alone, step), joint._used(full.clone(), step, text, image, False)[..., text],
                          atol=1e-6)


@pytest.mark.parametrize("size", [128, 512])  # 64 image tokens (< 512 text: whole softmax), 1024 (text block alone)
def test_blend_maps_on_the_fused_path_equal_the_explicit_ones(tiny_flux_model, size):
    r = recipe(size=size, steps=2,
               edits=[{"target": TARGET, "local_blend": {"words": ["red", "blue"], "threshold": 0.5}}])
    fused, explicit = run_edit(tiny_flux_model, r), run_edit(tiny_flux_model, r, attention="explicit")
    assert torch.equal(fused.masks[1], explicit.masks[1])
    assert torch.allclose(fused.latents, explicit.latents, atol=2e-4)


def test_the_recipe_shift_sets_the_flow_schedule(joint_model):
    """shift: sigma -> shift s / (1 + (shift - 1) s) over the family's base sigmas, the resolution-dependent shift
    off; the picture changes with it; UNet models refuse the key."""
    from p2p_cli.engine.pipeline import schedule_for

    five = schedule_for(joint_model, 4, (16, 16), shift=5.0).sigmas
    if joint_model.family.name in ("flux", "chroma"):  # FluxPipeline's (and ChromaPipeline's) sigmas, shifted
        base = torch.linspace(1.0, 1 / 4, 4)
        assert torch.allclose(five[:-1], 5 * base / (1 + 4 * base), atol=1e-6) and five[-1] == 0
    elif joint_model.family.name in ("qwen-image", "flux2-klein", "flux2-dev"):  # their pipelines' sigmas, the scheduler at shift 5
        import numpy as np
        from diffusers import FlowMatchEulerDiscreteScheduler

        config = {**joint_model.scheduler.config, "shift": 5.0, "use_dynamic_shifting": False}
        theirs = FlowMatchEulerDiscreteScheduler.from_config(config)
        theirs.set_timesteps(sigmas=np.linspace(1.0, 1 / 4, 4))
        assert torch.allclose(five, theirs.sigmas, atol=1e-6)
    else:  # what diffusers' scheduler configured with shift 5 gives (as SD3's is with 3)
        from diffusers import FlowMatchEulerDiscreteScheduler

        theirs = FlowMatchEulerDiscreteScheduler(shift=5.0)
        theirs.set_timesteps(4)
        assert torch.allclose(five, theirs.sigmas, atol=1e-6)
    assert not torch.allclose(five, schedule_for(joint_model, 4, (16, 16)).sigmas, atol=1e-3)
    a = run_edit(joint_model, recipe(shift=1.5)).latents
    b = run_edit(joint_model, recipe(shift=6.0)).latents
    assert not torch.allclose(a, b, atol=1e-4)


def test_unet_models_refuse_shift(tiny_model):
    with pytest.raises(RecipeError) as err:
        resolve_recipe(tiny_model, parse_recipe({"source": SOURCE, "steps": 2, "shift": 3.0, "edits": [{"target": TARGET}]}))
    assert any(line.startswith("shift: ") for line in err.value.problems)


def test_sd35_blocks_edit_fused_as_explicit():
    """SD3.5's layout (QK RMS norm, an image-only attn2 left uncontrolled): fused = explicit, control acts."""
    model = from_components(tiny_sd3_components(sd35=True))
    r = recipe(edits=[{"target": TARGET, "local_blend": {"words": ["red", "blue"], "threshold": 0.5}},
                      {"target": SOURCE + " at night"}])
    fused, explicit = run_edit(model, r, baseline=True), run_edit(model, r, attention="explicit", baseline=True)
    assert torch.allclose(fused.latents, explicit.latents, atol=2e-4)
    assert not torch.allclose(fused.latents[1], fused.latents[3], atol=1e-5)  # the edit is not its baseline


def test_the_flow_families_default_self_window_is_0_2_and_a_recipe_or_edit_window_wins(joint_model, tiny_model):
    from p2p_cli.family_defaults import FAMILY_DEFAULTS

    family = joint_model.family
    assert FAMILY_DEFAULTS[family.name].self_replace == family.default_self_replace == 0.2  # validate reads the same
    assert FAMILY_DEFAULTS[family.name].guidance == family.default_guidance
    plain = resolve_recipe(joint_model, recipe())
    assert plain.self_for(plain.edits[0]) == (0.0, 0.2)
    assert resolve_recipe(joint_model, recipe(self_replace=0.4)).self_replace == (0.0, 0.4)
    own = resolve_recipe(joint_model, recipe(edits=[{"target": TARGET, "self_replace": 0.6}]))
    assert own.self_for(own.edits[0]) == (0.0, 0.6)
    unet = resolve_recipe(tiny_model, recipe())
    assert unet.self_for(unet.edits[0]) == (0.0, 0.4)  # the paper's setting stays the UNet families' default
