"""A model folder's p2p-defaults.json: the real-picture windows the bundled models carry, filled into an `image:`
recipe where it sets none (never a generated one), shown by `p2p validate`, recorded in run.json; a malformed or
hostile file is a clear error naming the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from p2p_cli.checks import model_geometry, problems_before_loading
from p2p_cli.family_defaults import DEFAULTS_FILE, read_folder_defaults, with_family_defaults
from p2p_cli.recipe import RecipeError, parse_recipe
from p2p_cli.resolve import BUNDLED

SOURCE = "a big blue circle on the left on a white background"
TARGET = "a big red circle on the left on a white background"
PICTURE = Path(__file__).resolve().parents[2] / "recipes" / "pictures" / "blue-circle.png"


def shipped(model: str) -> dict:
    """The bundled folder's file, read as plain JSON (not through the reader under test)."""
    return json.loads((BUNDLED[model] / DEFAULTS_FILE).read_text())["image"]


def resolved(model: str, **top):
    recipe = parse_recipe({"model": model, "source": SOURCE, "edits": [{"target": TARGET}], **top})
    spec = model_geometry(model)
    return with_family_defaults(recipe, spec.family, spec.defaults)


@pytest.mark.parametrize("model", ["shapes", "shapes-mmdit"])
def test_an_image_recipe_that_sets_no_window_gets_the_bundled_models_own(model):
    want = shipped(model)
    recipe = resolved(model, image=str(PICTURE))
    edit = recipe.edits[0]
    assert recipe.cross_for(edit).default == (0.0, want["cross_replace"])
    assert recipe.self_for(edit) == (0.0, want["self_replace"])
    assert recipe.self_replace_max_res == want.get("self_replace_max_res")
    assert recipe.self_blocks == (list(want["self_blocks"]) if "self_blocks" in want else None)
    assert recipe.inversion_method == want.get("inversion", "direct")
    assert recipe.edit_start == want.get("edit_start")
    mine = resolved(model, image=str(PICTURE), inversion="ddim")
    assert mine.inversion == "ddim"  # the recipe's own wins


@pytest.mark.parametrize("model", ["shapes", "shapes-mmdit"])
def test_a_generated_source_keeps_the_family_defaults(model):
    recipe = resolved(model)
    family = model_geometry(model).family
    assert recipe.cross_replace is None and recipe.self_replace_max_res is None and recipe.self_blocks is None
    assert recipe.self_for(recipe.edits[0]) == (0.0, family.self_replace or 0.4)


def test_a_setting_the_recipe_or_its_edit_gives_wins(tmp_path):
    folder = config_folder(tmp_path)
    (folder / DEFAULTS_FILE).write_text(json.dumps({"image": {"cross_replace": 1, "self_replace": 0.9,
                                                              "self_replace_max_res": 16}}))
    recipe = parse_recipe({"image": str(PICTURE), "source": SOURCE, "cross_replace": 0.5,
                           "edits": [{"target": TARGET, "self_replace": 0.3}, {"target": TARGET}]})
    spec = model_geometry(str(folder))
    out = with_family_defaults(recipe, spec.family, spec.defaults)
    assert out.cross_for(out.edits[0]).default == (0.0, 0.5)
    assert out.self_for(out.edits[0]) == (0.0, 0.3)  # the edit's own window
    assert out.self_for(out.edits[1]) == (0.0, 0.9)  # the other edit: the model's
    assert out.self_replace_max_res == 16
    assert with_family_defaults(recipe.model_copy(update={"self_replace_max_res": 4}), spec.family,
                                spec.defaults).self_replace_max_res == 4


def test_validate_shows_the_defaults_and_their_file(cli, tmp_path):
    shutil.copy(PICTURE, tmp_path / "p.png")
    (tmp_path / "r.yaml").write_text(f"image: p.png\nsource: {SOURCE}\nedits:\n  - target: {TARGET}\n")
    out = cli("validate", tmp_path / "r.yaml")
    assert out.exit_code == 0, out.output
    line = next(x for x in out.stdout.splitlines() if "defaults for real pictures" in x)
    assert str(BUNDLED["shapes"] / DEFAULTS_FILE) in line
    assert f"cross_replace: {shipped('shapes')['cross_replace']}" in line
    mine = cli("validate", tmp_path / "r.yaml", "--set", "cross_replace=0.5")
    line = next(x for x in mine.stdout.splitlines() if "defaults for real pictures" in x)
    assert "cross_replace" not in line and "self_replace: " in line
    assert "cross_replace 0.5" in mine.stdout


