"""Issue 19, what a new user meets first: a fast and light CLI, CPU threads that do not oversubscribe, records
that replay, recipe streams, warnings for silent no-ops, attn-viz beside an edit's results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import runpy, sys
sys.argv = ["p2p", *sys.argv[1:]]
try:
    runpy.run_module("p2p_cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("HEAVY", sorted(m for m in ("torch", "diffusers") if m in sys.modules), "EXIT", code, file=sys.stderr)
"""


def probe(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


@pytest.mark.parametrize("args, code", [
    (["--help"], 0), (["-h"], 0), (["--version"], 0), (["edit", "-h"], 0),
    (["validate", "recipes/shapes-replace.yaml", "recipes/shapes-photo.yaml"], 0),
    (["edit", "recipes/shapes-replace.yaml", "--steps", "many"], 2),  # an argument error
    (["edit", "recipes/no-such.yaml"], 2),  # an invalid recipe: nothing loads
    (["eval", "pie-bench", "-h"], 0),
    (["eval", "pie-bench", "recipes"], 2),  # not a PIE-Bench folder: checked before anything loads
], ids=["help", "h", "version", "edit-h", "validate", "bad-argument", "missing-recipe", "eval-h", "eval-bad-folder"])
def test_help_validate_and_argument_errors_do_not_import_torch(args, code):
    done = probe(*args)
    assert f"HEAVY [] EXIT {code}" in done.stderr, done.stderr[-2000:]


def test_help_shows_flags_without_a_value_and_offers_completion():
    text = probe("edit", "--help").stdout
    assert "--overwrite" in text and "--threads" in text and "<bool>" not in text and "<list[str]>" not in text
    assert "Usage: p2p edit [OPTIONS] [RECIPE]..." in text  # also as python -m p2p_cli (recipes, or --prompt)
    assert "--install-completion" in probe("--help").stdout
    assert probe("--version").stdout.strip().startswith("p2p ")


def test_validate_uses_the_same_token_ids_as_the_engines_tokenizer():
    from lab.arch import clip_tokenizer as engine_tokenizer
    from p2p_cli.checks import clip_tokenizer

    light, engine = clip_tokenizer(), engine_tokenizer()
    for prompt in ("a big red circle on the left on a white background", "A painting of a squirrel's burger!!",
                   "pea-soup, croutons x3 (red:1.5) naïve café 2024", "   spaces\tand\nlines  "):
        assert light(prompt).input_ids == engine(prompt).input_ids


BROKEN = [
    {"source": "a cat", "edits": [{"target": "a dog", "local_blend": {"words": ["tiger"], "subtract": ["cow"]}}]},
    {"source": "a cat", "edits": [{"target": "a dog", "cross_replace": {"default": 1, "lion": 0.4}},
                                  {"target": "a cat", "reweight": {"happy": 2}}]},
    {"source": "a cat.", "edits": [{"target": "a cat!", "type": "reweight", "reweight": {"cat": 2}}]},
    {"source": "a cat", "edits": [{"target": "a dog cat", "type": "reweight", "reweight": {"cat": 2}}]},
    {"source": " ".join(["cat"] * 80), "negative_prompt": " ".join(["x"] * 90), "edits": [{"target": "a dog"}]},
    {"source": "a cat", "edits": [{"target": "a big dog", "reweight": {"big#2": 2}}]},
]


@pytest.mark.parametrize("data", BROKEN)
def test_the_torch_free_check_finds_what_compiling_the_plan_finds(data, tokenizer):
    from p2p_cli.engine.plan import _compile_edits
    from p2p_cli.recipe import parse_recipe
    from p2p_cli.checks import recipe_problems

    recipe = parse_recipe(json.loads(json.dumps(data)))
    expected = _compile_edits(recipe, tokenizer, recipe.steps)[1]
    assert expected and recipe_problems(recipe, tokenizer) == expected


def test_threads_option_is_on_every_command_that_runs_a_model():
    for command in ("edit", "attn-viz", "invert", "sweep"):
        assert "--threads" in probe(command, "--help").stdout, command


def test_a_generated_record_replays_from_a_copy_anywhere(cli, tmp_path):
    """Bundled model, 2 steps: run.json's recipe copied to another folder (and run.json itself) make the same
    pictures; --threads is what the run used."""
    out = tmp_path / "out"
    result = cli("edit", ROOT / "recipes" / "shapes-replace.yaml", "--steps", 2, "--out", out, "--threads", 1,
                 "--quiet")
    assert result.exit_code == 0, result.output
    run = json.loads((out / "shapes-replace" / "run.json").read_text())
    assert run["recipe"]["model"] == "shapes" and run["threads"] == 1
    copy = tmp_path / "somewhere" / "copy.yaml"
    copy.parent.mkdir()
    copy.write_text(yaml.safe_dump(run["recipe"]))
    assert cli("validate", copy).exit_code == 0
    for source, where in ((copy, tmp_path / "copy"), (out / "shapes-replace" / "run.json", tmp_path / "run")):
        result = cli("edit", source, "--out", where, "--quiet")
        assert result.exit_code == 0, result.output
        for name in ("source.png", "edit-1.png", "baseline-2.png"):
            pair = [np.asarray(Image.open(d / name), np.int16) for d in (out / "shapes-replace",
                                                                           where / "shapes-replace")]
            assert np.abs(pair[0] - pair[1]).max() <= 1, (source, name)


def test_validate_checks_the_picture_and_shows_every_setting(cli, write_recipe, tmp_path):
    bad = write_recipe({"source": "a cat", "image": "missing.png", "edits": [{"target": "a dog"}]}, name="bad")
    result = cli("validate", bad)
    assert result.exit_code == 2 and "  image: no picture at " in result.stderr
    bad = write_recipe({"source": "a cat", "loras": [{"path": "style.safetensors"}], "edits": [{"target": "a dog"}]},
                       name="nolora")
    result = cli("validate", bad)
    assert result.exit_code == 2 and f"  loras[0].path: no file at {bad.parent / 'style.safetensors'}" in result.stderr
    sdxl = cli("validate", ROOT / "recipes" / "sdxl-cat-tiger.yaml").stdout
    assert "guidance: the model family's default (SD 7.5, SDXL 5, SD3 7, FLUX.1 3.5," in sdxl  # a hub id: not known yet
    result = cli("validate", ROOT / "recipes" / "shapes-photo.yaml", ROOT / "recipes" / "shapes-blend.yaml")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"image: {ROOT / 'recipes' / 'pictures' / 'blue-circle.png'}  crop: largest centred box  inversion:" \
           " null-text" in text
    assert "size: native (64x64)" in text and "self_replace_max_res: 16" in text
    assert "self_replace_max_res: 4 (latent side 16 / 4)  blend_res: 8 (of the cross-attention sides [4, 8, 16])" \
        in text
    assert "local blend blue, red above 0.3 of the maximum from step fraction 0.2" in text


def test_several_recipes_in_one_stream(cli, tmp_path):
    one = {"source": "a cat", "edits": [{"target": "a dog"}]}
    two = {"name": "cow", "source": "a cat", "edits": [{"target": "a cow"}]}
    stream = yaml.safe_dump({**one, "name": "dog"}) + "---\n" + yaml.safe_dump(two)
    result = cli("validate", "-", input=stream)
    assert result.exit_code == 0, result.output
    assert "ok -#1\n  name: dog " in result.stdout and "ok -#2\n  name: cow " in result.stdout
    result = cli("validate", "-", input=yaml.safe_dump(one) + "---\n" + yaml.safe_dump(two))  # a name is required
    assert result.exit_code == 2 and "ok -#2\n" in result.stdout
    assert "error: -#1: invalid recipe" in result.stderr and 'name: required in a file of several recipes' in \
        result.stderr and '"name": "recipe-1"' in result.stderr
    one = {**one, "name": "dog"}
    lines = json.dumps(one) + "\n" + json.dumps({**two, "edits": [{"target": "a cow", "cross_replace": 3}]}) + "\n"
    path = tmp_path / "many.jsonl"
    path.write_text(lines)
    result = cli("validate", path)
    assert result.exit_code == 2
    assert f"ok {path}#1\n" in result.stdout
    assert f"error: {path}#2: invalid recipe" in result.stderr and "edits[0].cross_replace (edit-1): tau 3" in \
        result.stderr


def test_warnings_for_likely_mistakes(cli, write_recipe):
    path = write_recipe({"source": "a red cat on a mat", "negative_prompt": "((blurry))", "edits": [
        {"target": "a red cat on a mat"},
        {"target": "a red cat on a mat", "reweight": {"Red": 2, "red": 3}, "baseline": True},
        {"target": "one blue dog in the house", "type": "replace"},
        {"target": "a (red:1.5) cat on a mat"},
    ]}, name="odd")
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    text = "\n".join(warnings)
    assert "edits[3].target (edit-4): '(red:1.5)' looks like another tool's prompt weighting" in text
    assert "reweight: {red: 1.5}" in text and "negative_prompt: '((blurry))' looks like" in text
    assert "edits[1].baseline (edit-2): a reweight edit's prompt is the source's" in text
    assert "edits[0].target (edit-1): the same words as the source and no reweight" in text
    assert "edits[1].reweight (edit-2): 'Red' and 'red' name the same word" in text
    assert "edits[2].target (edit-3): this replace swaps 6 of 6 words" in text
    assert result.stdout.startswith(f"ok {path}")


def test_a_reweight_edit_renders_no_baseline(tokenizer):
    from p2p_cli.engine.plan import compile_plan
    from p2p_cli.recipe import parse_recipe

    recipe = parse_recipe({"source": "a red cat", "baseline": True, "edits": [
        {"target": "a red cat", "reweight": {"red": 2}}, {"target": "a blue cat"}]})
    assert compile_plan(recipe, tokenizer).roles == ["source", "edit-1", "edit-2", "baseline-2"]


def test_attn_viz_after_edit_and_overwrite_keeps_the_others_folders(cli, write_recipe, tiny_model_dir, tmp_path):
    recipe = write_recipe({"name": "r", "source": "a red cube", "size": 128, "steps": 2,
                           "edits": [{"target": "a blue cube"}]})
    args = ("--model", tiny_model_dir, "--out", tmp_path, "--quiet")
    assert cli("edit", recipe, *args).exit_code == 0
    result = cli("attn-viz", recipe, *args, "--components", 0)  # README's next command after make demo
    assert result.exit_code == 0, result.output
    folder = tmp_path / "r"
    assert {"attention", "source.png", "edit-1.png", "run.json"} <= {p.name for p in folder.iterdir()}
    assert (folder / "attention" / "run.json").exists()
    assert cli("attn-viz", recipe, *args).exit_code == 1  # its own folder is there: refused without --overwrite
    assert cli("edit", recipe, *args, "--overwrite").exit_code == 0
    assert (folder / "attention" / "run.json").exists()  # edit --overwrite replaced only what edit writes


def test_null_text_inversion_shows_one_bar_per_phase():
    import io

    from rich.console import Console

    from p2p_cli.cli.common import phase_progress, progress_bar

    bar = progress_bar(Console(file=io.StringIO(), force_terminal=True))
    update, remove = phase_progress(bar, "photo", 3, ["DDIM inversion", "null-text optimisation"])
    update(1, 6)
    assert [(t.description, t.completed, t.total) for t in bar.tasks] == [("photo: DDIM inversion", 1, 3)]
    for done in range(2, 7):
        update(done, 6)
    assert [(t.description, t.completed, t.total) for t in bar.tasks] == [
        ("photo: DDIM inversion", 3, 3), ("photo: null-text optimisation", 3, 3)]
    remove()
    assert not bar.tasks
    update, remove = phase_progress(bar, "photo", 3, ["DDIM inversion", "null-text optimisation"])
    for done in range(1, 4):  # guidance 1: no optimisation, one phase
        update(done, 3)
    assert [(t.description, t.completed) for t in bar.tasks] == [("photo: DDIM inversion", 3)]


def test_words_the_bundled_model_never_saw_and_ddim_at_high_guidance_are_warned(cli, write_recipe, tmp_path):
    picture = ROOT / "recipes" / "pictures" / "blue-circle.png"
    path = write_recipe({"source": "a big blue dog on the left", "image": str(picture), "inversion": "ddim",
                         "edits": [{"target": "a big red dog on the left"}]}, name="dog")
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    assert "source: the bundled shapes model never saw 'dog'; it knows only the words of its captions" in \
        result.stderr
    assert "inversion: ddim at guidance 7.5 drifts" in result.stderr
    quiet = cli("validate", *(ROOT / "recipes").glob("shapes-*.yaml"))
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr  # the demo recipes use its words only
    other = cli("validate", path, "--set", "model=some/model", "--set", "guidance=1")
    assert "warning" not in other.stderr
