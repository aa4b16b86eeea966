"""Every command on a tiny random SDXL saved like a real one (the family is found from its components)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.cli.conftest import SMALL
from tests.shared_loads import share


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory, save_tiny_model):
    return share(save_tiny_model(tmp_path_factory.mktemp("tiny-xl"), family="sdxl"))


@pytest.fixture
def recipe_file(tmp_path):
    def write(**top):
        data = {**json.loads(json.dumps(SMALL)), "name": "xl", "steps": 2, **top}
        path = tmp_path / "xl.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return write


def test_edit_writes_the_usual_folder_and_records_the_family(cli, xl_dir, recipe_file, tmp_path):
    out = tmp_path / "out"
    result = cli("edit", recipe_file(), "--model", xl_dir, "--out", out, "--baseline", "--save-attention")
    assert result.exit_code == 0, result.output
    folder = out / "xl"
    names = {p.name for p in folder.iterdir()}
    assert {"source.png", "edit-1.png", "edit-2.png", "baseline-1.png", "grid.png", "run.json", "attention"} <= names
    run = json.loads((folder / "run.json").read_text())
    assert run["recipe"]["guidance"] == 5.0  # the SDXL default, recorded as resolved
    assert run["family"] == "sdxl"


def test_validate_sweep_and_attn_viz(cli, xl_dir, recipe_file, tmp_path):
    path = recipe_file()
    assert cli("validate", path).exit_code == 0
    out = tmp_path / "out"
    result = cli("sweep", path, "--model", xl_dir, "--out", out, "--tau", "0.2,0.8")
    assert result.exit_code == 0, result.output
    result = cli("attn-viz", recipe_file(), "--model", xl_dir, "--out", out)
    assert result.exit_code == 0, result.output


def test_real_picture_inverts_and_edits_from_the_cache(cli, xl_dir, recipe_file, tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    result = cli("invert", tmp_path / "photo.png", "--prompt", SMALL["source"], "--model", xl_dir, "--steps", 2,
                 "--out", out)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "photo" / "run.json").read_text())
    assert run["inversion"]["settings"]["guidance"] == 5.0
    result = cli("edit", recipe_file(image="photo.png"), "--model", xl_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "xl" / "run.json").read_text())["inversion"]["cached"] is True


def test_the_sdxl_recipe_runs_on_an_sdxl_model(cli, xl_dir, tmp_path):
    """recipes/sdxl-cat-tiger.yaml as shipped, on the tiny SDXL at its size and two steps."""
    from pathlib import Path

    path = Path(__file__).parents[2] / "recipes" / "sdxl-cat-tiger.yaml"
    result = cli("edit", path, "--model", xl_dir, "--out", tmp_path, "--steps", 2, "--set", "size=128")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "sdxl-cat-tiger" / "run.json").read_text())
    assert run["family"] == "sdxl" and run["recipe"]["guidance"] == 5.0
    assert "edit-1-mask.png" in run["images"].values() or (tmp_path / "sdxl-cat-tiger" / "edit-1-mask.png").exists()
