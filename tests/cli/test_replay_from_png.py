"""`p2p edit out/x/edit-1.png` makes the same picture again for every kind of edit (generated, real, masked, LoRA,
inline, a picture of one's own with --image and --mask): the recipe in every PNG is the replayable one run.json holds (a real picture's is the folder's input.png)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

SOURCE = "a painting of a squirrel eating a burger"
TARGET = "a painting of a lion eating a burger"


def picture(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)).save(path)  # not square: it is cropped
    return path.name


def mask(folder) -> str:
    Image.fromarray(np.tile(np.array([255] * 64 + [0] * 64, dtype=np.uint8), (128, 1))).save(folder / "m.png")
    return "m.png"


def first_run(kind, tmp_path, cli, model) -> list:
    recipe = {"name": "x", "source": SOURCE, "steps": 2, "size": 128, "edits": [{"target": TARGET}]}
    if kind.startswith("inline"):
        args = ["--prompt", "a painting of a [squirrel->lion] eating a burger", "--steps", 2]
        if kind == "inline-real":  # a picture of one's own, without a recipe file
            args += ["--image", tmp_path / picture(tmp_path / "photo.png"), "--mask", tmp_path / mask(tmp_path)]
        return args
    if kind == "real":
        recipe.update(image=picture(tmp_path / "photo.png"), inversion="direct")
    if kind == "masked":
        recipe["mask"] = mask(tmp_path)
    if kind == "lora":
        from test_loras import make_lora

        recipe["loras"] = [{"path": make_lora("sd", tmp_path).rsplit("/", 1)[1], "scale": 0.5}]
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(recipe))
    return [tmp_path / "x.yaml"]


@pytest.mark.parametrize("kind", ["generated", "real", "masked", "lora", "inline", "inline-real"])
def test_every_kind_of_edit_replays_from_its_png(kind, cli, tiny_model_dir, tmp_path):
    made = tmp_path / "made"
    made.mkdir()
    args = first_run(kind, made, cli, tiny_model_dir)
    result = cli("edit", *args, "--model", tiny_model_dir, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / json.loads(result.stdout)["out"].rsplit("/", 1)[1]
    run = json.loads((folder / "run.json").read_text())
    png = folder / "edit-1.png"
    assert json.loads(Image.open(png).text["p2p-recipe"]) == run["recipe"]
    if kind in ("real", "inline-real"):
        assert run["recipe"]["image"] == "input.png" and run["recipe"]["crop"] is None
        (made / "photo.png").unlink()  # the original is gone: the folder's own input.png is what replays
    # your own picture, made with a local model folder that lies outside its own: --trust-recipe says it is yours
    # (a stranger's PNG naming a folder elsewhere is refused: tests/cli/test_untrusted_recipes.py)
    again = cli("edit", png, "--out", tmp_path / "again", "--json", "--trust-recipe")
    assert again.exit_code == 0, again.output
    redone = tmp_path / "again" / folder.name / "edit-1.png"
    assert np.array_equal(np.asarray(Image.open(redone)), np.asarray(Image.open(png)))


def test_a_photo_given_as_a_recipe_says_what_to_type(cli, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    result = cli("edit", tmp_path / "photo.png", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert f"p2p edit --image {tmp_path / 'photo.png'} --prompt" in " ".join(result.stderr.split())


def test_a_missing_image_is_a_recipe_error(cli, tmp_path):
    result = cli("edit", "--prompt", "a [cat->dog]", "--image", tmp_path / "gone.png", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "image: no picture at" in result.stderr
