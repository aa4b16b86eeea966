"""The bundled transformer shapes model (`model: shapes-mmdit`): it ships only its own parts, loads through
StableDiffusion3Pipeline.from_pretrained as a hub SD3 folder does, and samples what diffusers' pipeline samples."""

from __future__ import annotations

import shutil

import pytest
import torch

from p2p_cli.engine.pipeline import initial_latent, run_edit
from p2p_cli.family_defaults import DEFAULTS_FILE
from p2p_cli.models import bundle_mmdit_weights, bundled_weights, load_model, shapes_mmdit_parts
from p2p_cli.recipe import parse_recipe

from lab.shapes.mmdit_bundle import SHIPPED, export
from lab.shapes.train_mmdit import Config, build_transformer, save

needs_bundles = pytest.mark.skipif(not (bundle_mmdit_weights() / "transformer").is_dir()
                                   or not (bundled_weights() / "vae").is_dir(), reason="bundled models absent")
SOURCE, TARGET = "a big red circle and a small blue square on a white background", \
    "a big green circle and a small blue square on a white background"


@needs_bundles
def test_the_bundle_samples_what_diffusers_pipeline_samples():
    """The engine's uncontrolled rows (windows of 0) against StableDiffusion3Pipeline built from the same parts,
    from the same initial noise: the bundle is an SD3 model like any other."""
    from diffusers import StableDiffusion3Pipeline

    model = load_model("shapes-mmdit", device="cpu", dtype="fp32")
    assert model.family.name == "sd3" and model.id == "bundled:shapes-mmdit" and model.text_encoder_3 is None
    assert model.vae.config.shift_factor == 0.0
    r = parse_recipe({"source": SOURCE, "seed": 2, "steps": 4, "cross_replace": 0.0, "self_replace": 0.0,
                      "edits": [{"target": TARGET}]})
    ours = run_edit(model, r)
    parts = {k: getattr(model, k) for k in ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2",
                                            "tokenizer_2", "scheduler")}
    pipe = StableDiffusion3Pipeline(**parts, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    latent = initial_latent(2, 4, (16, 16)).expand(2, -1, -1, -1)
    theirs = pipe([SOURCE, TARGET], latents=latent.clone(), num_inference_steps=4, height=64, width=64,
                  guidance_scale=model.family.default_guidance, output_type="pt").images
    assert torch.allclose(ours.images, theirs, atol=1e-4, rtol=0)
    assert (ours.images[0] - ours.images[1]).abs().max() > 1e-2  # the colour word matters


@needs_bundles
def test_the_bundle_ships_the_transformer_and_shares_the_rest():
    shipped = {p.name for p in bundle_mmdit_weights().iterdir()}
    assert shipped == set(SHIPPED) | {DEFAULTS_FILE}  # its parts, and its measured real-picture windows
    size = sum(p.stat().st_size for p in bundle_mmdit_weights().rglob("*") if p.is_file())
    assert size <= 40_000_000  # the limit; the shared parts live in the UNet model's folder
    parts = shapes_mmdit_parts(bundled_weights())
    assert parts["text_encoder"] is parts["text_encoder_2"]
    ids = parts["tokenizer"]("a big red circle", return_tensors="pt").input_ids
    out = parts["text_encoder"](ids)
    assert torch.allclose(out.text_embeds, out.last_hidden_state[0, ids[0].argmax()][None], atol=1e-6)  # identity


@pytest.mark.slow  # long (a subprocess or more); `make test-slow` runs it
@needs_bundles
def test_export_takes_a_trained_folder_and_refuses_one_with_other_parts(tmp_path):
    parts = shapes_mmdit_parts(bundled_weights())
    text = parts["text_encoder"]
    transformer = build_transformer(Config(layers=2), 0, 2 * text.config.hidden_size, 2 * text.config.projection_dim)
    save(tmp_path / "ckpt", transformer, parts["vae"], text, parts["tokenizer"], 1.0)
    out = export(tmp_path / "ckpt", tmp_path / "bundle")
    assert {p.name for p in out.iterdir()} == set(SHIPPED)
    whole = load_model(str(tmp_path / "ckpt"), device="cpu", dtype="fp32")
    from p2p_cli.models import load_transformer_folder

    bundled = load_transformer_folder(out, parts=shapes_mmdit_parts(bundled_weights()))
    r = parse_recipe({"source": SOURCE, "seed": 0, "steps": 2, "edits": [{"target": TARGET}]})
    assert torch.equal(run_edit(whole, r).images, run_edit(bundled, r).images)
    (out / DEFAULTS_FILE).write_text('{"image": {"self_replace": 0.3}}')  # a bundle's measured windows
    assert (export(tmp_path / "ckpt", out) / DEFAULTS_FILE).read_text() == '{"image": {"self_replace": 0.3}}'

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "ckpt", other)
    from safetensors.torch import load_file, save_file

    weights = next((other / "vae").glob("*.safetensors"))
    state = load_file(weights)
    key = next(iter(state))
    state[key] = state[key] + 1
    save_file(state, weights)
    with pytest.raises(SystemExit, match="not the bundled UNet model's part"):
        export(other, tmp_path / "bundle2")
    assert not (tmp_path / "bundle2").exists()


@needs_bundles
def test_unpack_gives_train_mmdit_resume_the_shipped_weights(tmp_path):
    """`mmdit_bundle --unpack DIR` then `train_mmdit --resume DIR` continues from exactly the shipped model."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from safetensors.torch import load_file

    from lab.shapes.mmdit_bundle import main, unpack

    folder = unpack(tmp_path / "whole")
    shipped = {k: v for f in (bundle_mmdit_weights() / "transformer").glob("*.safetensors")
               for k, v in load_file(f).items()}
    resumed = SD3Transformer2DModel.from_pretrained(folder / "transformer").state_dict()  # as --resume reads it
    assert resumed.keys() == shipped.keys() and all(torch.equal(resumed[k], v) for k, v in shipped.items())
    assert FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler").config.shift == 1.0
    out = export(folder, tmp_path / "bundle")  # refuses VAE or text encoders other than the rebuilt ones
    assert load_file(next((out / "transformer").glob("*.safetensors"))).keys() == shipped.keys()
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
