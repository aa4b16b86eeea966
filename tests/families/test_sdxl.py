"""SDXL against diffusers' own StableDiffusionXLPipeline, and what the SDXL family adds (two tokenizers,
pooled embedding, size/crop ids, fp16 VAE upcast, family defaults). Tiny random components; nothing downloaded."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from lab.arch import tiny_components, tiny_xl_components
from p2p_cli.families import SD, SDXL, detect
from p2p_cli.engine.inversion import invert, reconstruct_latent
from p2p_cli.models import from_components, load_model
from p2p_cli.engine.pipeline import encode_negative, encode_prompts, geometry, initial_latent, run_edit
from p2p_cli.api import resolve_recipe
from p2p_cli.recipe import RecipeError, parse_recipe

SOURCE = "a painting of a squirrel eating a burger"
TARGET = "a painting of a lion eating a burger"
STEPS = 4


def recipe(**top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 3, "edits": [{"target": TARGET}]}
    return parse_recipe({**data, **top})


def close(a, b, atol=1e-4):
    return torch.allclose(a, b, atol=atol, rtol=0)


def pipeline(model) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline(
        vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet, scheduler=model.scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("guidance", [5.0, 1.0])
@pytest.mark.parametrize("negative", ["", "blurry"])
def test_uncontrolled_rows_equal_diffusers_sdxl_pipeline(tiny_xl_model, guidance, negative):
    """Source and baseline rows are exactly what StableDiffusionXLPipeline (DDIM) makes from the same latent:
    both encoders, pooled embedding, size ids, zeros for an empty negative prompt, guidance."""
    r = recipe(guidance=guidance, negative_prompt=negative)
    ours = run_edit(tiny_xl_model, r, baseline=True)
    latent = initial_latent(r.seed, 4, (16, 16)).expand(2, -1, -1, -1)
    theirs = pipeline(tiny_xl_model)(
        [SOURCE, TARGET], negative_prompt=[negative] * 2 if negative else None, latents=latent.clone(),
        num_inference_steps=STEPS, guidance_scale=guidance, height=128, width=128, output_type="pt",
    ).images
    assert ours.roles == ["source", "edit-1", "baseline-1"]
    assert close(ours.images[0], theirs[0])
    assert close(ours.images[2], theirs[1])
    assert not close(ours.images[1], theirs[1])  # the controlled edit is not the uncontrolled target


def test_size_and_crop_ids_condition_like_diffusers(tiny_xl_model):
    r = recipe(guidance=5.0, original_size=[512, 256], crops_coords_top_left=[16, 32], target_size=[128, 128])
    ours = run_edit(tiny_xl_model, r)
    latent = initial_latent(r.seed, 4, (16, 16))
    theirs = pipeline(tiny_xl_model)(
        SOURCE, latents=latent.clone(), num_inference_steps=STEPS, guidance_scale=5.0, height=128, width=128,
        original_size=(512, 256), crops_coords_top_left=(16, 32), target_size=(128, 128), output_type="pt",
    ).images
    assert close(ours.images[0], theirs[0])
    assert not close(ours.images[0], run_edit(tiny_xl_model, recipe(guidance=5.0)).images[0])


def test_family_is_detected_from_the_components_not_the_name(tmp_path, save_tiny_model):
    assert detect(tiny_xl_components()) is SDXL
    assert detect(tiny_components()) is SD
    folder = save_tiny_model(tmp_path / "stable-diffusion-v1-5", family="sdxl")  # a misleading name
    model = load_model(str(folder), device="cpu", dtype="fp32")
    assert model.family is SDXL and model.options["force_zeros_for_empty_prompt"] is True
    assert model.text_encoder_2 is not None and model.tokenizer_2.pad_token == "!"


def test_a_folder_with_text_encoder_2_but_no_tokenizer_2_is_refused(tmp_path, save_tiny_model):
    import shutil

    from p2p_cli.models import ModelLoadError

    folder = save_tiny_model(tmp_path / "xl", family="sdxl")
    shutil.rmtree(folder / "tokenizer_2")
    with pytest.raises(ModelLoadError, match="tokenizer_2"):
        load_model(str(folder), device="cpu", dtype="fp32")


def test_both_tokenizers_put_every_word_at_the_same_position(tiny_xl_model):
    """One plan serves both encoders: the ids agree up to the end token; only the padding differs."""
    for prompt in (SOURCE, "a cat, sitting; on a mat!", "photo of a gigantic octopus"):
        a = tiny_xl_model.tokenizer(prompt, padding="max_length", max_length=77).input_ids
        b = tiny_xl_model.tokenizer_2(prompt, padding="max_length", max_length=77).input_ids
        n = len(tiny_xl_model.tokenizer(prompt).input_ids)
        assert a[:n] == b[:n]
        assert a[n:] != b[n:] and set(b[n:]) == {0}  # "!" pads the second


def test_conditioning_shapes(tiny_xl_model):
    cond = encode_prompts(tiny_xl_model, [SOURCE, TARGET], geometry(tiny_xl_model))
    assert cond.hidden.shape == (2, 77, 16 + 32)  # both encoders' penultimate states joined
    assert cond.added["text_embeds"].shape == (2, 32)
    assert cond.added["time_ids"].tolist() == [[128, 128, 0, 0, 128, 128]] * 2
    neg = encode_negative(tiny_xl_model, "", 3, geometry(tiny_xl_model))
    assert len(neg) == 3 and not neg.hidden.any() and not neg.added["text_embeds"].any()


def test_guidance_defaults_to_the_familys_and_the_recipe_wins(tiny_xl_model, tiny_model):

    assert resolve_recipe(tiny_xl_model, recipe()).guidance == 5.0
    assert resolve_recipe(tiny_model, recipe()).guidance == 7.5
    assert resolve_recipe(tiny_xl_model, recipe(guidance=7.5)).guidance == 7.5


def test_sdxl_keys_on_an_sd_model_are_a_recipe_error(tiny_model):
    with pytest.raises(RecipeError, match="original_size: only SDXL models take size and crop ids"):
        resolve_recipe(tiny_model, recipe(original_size=[256, 256]))


def test_fp16_keeps_the_sdxl_vae_in_float32_as_diffusers_upcasts_it():
    xl = from_components(tiny_xl_components(), dtype=torch.float16)
    sd = from_components(tiny_components(), dtype=torch.float16)
    assert xl.unet.dtype == torch.float16 and xl.vae.dtype == torch.float32
    assert sd.vae.dtype == torch.float16
    r = recipe(steps=2)
    half, full = run_edit(xl, r).images, run_edit(from_components(tiny_xl_components()), r).images
    assert torch.isfinite(half).all() and half.std() > 0.01  # no NaN or flat picture
    assert (half - full).abs().mean() < 0.02  # the same picture up to fp16 rounding


def test_null_text_inversion_reconstructs_an_sdxl_picture(tiny_xl_model):
    torch.manual_seed(0)
    picture = torch.rand(3, 128, 128)
    inv = {m: invert(tiny_xl_model, picture, SOURCE, method=m, steps=STEPS, guidance=5.0)
           for m in ("ddim", "null-text", "negative-prompt")}
    target = torch.cat([inv["ddim"].latent])  # every method shares the DDIM trajectory's start
    for m in inv:
        assert torch.equal(inv[m].latent, target)
        assert set(inv[m].uncond_added) == {"text_embeds", "time_ids"}
    from p2p_cli.engine.inversion import encode_image

    z0 = encode_image(tiny_xl_model, picture[None])
    err = {m: (reconstruct_latent(tiny_xl_model, inv[m], SOURCE, 5.0) - z0).abs().mean().item() for m in inv}
    assert err["null-text"] < err["ddim"]
    assert err["negative-prompt"] < err["ddim"]
    # the edit from the inversion: its source row is the reconstruction
    r = recipe(guidance=5.0)
    out = run_edit(tiny_xl_model, r, latent=inv["null-text"].latent, uncond_per_step=inv["null-text"].uncond,
                   uncond_added=inv["null-text"].uncond_added)
    assert close(out.latents[0], reconstruct_latent(tiny_xl_model, inv["null-text"], SOURCE, 5.0), atol=1e-4)
