"""What a user meets in their second hour (issue 27): a rerun that is no error, recipe errors that point at the
line and say what was meant, help text that is each option's own."""

from __future__ import annotations

import json
import re

import pytest


def test_an_unchanged_rerun_is_kept_and_a_changed_one_says_what_to_do(cli, write_recipe, tiny_model_dir, tmp_path,
                                                                      small):
    small["steps"] = 2
    recipe, out = write_recipe(small), tmp_path / "out"
    assert cli("edit", recipe, "--model", tiny_model_dir, "--out", out).exit_code == 0
    before = (out / "small" / "grid.png").stat().st_mtime_ns
    again = cli("edit", recipe, "--model", tiny_model_dir, "--out", out)
    assert again.exit_code == 0, again.output
    assert f"kept {out / 'small'}/ (this run is there already; --overwrite redoes it)" in again.stdout
    assert (out / "small" / "grid.png").stat().st_mtime_ns == before
    small["seed"] = 5  # another recipe under the same name
    changed = cli("edit", write_recipe(small), "--model", tiny_model_dir, "--out", out)
    assert changed.exit_code == 1 and "already exists; pass --overwrite to replace it" in changed.stderr
    redo = cli("edit", write_recipe(small), "--model", tiny_model_dir, "--out", out, "--overwrite")
    assert redo.exit_code == 0 and json.loads((out / "small" / "run.json").read_text())["recipe"]["seed"] == 5


BAD = """\
source: a big blue circle
steps: fifty
edits:
  - target: a big red circle
    cross_replac: 0.5
  - tagret: a big green circle
"""


def test_schema_errors_name_the_line_and_the_key_meant(cli, tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD)
    result = cli("validate", tmp_path / "bad.yaml")
    assert result.exit_code == 2
    where = tmp_path / "bad.yaml"
    lines = result.stderr.splitlines()
    assert f"  steps: expected a whole number in digits, got 'fifty' ({where}:2)" in lines
    assert ("  edits[0].cross_replac (edit-1): unknown key (remove it or check its spelling); did you mean"
            f" cross_replace? ({where}:5)") in lines
    assert any(line.endswith(f"did you mean target? ({where}:6)") and "edits[1].tagret" in line for line in lines)
    unknown = cli("validate", tmp_path / "bad.yaml", "--set", "zzz=1")
    assert "zzz: unknown key (remove it or check its spelling); the keys here are name, model, seed" in unknown.stderr
    assert f"({where}:" not in unknown.stderr.split("zzz:")[1].splitlines()[0]  # an override has no line


def test_a_misspelt_word_gets_its_line_and_the_word_meant(cli, tmp_path):
    (tmp_path / "blu.yaml").write_text("source: a big blue circle\nedits:\n  - target: a big red circle\n"
                                       "    local_blend: {words: [blu]}\n")
    result = cli("validate", tmp_path / "blu.yaml")
    assert result.exit_code == 2
    assert f'did you mean "blue"? ({tmp_path / "blu.yaml"}:4)' in result.stderr
    (tmp_path / "rw.yaml").write_text("source: a big blue circle\nedits:\n  - target: a big red circle\n"
                                      "    reweight: {rde: 2}\n")
    assert 'did you mean "red"?' in cli("validate", tmp_path / "rw.yaml").stderr


@pytest.mark.parametrize("text, hint", [
    ("source: a cat\nedits:\n\t- target: a dog\n",
     "not valid YAML at line 3, column 1: while scanning for the next token; found character '\\t' that cannot"
     " start any token; the line is indented with a tab: YAML indents with spaces only"),
    ("source: a cat\nedits:\n  - target: a dog\n   cross_replace: 0.4\n",
     "not valid YAML at line 4, column 4:"),
])
def test_yaml_syntax_errors_say_where_and_what_to_do(cli, tmp_path, text, hint):
    (tmp_path / "r.yaml").write_text(text)
    result = cli("validate", tmp_path / "r.yaml")
    assert result.exit_code == 2
    assert hint in result.stderr and "<unicode string>" not in result.stderr
    assert "tab" in result.stderr or "same column" in result.stderr


