"""A recipe p2p did not write for this user (a PNG's p2p-recipe chunk, a run.json) may name pictures, masks, LoRA
files and models only inside its own folder (or a bundled model), unless --trust-recipe: a stranger's picture
never makes p2p read a file elsewhere nor download a model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from p2p_cli.overrides import stranger_problems

RECIPE = {"name": "x", "source": "a big red circle", "steps": 2, "edits": [{"target": "a big blue circle"}]}


def picture(path: Path) -> Path:
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(path)
    return path


def png_with(path: Path, recipe: dict) -> Path:
    info = PngInfo()
    info.add_text("p2p-recipe", json.dumps(recipe))
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


@pytest.fixture
def layout(tmp_path):
    """tmp/secret.png (someone's picture) and tmp/a/b/ (the stranger's folder)."""
    picture(tmp_path / "secret.png")
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    return tmp_path, folder


@pytest.mark.parametrize("field, value", [
    ("image", "../../secret.png"), ("image", "ABS"), ("mask", "../../secret.png"), ("image", "~/../../secret.png"),
])
def test_a_png_recipe_cannot_read_a_picture_elsewhere(cli, layout, field, value):
    root, folder = layout
    value = str(root / "secret.png") if value == "ABS" else value
    png = png_with(folder / "edit-1.png", {**RECIPE, "image": "input.png", field: value})
    picture(folder / "input.png")
    out = root / "out"
    result = cli("edit", png, "--out", out, "--model", "shapes")
    assert result.exit_code == 2, result.output
    assert f"{field}: {value!r} lies outside {folder}/" in result.stderr and "--trust-recipe" in result.stderr
    assert not out.exists() and "loading model" not in result.stderr
    assert cli("validate", png).exit_code == 2
    if not value.startswith("~"):
        trusted = cli("validate", png, "--trust-recipe")
        assert trusted.exit_code == 0, trusted.output


def test_a_run_json_is_a_stranger_too(cli, layout):
    root, folder = layout
    run = {"recipe": {**RECIPE, "image": str(root / "secret.png")}, "versions": {}}
    (folder / "run.json").write_text(json.dumps(run))
    result = cli("validate", folder / "run.json")
    assert result.exit_code == 2 and "image: " in result.stderr and "lies outside" in result.stderr
    picture(folder / "input.png")  # what p2p writes: input.png beside run.json
    (folder / "run.json").write_text(json.dumps({"recipe": {**RECIPE, "image": "input.png"}, "versions": {}}))
    assert cli("validate", folder / "run.json").exit_code == 0
    # a link inside the folder that leads out is outside
    (folder / "input.png").unlink()
    os.symlink(root / "secret.png", folder / "input.png")
    assert cli("validate", folder / "run.json").exit_code == 2


def test_models_and_loras_of_a_stranger(cli, layout):
    root, folder = layout
    hub = {"recipe": {**RECIPE, "model": "someone/some-model"}, "versions": {}}
    (folder / "run.json").write_text(json.dumps(hub))
    result = cli("edit", folder / "run.json", "--out", root / "out")
    assert result.exit_code == 2
    assert "model: 'someone/some-model' is a hub id" in result.stderr and "--model someone/some-model" in result.stderr
    assert "loading model" not in result.stderr
    for model in ("shapes", "bundled:shapes", "shapes-mmdit"):  # bundled models are fine
        (folder / "run.json").write_text(json.dumps({"recipe": {**RECIPE, "model": model}, "versions": {}}))
        assert cli("validate", folder / "run.json").exit_code == 0, model
    (folder / "run.json").write_text(json.dumps({"recipe": {**RECIPE, "model": str(root)}, "versions": {}}))
    assert "model: " in cli("validate", folder / "run.json").stderr
    lora = {**RECIPE, "loras": [{"path": str(root / "style.safetensors")}]}
    (root / "style.safetensors").write_bytes(b"x")
    (folder / "run.json").write_text(json.dumps({"recipe": lora, "versions": {}}))
    result = cli("validate", folder / "run.json")
    assert result.exit_code == 2 and "loras[0].path: " in result.stderr


def test_what_the_user_sets_is_theirs(cli, layout):
    root, folder = layout
    png = png_with(folder / "edit-1.png", {**RECIPE, "model": "someone/some-model", "image": "../../secret.png"})
    result = cli("validate", png, "--set", f"image={root / 'secret.png'}", "--set", "model=shapes")
    assert result.exit_code == 0, result.output


def test_the_api_refuses_too(layout):
    import p2p_cli as p2p
    from p2p_cli.recipe import RecipeError

    root, folder = layout
    png = png_with(folder / "edit-1.png", {**RECIPE, "image": "../../secret.png"})
    with pytest.raises(RecipeError, match="lies outside"):
        p2p.load_recipe(png)
    assert p2p.load_recipe(png, trust=True).image == str((root / "secret.png").resolve())


SEGMENT = st.sampled_from(["..", ".", "a", "b", "c", "input.png", "~"])


@given(st.lists(SEGMENT, min_size=1, max_size=6), st.booleans())
def test_refused_exactly_when_the_file_lies_outside(tmp_path_factory, parts, absolute):
    base = tmp_path_factory.getbasetemp() / "prop"
    folder = base / "x" / "y"
    folder.mkdir(parents=True, exist_ok=True)
    value = "/".join(parts)
    if absolute:
        value = str(base / value)
    problems = stranger_problems({"image": value}, str(folder / "run.json"), "run.json", set(), False)
    target = Path(value).expanduser()
    target = target if target.is_absolute() else folder / target
    inside = os.path.realpath(target).startswith(os.path.realpath(folder) + os.sep) or \
        os.path.realpath(target) == os.path.realpath(folder)
    assert bool(problems) == (not inside), (value, problems)
