"""The recipe key `vae:` (auto | tiled | full): diffusers' tiled and sliced VAE where the picture is larger than
the VAE's tile, checked against diffusers' own enable_tiling() decode and encode (an independent path), the rule
that turns it on, the VAE's settings put back (a user's pipeline's too), the memory it saves in the estimate and
the plan, and how far a tiled picture is from a whole one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

import p2p_cli as p2p
from lab.arch import tiny_components
from p2p_cli.engine.inversion import encode_image, psnr
from p2p_cli.engine.pipeline import decode_latents, initial_latent, run_bytes, run_edit
from p2p_cli.files.inversion_cache import inversion_key
from p2p_cli.files.outputs import resolved_recipe
from p2p_cli.loading import tile_side
from p2p_cli.memory_plan import plan_for
from p2p_cli.models import from_components
from p2p_cli.placement import VAE_STATE
from p2p_cli.recipe import RecipeError, parse_recipe

SOURCE = "a painting of a squirrel eating a burger"


def latents(rows: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(rows, 4, h, w, generator=torch.Generator().manual_seed(0))


def diffusers_decode(vae, z: torch.Tensor, *, tile: int | None) -> torch.Tensor:
    """The picture diffusers' AutoencoderKL decodes from our latents: whole, or with enable_tiling() and a tile of
    `tile` pixels (its attributes set by hand, as its users do, and put back)."""
    saved = {name: getattr(vae, name) for name in VAE_STATE if hasattr(vae, name)}
    try:
        if tile is not None:
            vae.enable_tiling()
            vae.tile_sample_min_size, vae.tile_latent_min_size = tile, tile // 8
        with torch.no_grad():
            return (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)


def state(vae) -> dict:
    return {name: getattr(vae, name) for name in VAE_STATE if hasattr(vae, name)}


def test_the_rule_tiles_exactly_above_the_tile():
    assert tile_side(None, (128, 128), 128, 8) is None and tile_side("auto", (128, 128), 128, 8) is None
    assert tile_side("auto", (128, 136), 128, 8) == 128 and tile_side("auto", (256, 64), 128, 8) == 128
    assert tile_side("tiled", (256, 256), 128, 8) == 128  # the VAE's own tile where the picture is larger
    assert tile_side("tiled", (128, 128), 128, 8) == 64  # within one tile: half the picture's side
    assert tile_side("tiled", (48, 72), 128, 8) == 32  # a multiple of the VAE's pixels per latent cell
    assert tile_side("full", (1024, 1024), 128, 8) is None
    with pytest.raises(ValueError, match="vae: 'tiles' is not one of auto, tiled, full"):
        tile_side("tiles", (128, 128), 128, 8)


def test_tiled_decode_equals_diffusers_enable_tiling(tiny_model):
    """256 px on the tiny model (its VAE's tile: 128): auto and tiled decode as diffusers' enable_tiling() does;
    ours is sliced (one row at a time) and theirs is not, which changes nothing but rounding."""
    vae, z = tiny_model.vae, latents(2, 32, 32)
    before = state(vae)
    theirs = diffusers_decode(vae, z, tile=128)
    with torch.no_grad():
        tiled, auto = decode_latents(tiny_model, z, vae="tiled"), decode_latents(tiny_model, z)
    assert (tiled - theirs).abs().max() <= 2e-5  # measured 6.1e-6
    assert torch.equal(auto, tiled)
    assert state(vae) == before and vae.use_tiling is False


def test_auto_turns_tiling_and_slicing_on_exactly_above_the_tile(tiny_model, monkeypatch):
    vae = tiny_model.vae
    calls = []
    tiled_decode = vae.tiled_decode

    def spy(z, *args, **kwargs):
        calls.append((z.shape[0], vae.use_slicing))
        return tiled_decode(z, *args, **kwargs)

    monkeypatch.setattr(vae, "tiled_decode", spy)
    with torch.no_grad():
        decode_latents(tiny_model, latents(2, 16, 16))  # 128 px: the tile itself
        assert calls == []
        decode_latents(tiny_model, latents(1, 16, 17))  # 136 px wide: one picture, tiled
        assert calls == [(1, False)]
        calls.clear()
        decode_latents(tiny_model, latents(3, 32, 32))  # three pictures: tiled and sliced, one at a time
        assert calls == [(1, True)] * 3
        calls.clear()
        decode_latents(tiny_model, latents(2, 32, 32), vae="full")
        assert calls == []


def test_full_equals_the_whole_decode_and_tiles_differ_from_it(tiny_model):
    """full decodes as diffusers' pipelines do by default; a tiled picture differs from the whole one (each tile
    is decoded alone, with its own normalisation statistics, and blended over a quarter of its side): far from
    slightly on the tiny random VAE."""
    z = latents(2, 32, 32)
    with torch.no_grad():
        full = decode_latents(tiny_model, z, vae="full")
        tiled = decode_latents(tiny_model, z, vae="tiled")
    assert torch.equal(full, diffusers_decode(tiny_model.vae, z, tile=None))
    assert (tiled - full).abs().max() > 0.1  # measured 0.45 (mean 0.027)


def test_tiled_within_one_tile_uses_half_tiles(tiny_model):
    """vae: tiled on a picture no larger than the VAE's tile (128 px here): diffusers' tiled decode with a 64 px
    tile, and the VAE's own tile back afterwards."""
    vae, z = tiny_model.vae, latents(1, 16, 16)
    before = state(vae)
    with torch.no_grad():
        ours = decode_latents(tiny_model, z, vae="tiled")
    assert (ours - diffusers_decode(vae, z, tile=64)).abs().max() <= 2e-5  # measured 2.7e-6
    assert not torch.equal(ours, diffusers_decode(vae, z, tile=None))
    assert state(vae) == before


