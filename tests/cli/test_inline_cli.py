"""`p2p edit --prompt` and `p2p validate --prompt`: an inline edit runs like the recipe it expands to."""

from __future__ import annotations

import json


def test_edit_an_inline_prompt(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    result = cli("edit", "--prompt", "a painting of a [squirrel->lion|tiger] eating a (burger:2)",
                 "--model", tiny_model_dir, "--out", out, "--steps", 2, "--json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    folder = out / "a-painting-of-a-squirrel-eating-a-burger"
    assert line["out"] == str(folder)
    run = json.loads((folder / "run.json").read_text())
    assert [e["target"] for e in run["recipe"]["edits"]] == ["a painting of a lion eating a burger",
                                                              "a painting of a tiger eating a burger"]
    assert run["recipe"]["edits"][0]["reweight"] == {"burger": 2.0}
    assert run["recipe_file"] == "--prompt"


def test_validate_shows_the_expansion_and_a_bad_prompt_is_exit_2(cli, tmp_path):
    result = cli("validate", "--prompt", "a [cat->dog] on a mat")
    assert result.exit_code == 0, result.output
    assert "expands to:" in result.stdout and "target: a dog on a mat" in result.stdout
    bad = cli("edit", "--prompt", "a [cat on a mat", "--out", tmp_path)
    assert bad.exit_code == 2
    assert "--prompt: invalid recipe" in bad.stderr and "unmatched or malformed '['" in bad.stderr
    none = cli("edit", "--out", tmp_path)
    assert none.exit_code == 2 and "nothing to edit" in none.stderr


def test_two_prompts_with_the_same_first_words_do_not_clash(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    first, second = "a painting of a [squirrel->lion] eating a burger", "a painting of a [squirrel->tiger] eating a burger"
    checked = cli("validate", "--prompt", first, "--prompt", second)
    assert checked.exit_code == 0, checked.output
    result = cli("edit", "--prompt", first, "--prompt", second, "--model", tiny_model_dir, "--out", out,
                 "--steps", 2, "--quiet")
    assert result.exit_code == 0, result.output
    stem = "a-painting-of-a-squirrel-eating-a-burger"
    assert sorted(p.name for p in out.iterdir()) == [stem, f"{stem}-2"]
    assert json.loads((out / f"{stem}-2" / "run.json").read_text())["recipe"]["edits"][0]["target"].endswith(
        "tiger eating a burger")
    named = cli("edit", "--prompt", first, "--name", "lion", "--model", tiny_model_dir, "--out", out, "--steps", 2,
                "--quiet")
    assert named.exit_code == 0 and (out / "lion" / "run.json").exists()
    too_many = cli("validate", "--prompt", first, "--name", "a", "--name", "b")
    assert too_many.exit_code == 2 and "2 --name for 1 --prompt" in too_many.stderr


def test_validate_reports_folder_clashes(cli, tmp_path):
    for stem in ("one", "two"):
        (tmp_path / f"{stem}.yaml").write_text("name: same\nsource: a cat\nedits: [{target: a dog}]\n")
    result = cli("validate", tmp_path / "one.yaml", tmp_path / "two.yaml")
    assert result.exit_code == 2
    assert f"name: 'same' is also the name of {tmp_path / 'one.yaml'}: both would write OUT/same/" in result.stderr
    clash = cli("validate", "--prompt", "a [cat->dog]", "--prompt", "a [cat->cow]", "--set", "name=x")
    assert clash.exit_code == 2 and "both would write OUT/x/" in clash.stderr
