"""The commands on tiny random SD3, FLUX.1, Qwen-Image, FLUX.2 klein and dev, and Chroma models saved by their own diffusers
pipelines, loaded through the same path as a hub snapshot (the family is found from the components)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.cli.conftest import SMALL
from tests.shared_loads import share


@pytest.fixture(scope="module", params=["sd3", "flux", "qwen-image", "flux2-klein", "flux2-dev", "chroma"])
def joint_dir(request, tmp_path_factory, save_tiny_model):
    folder = save_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), family=request.param)
    return request.param, share(folder)


@pytest.fixture
def recipe_file(tmp_path):
    def write(**top):
        data = {**json.loads(json.dumps(SMALL)), "name": "joint", "steps": 2, **top}
        path = tmp_path / "joint.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return write


def test_edit_writes_the_usual_folder_and_records_the_family(cli, joint_dir, recipe_file, tmp_path):
    family, folder = joint_dir
    out = tmp_path / "out"
    result = cli("edit", recipe_file(), "--model", folder, "--out", out, "--baseline")
    assert result.exit_code == 0, result.output
    names = {p.name for p in (out / "joint").iterdir()}
    assert {"source.png", "edit-1.png", "edit-2.png", "baseline-1.png", "grid.png", "run.json"} <= names
    run = json.loads((out / "joint" / "run.json").read_text())
    assert run["family"] == family
    defaults = {"sd3": 7.0, "flux": 3.5, "qwen-image": 4.0, "flux2-klein": 4.0, "flux2-dev": 4.0, "chroma": 5.0}
    assert run["recipe"]["guidance"] == defaults[family]  # the family's default, resolved


def test_validate_shows_the_blocks_not_the_unet_keys(cli, joint_dir, recipe_file):
    family, folder = joint_dir
    result = cli("validate", recipe_file(model=str(folder), self_blocks=[0]))
    assert result.exit_code == 0, result.output
    text = result.stdout + result.stderr
    assert "self_blocks: [0]" in text and "self_replace_max_res" not in text and "text_mass: self-window" in text
    assert {"sd3": "guidance: 7 ", "flux": "guidance: 3.5 ", "qwen-image": "guidance: 4 ",
            "flux2-klein": "guidance: 4 ", "flux2-dev": "guidance: 4 ", "chroma": "guidance: 5 "}[family] in text
    assert "self_replace 0.2 (the model family's default)" in text


def test_unet_keys_fail_with_the_fix(cli, joint_dir, recipe_file, tmp_path):
    _, folder = joint_dir
    result = cli("edit", recipe_file(self_replace_max_res=8), "--model", folder, "--out", tmp_path / "out")
    assert result.exit_code != 0
    assert "self_replace_max_res:" in result.stderr and "self_blocks" in result.stderr
    assert not (tmp_path / "out" / "joint").exists()


def test_a_real_picture_edits_with_direct_inversion(cli, joint_dir, recipe_file, tmp_path):
    import numpy as np
    from PIL import Image

    _, folder = joint_dir
    picture = tmp_path / "photo.png"
    gen = np.random.default_rng(0)
    Image.fromarray(gen.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((128, 128)).save(picture)
    out = tmp_path / "out"
    result = cli("edit", recipe_file(image=str(picture)), "--model", folder, "--out", out,
                 env={"P2P_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    run = json.loads((out / "joint" / "run.json").read_text())
    assert run["recipe"]["inversion"] in (None, "direct")
    assert (out / "joint" / "input.png").exists()


def test_flux_refuses_null_text_as_a_recipe_error(cli, joint_dir, recipe_file, tmp_path):
    family, folder = joint_dir
    if family not in ("flux", "flux2-dev"):  # guidance-distilled: no unconditional batch to optimise
        pytest.skip("the other families run classifier-free guidance: null-text applies")
    from PIL import Image

    Image.new("RGB", (128, 128), (200, 30, 30)).save(tmp_path / "photo.png")
    result = cli("edit", recipe_file(image=str(tmp_path / "photo.png"), inversion="null-text"), "--model", folder,
                 "--out", tmp_path / "out")
    assert result.exit_code != 0
    assert "inversion: null-text" in result.stderr and "use direct" in result.stderr


def test_attention_pictures_on_the_token_grid(cli, joint_dir, recipe_file, tmp_path):
    """attn-viz and --save-attention read the joint layers' text block (maps on the 8x8 token grid), with the
    word positions of the tokenizer of the sequence's first part (SD3: CLIP, FLUX: T5)."""
    _, folder = joint_dir
    out = tmp_path / "out"
    result = cli("edit", recipe_file(), "--model", folder, "--out", out, "--save-attention")
    assert result.exit_code == 0, result.output
    drawn = {p.name for p in (out / "joint" / "attention").iterdir()}
    assert {"source-cross.png", "edit-1-cross.png", "edit-1-self.png", "maps.npz"} <= drawn, drawn
    import numpy as np

    maps = np.load(out / "joint" / "attention" / "maps.npz")
    assert maps["source"].shape[1:] == (8, 8)  # the token grid
    tokens = list(maps["source.tokens"])
    assert "squirrel" in "".join(tokens).replace("▁", "")
    result = cli("attn-viz", recipe_file(), "--model", folder, "--out", tmp_path / "viz", "--words", "burger")
    assert result.exit_code == 0, result.output
    assert any("burger" in p.name for p in (tmp_path / "viz").rglob("*.png"))