def test_tiled_encoding_equals_diffusers_and_keys_the_cache(tiny_model):
    """A real picture larger than the tile is encoded with diffusers' tiled encoder; the inversion cache's key
    holds the tile (a tiled latent is another latent), and an untiled picture keeps the key it had."""
    gen = torch.Generator().manual_seed(2)
    picture = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=gen), size=(256, 256))
    vae = tiny_model.vae
    ours = encode_image(tiny_model, picture)
    vae.enable_tiling()
    try:
        with torch.no_grad():
            theirs = vae.encode(picture * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    finally:
        vae.disable_tiling()
    assert (ours - theirs).abs().max() <= 1e-5
    assert not torch.allclose(ours, encode_image(tiny_model, picture, "full"), atol=1e-3)

    def key(image, vae):
        return inversion_key(image, tiny_model, prompt=SOURCE, method="ddim", steps=2, guidance=7.5, vae=vae)

    assert key(picture[0], None)["vae_tile"] == 128 and "vae_tile" not in key(picture[0], "full")
    assert key(picture[0], None)["key"] != key(picture[0], "full")["key"]
    small = picture[0, :, :128, :128]
    assert key(small, None)["key"] == key(small, "full")["key"] == key(small, "auto")["key"]
    assert "vae_tile" not in key(small, None)


def test_a_tiled_run_equals_diffusers_pipeline_with_vae_tiling(tiny_model):
    """The source row of a run at 256 px (auto: tiled) is the picture diffusers' StableDiffusionPipeline makes
    with its VAE tiled (enable_tiling) from the same latent; with vae: full, the one it makes by default."""
    r = parse_recipe({"source": SOURCE, "steps": 2, "seed": 3, "size": 256, "guidance": 6.0,
                      "edits": [{"target": "a painting of a lion eating a burger"}]})
    ours = run_edit(tiny_model, r)
    pipe = StableDiffusionPipeline(vae=tiny_model.vae, text_encoder=tiny_model.text_encoder,
                                   tokenizer=tiny_model.tokenizer, unet=tiny_model.unet, scheduler=tiny_model.scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    common = dict(num_inference_steps=2, guidance_scale=6.0, height=256, width=256, output_type="pt")
    whole = pipe(SOURCE, latents=initial_latent(3, 4, (32, 32)), **common).images
    pipe.vae.enable_tiling()  # the pipeline-level enable_vae_tiling is gone from diffusers 0.42
    try:
        theirs = pipe(SOURCE, latents=initial_latent(3, 4, (32, 32)), **common).images
    finally:
        pipe.vae.disable_tiling()
    assert (ours.images[0] - theirs[0]).abs().max() <= 1e-4  # measured 2.9e-6
    assert (ours.images[0] - whole[0]).abs().max() > 0.1  # measured 0.30: the pipeline's default decodes whole
    full = run_edit(tiny_model, r.model_copy(update={"vae": "full"}))
    assert (full.images[0] - whole[0]).abs().max() <= 1e-4  # measured 1.2e-5: vae: full is that default


def test_a_users_pipeline_gets_its_vae_settings_back():
    """A user's pipeline with its own VAE settings (slicing on, a 96 px tile): runs with vae: tiled, full and auto
    use p2p's settings on the user's tile (tiled and full differ) and leave the pipeline's VAE as it was."""
    parts = tiny_components(seed=0)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.vae.enable_slicing()
    pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 96, 12
    before = state(pipe.vae)
    data = {"source": SOURCE, "steps": 1, "seed": 3, "size": 128, "edits": [{"target": "a painting of a lion"}]}
    tiled = p2p.edit(pipe, {**data, "vae": "tiled"}, maps=False).run.images
    assert state(pipe.vae) == before
    full = p2p.edit(pipe, {**data, "vae": "full"}, maps=False).run.images
    assert state(pipe.vae) == before
    assert (tiled - full).abs().max() > 1e-3
    auto = p2p.edit(pipe, data, maps=False).run.images
    assert torch.equal(auto, tiled)  # 128 px is above the user's 96 px tile: both in the user's tiles
    assert state(pipe.vae) == before


def test_on_a_trained_vae_tiles_of_its_size_decode_closer_to_the_picture():
    """The bundled model's VAE was trained on 64 px pictures (its tile): a 128 px mosaic of four scenes of its
    world decodes closer to the picture in its tiles than whole, which is why auto tiles above the tile."""
    from lab.shapes.world import heldout_scenes, render

    model = p2p.load_model("shapes")
    scenes = [torch.from_numpy(np.ascontiguousarray(render(s))).permute(2, 0, 1).float() / 255
              for s in heldout_scenes(4, seed=0)]
    picture = torch.cat([torch.cat(scenes[:2], 2), torch.cat(scenes[2:], 2)], 1)
    z = encode_image(model, picture[None], "full")
    with torch.no_grad():
        whole, tiled = decode_latents(model, z, vae="full")[0], decode_latents(model, z)[0]
    assert psnr(tiled, picture) >= psnr(whole, picture) + 3  # measured 14.1 dB against 7.9 dB
    assert psnr(tiled, whole) < 20  # not a rounding difference: measured 11.4 dB


def test_the_memory_estimate_and_plan_count_a_tiled_decode(tiny_model):
    """The decode term counts one tile of one picture: lower where the picture is tiled, the same where auto
    leaves it whole; the plan offers vae: tiled where the decode sets the peak (SDXL at 1024 px)."""
    args = (tiny_model, (128, 128), 2, True, [], False, 77)  # 1024 px: the decode sets the peak
    assert run_bytes(*args, "tiled") < 0.7 * run_bytes(*args, "full")  # measured 0.63: then the UNet sets it
    assert run_bytes(*args) == run_bytes(*args, "tiled")  # auto: 1024 px is above the 128 px tile
    small = (tiny_model, (16, 16), 2, True, [], False, 77)
    assert run_bytes(*small) == run_bytes(*small, "full")

    def plan(size: int, vae: str | None):
        r = parse_recipe({"source": "a cat", "size": size, "vae": vae, "edits": [{"target": "a dog"}]})
        return plan_for("stabilityai/stable-diffusion-xl-base-1.0", r, "fp16")

    assert plan(1024, None).peak() == plan(1024, "full").peak()  # SDXL's tile is 1024 px: whole by default
    assert plan(1024, "tiled").peak() < plan(1024, None).peak() / 2  # measured 8.9 against 19.0 GB
    assert plan(1536, None).peak() < plan(1536, "full").peak() / 2
    fixes = plan(1024, None).fixes(12 * 2**30)
    assert fixes[0].startswith("vae: tiled (") and not any(", vae: tiled" in f for f in fixes)  # enough alone
    fixes = plan(1024, None).fixes(8 * 2**30)  # not enough alone: paired with what does not fit without it
    assert not any(f.startswith("vae: tiled (") for f in fixes)
    assert any(f.startswith("quantize: {unet: int8}, vae: tiled (") for f in fixes)


def test_bad_values_name_the_field_and_the_choice_is_recorded():
    with pytest.raises(RecipeError, match="vae: Input should be 'auto', 'tiled' or 'full'"):
        parse_recipe({"source": "a cat", "vae": "tiles", "edits": [{"target": "a dog"}]})
    with pytest.raises(ValueError, match="vae: 'tiles' is not one of auto, tiled, full"):
        p2p.invert(object(), "x.png", "a cat", vae="tiles")
    r = parse_recipe({"source": "a cat", "vae": "tiled", "edits": [{"target": "a dog"}]})
    assert resolved_recipe(r)["vae"] == "tiled"
    assert "vae" not in resolved_recipe(r.model_copy(update={"vae": None}))


@pytest.mark.parametrize("name", ["tiny_flux_model", "tiny_qwen_image_model", "tiny_flux2_klein_model"])
def test_every_vae_class_tiles_as_diffusers_does(request, name):
    """AutoencoderKL (FLUX.1's 16 channels), AutoencoderKLQwenImage (tile height, width and strides) and
    AutoencoderKLFlux2: vae: tiled at 128 px (within their tiles: 128, 256 and 1024 px) decodes as diffusers does
    with a 64 px tile set through its own API, auto leaves the picture whole, and the settings come back."""
    model = request.getfixturevalue(name)
    vae = model.vae
    side = 128 // model.vae_scale
    z = torch.randn(1, model.latent_channels, side, side, generator=torch.Generator().manual_seed(0))
    before = state(vae)
    with torch.no_grad():
        tiled, auto, full = (decode_latents(model, z, vae=mode) for mode in ("tiled", None, "full"))
        if hasattr(vae, "tile_sample_min_height"):  # Qwen-Image: the strides of diffusers' 256 / 192, scaled
            vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=48,
                              tile_sample_stride_width=48)
        else:
            vae.enable_tiling()
            vae.tile_sample_min_size, vae.tile_latent_min_size = 64, 8
        try:
            theirs = (model.family.to_pixels(model, z).float() / 2 + 0.5).clamp(0, 1)
        finally:
            for key, value in before.items():
                setattr(vae, key, value)
    assert (tiled - theirs).abs().max() <= 2e-5
    assert torch.equal(auto, full) and (tiled - full).abs().max() > 1e-3
    assert state(vae) == before


def test_an_inversion_serves_only_a_recipe_with_its_vae(tiny_model, tmp_path):
    from PIL import Image

    gen = torch.Generator().manual_seed(3)
    pixels = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=gen), size=(128, 128))[0]
    Image.fromarray((pixels.permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / "p.png")
    data = {"source": SOURCE, "steps": 1, "guidance": 1.0, "image": str(tmp_path / "p.png"), "inversion": "ddim",
            "edits": [{"target": "a painting of a lion eating a burger"}]}
    real = p2p.invert(tiny_model, tmp_path / "p.png", SOURCE, method="ddim", steps=1, guidance=1.0, vae="tiled",
                      progress=None)
    with pytest.raises(RecipeError, match="vae: the inversion was made with vae tiled and the recipe has auto"):
        p2p.edit(tiny_model, data, inversion=real, maps=False, progress=None)
    result = p2p.edit(tiny_model, {**data, "vae": "tiled"}, inversion=real, maps=False, progress=None)
    assert result.run.images.shape == (2, 3, 128, 128)


def test_the_cli_flag_and_a_bad_value_in_a_file(tmp_path):
    """--vae is --set vae=...; a recipe file's bad value is refused (exit 2) with the field, file and line."""
    from typer.testing import CliRunner

    from p2p_cli.cli.main import app

    runner = CliRunner()
    good = runner.invoke(app, ["validate", "--prompt", "a [red->blue] cube", "--vae", "full"])
    assert good.exit_code == 0, good.stderr
    bad = runner.invoke(app, ["validate", "--prompt", "a [red->blue] cube", "--vae", "tiles"])
    assert bad.exit_code == 2 and "vae: Input should be 'auto', 'tiled' or 'full'" in bad.stderr
    path = tmp_path / "r.yaml"
    path.write_text("source: a red cube\nsteps: 2\nvae: tiles\nedits:\n  - target: a blue cube\n")
    bad = runner.invoke(app, ["validate", str(path)])
    assert bad.exit_code == 2 and f"vae: Input should be 'auto', 'tiled' or 'full' ({path}:3)" in bad.stderr


def test_validate_says_how_the_pictures_are_decoded():
    from typer.testing import CliRunner

    from p2p_cli.cli.main import app

    def line(*options: str) -> str:
        out = CliRunner().invoke(app, ["validate", "--prompt", "a [red->blue] square", *options]).stdout
        return next(text.strip() for text in out.splitlines() if text.strip().startswith("vae:"))

    assert line() == "vae: auto (whole pictures: not larger than the VAE's 64 px tile)"  # the bundled model
    assert line("--set", "size=128") == "vae: auto (in 64 px tiles, one picture at a time)"
    assert line("--vae", "tiled") == "vae: tiled (in 32 px tiles, one picture at a time)"
    assert line("--vae", "full", "--set", "size=128") == "vae: full (whole pictures)"
