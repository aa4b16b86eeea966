"""The Python API on the bundled model, as a notebook uses it: its files equal `p2p edit`'s, README's Python
section runs, real pictures work, and mismatched inversions are refused with the recipe's error style."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import p2p_cli as p2p
from p2p_cli.cli.main import app

ROOT = Path(__file__).parent.parent
FAST = {"steps": 4}
FAST_RECIPE = {"source": "a big red circle on the left on a white background", "steps": 4,
               "edits": [{"target": "a big blue circle on the left on a white background"}]}


@pytest.fixture(scope="module")
def shapes():
    return p2p.load_model("shapes", device="cpu", dtype="fp32")


def recipe_file(tmp_path, **top) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / "shapes-replace.yaml").read_text())
    data.update(FAST, **top)
    path = tmp_path / "shapes-replace.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_api_files_equal_p2p_edit_byte_for_byte(shapes, tmp_path):
    path = recipe_file(tmp_path)
    result = p2p.edit(shapes, str(path))  # a file's path: its relative paths and its name as the CLI reads them
    result.save(tmp_path / "api")
    cli = CliRunner().invoke(app, ["edit", str(path), "--model", "shapes", "--device", "cpu", "--out",
                                   str(tmp_path / "cli"), "--save-attention"])
    assert cli.exit_code == 0, cli.output
    ours, theirs = tmp_path / "api", tmp_path / "cli" / "shapes-replace"
    names = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*") if p.is_file())
    assert "attention/maps.npz" in names and "grid.png" in names
    for name in names:
        if name.endswith(".png"):
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    a, b = (json.loads((d / "run.json").read_text()) for d in (ours, theirs))
    for run in (a, b):
        run.pop("seconds"), run.pop("created")
    assert len(b.pop("input_sha256")) == 64  # the command's fingerprint for --resume; the API writes none
    assert a == b


def test_result_pictures_and_maps(shapes):
    recipe = p2p.load_recipe(ROOT / "recipes" / "shapes-replace.yaml").model_copy(update=FAST)
    result = p2p.edit(shapes, recipe)
    assert len(result.images) == 1 + len(recipe.edits) and result.source is result.images[0] or True
    assert result.images[0].size == (64, 64) and result.source.size == (64, 64)
    assert result.grid().width > 64 * len(result.images)
    words = [t for _, t in result.maps.tokens(0)]
    assert words[:4] == recipe.source.split()[:4]
    m = result.maps.word("circle")
    assert m.ndim == 2 and float(m.sum()) > 0
    assert result.maps.word("circle", size=(64, 64)).shape == (64, 64)
    comps, shares = result.maps.self_components(0, k=3)
    assert comps.shape[0] == 3 and float(shares.sum()) <= 1.0001
    assert result.maps.overlay("circle").size == (64, 64)
    with pytest.raises(ValueError, match="'tiger' is not in prompt 0"):
        result.maps.word("tiger")


def test_a_real_picture_and_an_inversion_that_does_not_fit(shapes, tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)).save(
        tmp_path / "photo.png")
    recipe = p2p.load_recipe(recipe_file(tmp_path, image="photo.png", inversion="negative-prompt"))
    assert recipe.image == str(tmp_path / "photo.png")  # anchored to the recipe file
    result = p2p.edit(shapes, recipe)
    assert result.real is not None and result.real.inversion.method == "negative-prompt"
    inv = p2p.invert(shapes, tmp_path / "photo.png", recipe.source, method="negative-prompt", steps=2)
    with pytest.raises(p2p.RecipeError, match="steps: the inversion was made with 2 steps and the recipe has 4"):
        p2p.edit(shapes, recipe, inversion=inv)
    assert all("--" not in line for line in (str(e) for e in [p2p.RecipeError(["x"])]))


def test_a_picture_is_inverted_as_the_model_says_unless_the_caller_or_recipe_says(shapes, tmp_path, monkeypatch):
    """The bundled UNet model's folder names ddpm for real pictures: p2p.invert without a method and a recipe
    without `inversion` both take it; an inversion handed to edit() serves a recipe that names none (run.json's
    recipe says which) and is refused by one that names another."""
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)).save(
        tmp_path / "photo.png")
    want = json.loads((ROOT / "p2p_cli" / "shapes" / "weights" / "p2p-defaults.json").read_text())["image"]
    recipe = p2p.load_recipe(recipe_file(tmp_path, image="photo.png"))
    assert recipe.inversion is None
    assert p2p.edit(shapes, recipe).real.inversion.method == want["inversion"] == "ddpm"
    given = p2p.invert(shapes, tmp_path / "photo.png", recipe.source, steps=4, method="ddim")
    assert p2p.invert(shapes, tmp_path / "photo.png", recipe.source, steps=4).inversion.method == "ddpm"
    result = p2p.edit(shapes, recipe, inversion=given)
    assert result.recipe.inversion == "ddim" and result.real.inversion.method == "ddim"
    with pytest.raises(p2p.RecipeError, match="inversion: the picture was inverted with ddim and the recipe asks"):
        p2p.edit(shapes, recipe.model_copy(update={"inversion": "ddpm"}), inversion=given)


def test_readme_python_section_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    monkeypatch.chdir(ROOT)
    code = "\n".join(blocks).replace('"outputs/my-edit"', repr(str(tmp_path / "my-edit")))
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "my-edit" / "grid.png").exists()


def test_library_errors_name_fields_not_command_line_flags(shapes):
    from p2p_cli.analysis.maps import VizSpec
    from p2p_cli.api import MapsError

    recipe = p2p.load_recipe(ROOT / "recipes" / "shapes-replace.yaml").model_copy(update=FAST)
    with pytest.raises(MapsError) as info:
        p2p.edit(shapes, recipe, maps=VizSpec(words=("dog",)))
    assert str(info.value).startswith("words dog: in none of the prompts") and "--" not in str(info.value)
    with pytest.raises(MapsError, match=r"^res 3: no cross-attention layer"):
        p2p.edit(shapes, recipe, maps=VizSpec(res=3))
    with pytest.raises(ValueError, match=r"^edit 5: the recipe has"):
        p2p.sweep(shapes, recipe, tau=[0.2], edit_number=5)


def test_an_inline_prompt_is_a_recipe_and_gives_the_pictures_of_its_expanded_recipe(shapes):
    text = "a big [red->blue] circle on the left on a white background"
    inline = p2p.edit(shapes, text, maps=False)
    expanded = p2p.edit(shapes, {"source": "a big red circle on the left on a white background",
                                 "edits": [{"target": "a big blue circle on the left on a white background"}]},
                        maps=False)
    assert inline.recipe.edits[0].target == expanded.recipe.edits[0].target
    assert torch.equal(inline.run.images, expanded.run.images)


def test_a_string_that_is_neither_a_file_nor_an_inline_prompt_says_both(shapes, tmp_path):
    with pytest.raises(p2p.RecipeError) as err:
        p2p.edit(shapes, str(tmp_path / "missing.yaml"))
    line = err.value.problems[0]
    assert "missing.yaml" in line and "names no file" in line and "as an inline prompt" in line


def test_a_list_of_recipes_runs_as_edit_many(shapes):
    recipes = [dict(FAST_RECIPE, seed=s) for s in (1, 2)]
    many = p2p.edit(shapes, recipes)
    assert isinstance(many, list) and len(many) == 2
    for recipe, result in zip(recipes, many):
        alone = p2p.edit(shapes, recipe, maps=False)
        assert torch.allclose(result.run.images, alone.run.images, atol=1e-4)


def test_one_progress_callback_hears_the_inversion_and_the_sampling(shapes, tmp_path):
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (220, 40, 40)).save(picture)
    heard = []
    p2p.edit(shapes, {"source": "a big red circle in the center on a white background", "image": str(picture),
                      "steps": 3, "edits": [{"target": "a big blue circle in the center on a white background"}]},
             maps=False, progress=lambda done, total, phase: heard.append((phase, done, total)))
    assert [h for h in heard if h[0] == "invert"] and heard[-1] == ("sample", 3, 3)
    assert heard.index(next(h for h in heard if h[0] == "sample")) > max(
        i for i, h in enumerate(heard) if h[0] == "invert")  # the inversion comes first


def test_edit_many_batches_what_can_share_a_batch_and_runs_the_rest_alone(shapes, monkeypatch):
    """p2p.edit_many takes any recipes: those with the same settings share one batch (the rule of `p2p edit
    --batch-rows`, recipe.batch_groups), one with other steps runs alone; each gives the pictures edit() gives."""
    import p2p_cli.engine.pipeline as pipeline

    batches = []
    real = pipeline.run_edits

    def spy(model, recipes, **kwargs):
        batches.append(len(recipes))
        return real(model, recipes, **kwargs)

    monkeypatch.setattr(pipeline, "run_edits", spy)
    recipes = [dict(FAST_RECIPE, seed=1), dict(FAST_RECIPE, seed=2, steps=FAST_RECIPE["steps"] + 1),
               dict(FAST_RECIPE, seed=3)]
    many = p2p.edit_many(shapes, recipes)
    assert batches == [2]  # recipes 1 and 3 together; recipe 2 (other steps) through edit()'s own path
    for recipe, result in zip(recipes, many):
        alone = p2p.edit(shapes, recipe, maps=False)
        assert result.recipe.steps == recipe["steps"]
        assert torch.allclose(result.run.images, alone.run.images, atol=1e-4)