def test_the_shipped_family_recipe_runs(cli, joint_dir, tmp_path):
    """recipes/<family>-cat-tiger.yaml as shipped (sd3, flux, qwen-image, flux2-klein, flux2-dev, chroma), on their
    family's tiny model."""
    from pathlib import Path

    family, folder = joint_dir
    path = Path(__file__).parents[2] / "recipes" / f"{family}-cat-tiger.yaml"
    result = cli("edit", path, "--model", folder, "--out", tmp_path, "--steps", 2, "--set", "size=128")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / f"{family}-cat-tiger" / "run.json").read_text())
    assert run["family"] == family
    assert (tmp_path / f"{family}-cat-tiger" / "edit-1-mask.png").exists()


def test_sweep_and_invert(cli, joint_dir, recipe_file, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    _, folder = joint_dir
    out = tmp_path / "out"
    result = cli("sweep", recipe_file(), "--model", folder, "--out", out, "--tau", "0.2,0.8")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    result = cli("invert", tmp_path / "photo.png", "--prompt", SMALL["source"], "--model", folder, "--steps", 2,
                 "--out", tmp_path / "inv")
    assert result.exit_code == 0, result.output


def test_validate_checks_words_on_the_t5_tokenizer_of_a_local_folder(cli, joint_dir, recipe_file):
    """A FLUX prompt longer than CLIP's 77 tokens is fine (CLIP only gives the pooled embedding); over T5's
    length it is not; SD3 checks both."""
    family, folder = joint_dir
    long_target = "a painting of a lion eating a burger " + "and a dog " * 30  # ~100 CLIP tokens, < 256 T5
    edits = [{"target": long_target}]
    result = cli("validate", recipe_file(model=str(folder), edits=edits))
    if family != "sd3":  # T5's 512 positions; Qwen-Image's and FLUX.2's template's 512
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0 and "the prompt has" in result.stderr
    too_long = [{"target": "a painting of a lion eating a burger " + "and a dog " * 200}]
    result = cli("validate", recipe_file(model=str(folder), edits=too_long))
    assert result.exit_code != 0 and "edits[0].target" in result.stderr and "the prompt has" in result.stderr


def test_validate_reads_a_cached_hub_model_like_a_local_folder(cli, joint_dir, recipe_file, tmp_path, monkeypatch):
    """A hub id whose snapshot is in the local Hugging Face cache is checked on its own tokenizers and size
    multiple before anything loads, with no download (HF_HUB_OFFLINE); an id not cached is checked on CLIP only."""
    import shutil

    import huggingface_hub.constants

    family, folder = joint_dir
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-joint"
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from p2p_cli.checks import _template_tokenizer, _t5_tokenizer, model_geometry

    model_geometry.cache_clear()
    _t5_tokenizer.cache_clear()
    _template_tokenizer.cache_clear()
    _template_tokenizer.cache_clear()
    too_long = [{"target": "a painting of a lion eating a burger " + "and a dog " * 200}]
    result = cli("validate", recipe_file(model="someone/tiny-joint", edits=too_long))
    assert result.exit_code == 2 and "edits[0].target" in result.stderr and "the prompt has" in result.stderr
    result = cli("validate", recipe_file(model="someone/tiny-joint", size=72))
    assert result.exit_code == 2 and "size: 72 is not a multiple of 16" in result.stderr
    result = cli("validate", recipe_file(model="someone/tiny-joint"))
    assert result.exit_code == 0 and "text_mass: self-window" in result.stdout
    assert cli("validate", recipe_file(model="someone/not-cached", size=72)).exit_code == 0  # checked once loaded
    model_geometry.cache_clear()
    _t5_tokenizer.cache_clear()
    _template_tokenizer.cache_clear()