def commands():
    """(name, click command) of every p2p command, eval's included."""
    import typer

    from p2p_cli.cli.main import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from ((f"{name} {sub}", c) for sub, c in command.commands.items())
        else:
            yield name, command


TAKES_NO_RECIPE = ("invert", "show", "bench", "dataset")
EDITS_WORDING = r"(?i)each recipe|per finished recipe|the recipe's|same recipe"  # `p2p edit`'s options' wording


def test_every_option_has_its_own_text_and_says_its_default():
    wrong, seen = [], 0
    for name, command in commands():
        for param in command.params:
            seen += param.param_type_name == "option"
            if param.param_type_name != "option" or param.name == "help":
                continue
            text = param.help or ""
            where = f"p2p {name} {param.opts[0]}"
            if not text:
                wrong.append(f"{where}: no help")
            if name.split()[0] in TAKES_NO_RECIPE and re.search(EDITS_WORDING, text):
                wrong.append(f"{where}: speaks of recipes, which `p2p {name}` does not take: {text}")
            flag = param.is_flag or param.count
            shown = param.show_default and param.default not in (None, ())
            if not (flag or param.multiple or param.required or shown) and "default" not in text.lower():
                wrong.append(f"{where}: does not say its default: {text}")
    assert seen > 100 and wrong == []


def test_help_names_the_families_and_the_real_thread_default():
    import typer

    from p2p_cli.cli.main import app

    seen = dict(commands())
    top = typer.main.get_command(app).help
    assert "SDXL" in top and "SD3" in top and "FLUX" in top
    assert "SD v1" not in seen["validate"].help
    threads = [p for p in seen["edit"].params if p.name == "threads"][0].help
    assert "half the CPUs" in threads and "at most 4" in threads


def test_the_progress_bar_says_which_time_is_which():
    from rich.console import Console

    from p2p_cli.cli.common import progress_bar

    console = Console(record=True, width=120, force_terminal=False)
    bar = progress_bar(console)
    task = bar.add_task("edit", total=10)
    bar.update(task, completed=4)
    console.print(bar.make_tasks_table(bar.tasks))
    line = console.export_text()
    assert "elapsed" in line and "left" in line and line.index("elapsed") < line.index("left")


def test_a_real_picture_edit_says_its_crop_box_and_psnr(cli, tiny_model_dir, tmp_path):
    import numpy as np
    import yaml
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"name": "photo", "image": "photo.png", "steps": 2,
                                                     "source": "a painting of a squirrel",
                                                     "edits": [{"target": "a painting of a lion"}]}))
    result = cli("edit", tmp_path / "r.yaml", "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    run = json.loads((tmp_path / "out" / "photo" / "run.json").read_text())
    assert run["inversion"]["box"] == [10, 0, 160, 150]  # the centred 150x150 box of the 170x150 picture
    assert "photo: inverted photo.png (direct, 2 steps) in " in said
    psnr = run["inversion"]["psnr"]
    assert (f"photo: crop box (10, 0, 160, 150) of the 170x150 picture, resized to 128x128; source PSNR {psnr:.1f} dB"
            in said)


def test_the_grid_labels_a_real_pictures_source_with_its_method_and_psnr(tiny_model_dir, tmp_path):
    import numpy as np
    from PIL import Image

    import p2p_cli as p2p
    from p2p_cli.engine.inversion import psnr

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    model = p2p.load_model(str(tiny_model_dir), device="cpu")
    result = p2p.edit(model, {"source": "a squirrel", "image": str(tmp_path / "p.png"), "steps": 2,
                              "edits": [{"target": "a lion"}]}, maps=False)
    titles = {tile.title: tile.caption for tile in result._tiles()}
    value = psnr(result.run.images[0], result.real.picture)
    assert f"source · direct, PSNR {value:.1f} dB" in titles
    assert titles["input"].startswith("crop box (0, 0, 128, 128) of the 128x128 picture")
