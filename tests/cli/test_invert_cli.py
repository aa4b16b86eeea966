"""`p2p invert` and `p2p edit` with image: on the tiny saved model: invert once, edit from the cache, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.cli.conftest import SMALL


@pytest.fixture
def picture(tmp_path):
    """A 160x128 RGBA picture (centre-cropped to 128x128 for the tiny model)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 20, 4), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    pixels[..., 3] = 255
    path = tmp_path / "photo.png"
    Image.fromarray(pixels, mode="RGBA").save(path)
    return path


def test_invert_once_then_edit_from_the_cache(cli, write_recipe, tiny_model_dir, picture, tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ("--model", tiny_model_dir, "--steps", 2, "--method", "negative-prompt", "--out", out)
    result = cli("invert", picture, "--prompt", SMALL["source"], *args)
    assert result.exit_code == 0, result.output
    folder = out / "photo"
    assert sorted(p.name for p in folder.iterdir()) == ["input.png", "inversion.safetensors", "run.json", "source.png"]
    assert Image.open(folder / "input.png").size == (128, 128)
    run = json.loads((folder / "run.json").read_text())
    inv = run["inversion"]
    assert inv["method"] == "negative-prompt" and inv["cached"] is False and inv["crop"] == "centre"
    assert inv["seconds"] > 0 and isinstance(inv["psnr"], float) and isinstance(inv["psnr_vae_ceiling"], float)
    assert inv["settings"]["steps"] == 2 and inv["settings"]["prompt"] == SMALL["source"]
    assert result.stdout.startswith(f"wrote {folder}/ (negative-prompt, ") and "PSNR" in result.stdout
    assert len(list((tmp_path / "cache" / "inversions").glob("*.safetensors"))) == 1

    recipe = {**SMALL, "name": "real", "steps": 2, "image": "photo.png", "inversion": "negative-prompt"}
    result = cli("edit", write_recipe(recipe, name="real"), "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "reusing the negative-prompt inversion of photo.png from the cache" in result.stderr
    folder = out / "real"
    assert {"input.png", "source.png", "edit-1.png", "edit-2.png", "inversion.safetensors", "grid.png",
            "run.json"} <= {p.name for p in folder.iterdir()}
    run = json.loads((folder / "run.json").read_text())
    assert run["inversion"]["cached"] is True and run["inversion"]["key"] == inv["key"]
    assert run["inversion"]["image"] == str(picture.resolve())
    assert run["images"]["input"] == "input.png" and "invert" in run["seconds"]
    # the stored recipe names the picture the run inverted, next to run.json: it replays from the folder
    assert run["recipe"]["image"] == "input.png" and run["recipe"]["crop"] is None
    assert run["recipe"]["inversion"] == "negative-prompt"
    same = [np.asarray(Image.open(f), np.int16) for f in (out / "photo" / "source.png", folder / "source.png")]
    assert np.abs(same[0] - same[1]).max() <= 1  # the edit's source row is the reconstruction

    moved = tmp_path / "elsewhere" / "real"  # the folder moved: its record still replays, from the cache
    moved.parent.mkdir()
    folder.rename(moved)
    result = cli("edit", moved / "run.json", "--model", tiny_model_dir, "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert "reusing the negative-prompt inversion of input.png from the cache" in result.stderr
    again = json.loads((tmp_path / "again" / "real" / "run.json").read_text())
    assert again["inversion"]["key"] == inv["key"]  # input.png holds exactly the pixels that were inverted
    for name in ("source.png", "edit-1.png", "edit-2.png"):
        pair = [np.asarray(Image.open(d / name), np.int16) for d in (moved, tmp_path / "again" / "real")]
        assert np.abs(pair[0] - pair[1]).max() <= 1, name


@pytest.mark.parametrize(
    "image, message",
    [
        ("missing.png", "image: no picture at "),
        ("junk.png", "image: ", ),
    ],
    ids=["missing", "unreadable"],
)
def test_bad_picture_fails_before_the_model_loads(cli, write_recipe, tiny_model_dir, tmp_path, image, message):
    (tmp_path / "junk.png").write_text("not a picture")
    recipe = write_recipe({**SMALL, "image": image}, name="bad")
    result = cli("edit", recipe, "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "loading model" not in result.stderr
    assert not (tmp_path / "out").exists()
    result = cli("invert", tmp_path / image, "--prompt", "a cat", "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "loading model" not in result.stderr
    assert ("no picture at" if image == "missing.png" else "is not a picture Pillow can read") in result.stderr


@pytest.mark.slow
def test_the_documented_maximum_of_steps_runs(cli, write_recipe, tiny_model_dir, picture, tmp_path, monkeypatch):
    """steps: 1000 crashed with "index 1000 is out of bounds" in edit and invert."""
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    recipe = {**SMALL, "name": "long", "steps": 1000, "image": "photo.png", "inversion": "ddim",
              "edits": SMALL["edits"][:1]}
    result = cli("edit", write_recipe(recipe, name="long"), "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "out" / "long" / "run.json").read_text())
    assert run["recipe"]["steps"] == 1000 and run["inversion"]["psnr"] > 0  # a random tiny model: no more


def test_a_tampered_cache_entry_is_a_warning_and_the_edit_goes_on(cli, tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from tests.engine.test_inversion_cache_faults import PROMPT, rewrite

    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    args = ("invert", tmp_path / "p.png", "--prompt", PROMPT, "--model", tiny_model_dir, "--steps", 2,
            "--method", "ddim", "--out", tmp_path / "out")
    assert cli(*args).exit_code == 0
    (path,) = (tmp_path / "cache" / "inversions").glob("*.safetensors")
    rewrite(path, latent=torch.full((1, 4, 16, 16), float("nan")))
    result = cli(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert f"warning: p: the cached inversion {path} is damaged (latent holds NaN or infinite values)" in result.stderr
    run = json.loads((tmp_path / "out" / "p" / "run.json").read_text())
    assert run["inversion"]["cached"] is False and run["inversion"]["psnr"] > 0


def test_invert_without_a_method_fills_the_cache_the_models_default_edit_reads(cli, write_recipe, tmp_path,
                                                                               monkeypatch):
    """On the bundled UNet model (its p2p-defaults.json: ddpm for real pictures) `p2p invert` with no --method
    inverts as an `image:` recipe that names no inversion will, so that edit reads the cache."""
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    source = "a big blue circle on the left on a white background"
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(tmp_path / "photo.png")
    result = cli("invert", tmp_path / "photo.png", "--prompt", source, "--steps", 2, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "photo" / "run.json").read_text())["inversion"]["method"] == "ddpm"
    recipe = {"name": "real", "source": source, "steps": 2, "image": "photo.png",
              "edits": [{"target": source.replace("blue", "red")}]}
    result = cli("edit", write_recipe(recipe, name="real"), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "reusing the ddpm inversion of photo.png from the cache" in result.stderr


@pytest.mark.parametrize("model, method, fix", [("shapes", "flowedit", "use ddpm"),
                                                ("shapes-mmdit", "ddpm", "use flowedit")])
def test_a_method_the_models_sampler_cannot_run_is_a_clear_error(cli, tmp_path, model, method, fix):
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(tmp_path / "photo.png")
    result = cli("invert", tmp_path / "photo.png", "--prompt", "a white background", "--model", model,
                 "--method", method, "--steps", 2, "--out", tmp_path / "out")
    assert result.exit_code == 2 and f"--method {method}: " in result.stderr and fix in result.stderr
    assert "unexpected" not in result.stderr and not (tmp_path / "out").exists()