def config_folder(tmp_path: Path) -> Path:
    """The bundled UNet model's config files alone (what validate reads), in a folder of the test's."""
    folder = tmp_path / "model"
    for name in ("model_index.json", "unet/config.json", "vae/config.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED["shapes"] / name, folder / name)
    return folder


@pytest.mark.parametrize("text, problem", [
    ('{"image": {"cross_replace": 2}}', "image.cross_replace: Input should be less than or equal to 1"),
    ('{"image": {"cross_replace": "1.0"}}', "image.cross_replace: Input should be a valid number"),
    ('{"image": {"image": "/etc/passwd"}}', "image.image: Extra inputs are not permitted"),
    ('{"unet": "other.safetensors"}', "unet: Extra inputs are not permitted"),
    ("{cross_replace: 1}", "file: Invalid JSON"),
    ('{"image": {"inversion": "pickle"}}', "image.inversion: Input should be 'direct', 'null-text'"),
    ('{"image": {"edit_start": 1}}', "image.edit_start: Input should be less than 1"),
])
def test_a_malformed_file_is_refused_naming_the_file_and_the_field(cli, tmp_path, text, problem):
    folder = config_folder(tmp_path)
    (folder / DEFAULTS_FILE).write_text(text)
    with pytest.raises(RecipeError) as err:
        read_folder_defaults(folder)
    assert err.value.source == str(folder / DEFAULTS_FILE)
    assert any(p.startswith(problem) and "fix or delete p2p-defaults.json" in p for p in err.value.problems)
    (tmp_path / "r.yaml").write_text(f"model: {folder}\nsource: {SOURCE}\nedits:\n  - target: {TARGET}\n")
    out = cli("validate", tmp_path / "r.yaml")
    assert out.exit_code == 2 and str(folder / DEFAULTS_FILE) in out.stderr and problem in out.stderr


def test_a_link_out_of_the_folder_is_not_followed(tmp_path):
    folder = config_folder(tmp_path)
    (tmp_path / "elsewhere.json").write_text('{"image": {"cross_replace": 1.0}}')
    (folder / DEFAULTS_FILE).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(RecipeError, match="outside the model folder"):
        read_folder_defaults(folder)


def test_defaults_the_model_cannot_run_are_problems_of_the_file(tmp_path):
    folder = config_folder(tmp_path)
    (folder / DEFAULTS_FILE).write_text('{"image": {"self_blocks": [0, 1]}}')  # a UNet model has no blocks
    real = parse_recipe({"model": str(folder), "image": str(PICTURE), "source": SOURCE, "edits": [{"target": TARGET}]})
    problems = problems_before_loading(real, str(folder), tokenizers=False)
    assert problems and all(p.startswith(f"{folder / DEFAULTS_FILE}: self_blocks") for p in problems)
    generated = real.model_copy(update={"image": None})
    assert problems_before_loading(generated, str(folder), tokenizers=False) == []


def test_an_inversion_the_model_cannot_run_is_a_problem_of_the_file(tmp_path):
    folder = tmp_path / "model"
    for name, model in (("model_index.json", "shapes-mmdit"), ("transformer/config.json", "shapes-mmdit"),
                        ("vae/config.json", "shapes")):  # the transformer model shares the UNet model's VAE
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED[model] / name, folder / name)
    (folder / DEFAULTS_FILE).write_text('{"image": {"inversion": "ddpm"}}')  # a flow model samples an ODE
    real = parse_recipe({"model": str(folder), "image": str(PICTURE), "source": SOURCE, "edits": [{"target": TARGET}]})
    problems = problems_before_loading(real, str(folder), tokenizers=False)
    assert problems and all(p.startswith(f"{folder / DEFAULTS_FILE}: inversion: ddpm") for p in problems)
    own = real.model_copy(update={"inversion": "ddim"})
    assert problems_before_loading(own, str(folder), tokenizers=False) == []


def test_an_edit_of_a_real_picture_on_the_bundled_model_runs_and_records_them(cli, tmp_path):
    """The user's three lines (image, source, one target) edit with the model's windows; run.json says so."""
    shutil.copy(PICTURE, tmp_path / "p.png")
    (tmp_path / "r.yaml").write_text(f"image: p.png\nsource: {SOURCE}\nsteps: 2\nedits:\n  - target: {TARGET}\n")
    out = cli("edit", tmp_path / "r.yaml", "--out", tmp_path / "out", env={"P2P_CACHE": str(tmp_path / "cache")})
    assert out.exit_code == 0, out.output
    record = json.loads((tmp_path / "out" / "r" / "run.json").read_text())
    want = shipped("shapes")
    assert record["model_defaults"] == {"file": str(BUNDLED["shapes"] / DEFAULTS_FILE), "image": want}
    assert record["recipe"]["edits"][0]["cross_replace"] == {"default": [0.0, want["cross_replace"]]}
    assert record["recipe"]["edits"][0]["self_replace"] == [0.0, want["self_replace"]]
    assert record["recipe"]["self_replace_max_res"] == want.get("self_replace_max_res")


def test_resume_keeps_a_real_pictures_folder_only_while_the_models_windows_for_it_are_unchanged(cli, tmp_path):
    """--resume keeps a folder only when what made it is unchanged: for an `image:` recipe that sets no window, the
    model folder's p2p-defaults.json is part of that (a changed file makes it another run's folder, refused as a
    changed recipe's is); a generated recipe does not depend on the file."""
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED["shapes"], folder)
    shutil.copy(PICTURE, tmp_path / "p.png")
    real = f"model: {folder}\nimage: p.png\nsource: {SOURCE}\nsteps: 2\nedits:\n  - target: {TARGET}\n"
    (tmp_path / "real.yaml").write_text(real)
    (tmp_path / "plain.yaml").write_text(real.replace("image: p.png\n", ""))
    out, env = tmp_path / "out", {"P2P_CACHE": str(tmp_path / "cache")}

    def edit(*args):
        return cli("edit", tmp_path / "real.yaml", tmp_path / "plain.yaml", "--out", out, *args, env=env)

    assert edit().exit_code == 0
    again = edit("--resume")
    assert again.exit_code == 0 and f"kept {out / 'real'}/" in again.stdout and f"kept {out / 'plain'}/" in again.stdout
    (folder / DEFAULTS_FILE).write_text(json.dumps({"image": {**shipped("shapes"), "cross_replace": 0.6}}))
    model_geometry.cache_clear()  # a new process reads the file again; this one cached it
    changed = edit("--resume")
    assert changed.exit_code == 1 and f"kept {out / 'plain'}/" in changed.stdout
    assert f"{out / 'real'}/ already exists; pass --overwrite" in changed.output
    assert edit("--overwrite").exit_code == 0
    record = json.loads((out / "real" / "run.json").read_text())
    assert record["recipe"]["edits"][0]["cross_replace"] == {"default": [0.0, 0.6]}
