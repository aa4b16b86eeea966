"""Pictures that explain themselves: the A1111 "parameters" chunk and the recipe in every PNG; `p2p show`
prints them and `p2p edit FILE.png` makes the same picture again."""

from __future__ import annotations

import json

from PIL import Image


def test_every_png_carries_parameters_and_the_recipe(cli, write_recipe, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    result = cli("edit", write_recipe(), "--model", tiny_model_dir, "--out", out, "--save-attention")
    assert result.exit_code == 0, result.output
    folder = out / "small"
    pngs = sorted(folder.rglob("*.png"))
    assert len(pngs) > 6
    for png in pngs:
        texts = Image.open(png).text
        assert "parameters" in texts and "p2p-recipe" in texts, png
    params = Image.open(folder / "edit-1.png").text["parameters"].splitlines()
    assert params[0] == "a painting of a lion eating a burger"
    assert params[-1].startswith("Steps: 3, Sampler: DDIM, CFG scale: 7.5, Seed: 8888, Size: 128x128")
    assert "P2P: edit-1 replace; cross 0-0.8; self 0-0.4; blend squirrel/lion" in params[-1]
    run = json.loads((folder / "run.json").read_text())
    assert json.loads(Image.open(folder / "edit-2.png").text["p2p-recipe"]) == run["recipe"]


def test_show_prints_them_and_edit_of_a_picture_reproduces_it(cli, write_recipe, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    assert cli("edit", write_recipe(), "--model", tiny_model_dir, "--out", out).exit_code == 0
    picture = out / "small" / "edit-1.png"
    shown = cli("show", picture)
    assert shown.exit_code == 0, shown.output
    assert "a painting of a lion eating a burger" in shown.stdout and "source: a painting of a squirrel" in shown.stdout
    as_json = json.loads(cli("show", picture, "--json").stdout)
    assert as_json["recipe"]["edits"][0]["target"] == "a painting of a lion eating a burger"

    refused = cli("edit", picture, "--out", tmp_path / "again")  # its model folder lies outside the picture's folder
    assert refused.exit_code == 2 and "model: " in refused.stderr and "--trust-recipe" in refused.stderr
    again = cli("edit", picture, "--out", tmp_path / "again", "--trust-recipe")
    assert again.exit_code == 0, again.output
    redone = tmp_path / "again" / "small" / "edit-1.png"
    assert Image.open(redone).tobytes() == Image.open(picture).tobytes()


def test_a_picture_without_a_recipe_is_a_clear_error(cli, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    result = cli("edit", tmp_path / "plain.png", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "holds no recipe" in result.stderr
    shown = cli("show", tmp_path / "plain.png")
    assert shown.exit_code == 2 and "holds no p2p settings" in shown.stderr
