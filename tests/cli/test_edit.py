"""`p2p edit` end to end on a tiny random model saved like a real one (CPU, 128 px, 3 steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from p2p_cli.recipe import parse_recipe
from p2p_cli.render.grid import PAD


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_images_grid_and_run_json(small, cli, write_recipe, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    result = cli("edit", write_recipe(), "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 0, result.output
    folder = out / "small"
    assert files_in(out) == ["small"]  # no temporary folder left behind
    assert files_in(folder) == ["edit-1-mask-over.png", "edit-1-mask.png", "edit-1.png", "edit-2.png", "grid.png",
                                "run.json", "source.png"]
    for name in ("source.png", "edit-1.png", "edit-2.png", "edit-1-mask.png", "edit-1-mask-over.png"):
        assert Image.open(folder / name).size == (128, 128)
    grid = Image.open(folder / "grid.png")
    assert grid.width == 3 * (128 + PAD) + PAD  # source, edit-1, edit-2 on one row
    assert 2 * (128 + 2 * PAD) < grid.height < 4 * 128  # the images, and edit-1's blend mask under it
    assert result.stdout.startswith(f"wrote {folder}/ (3 images, ")
    assert result.stdout.count("\n") == 1

    run = json.loads((folder / "run.json").read_text())
    assert run["name"] == "small" and run["seed"] == 8888
    assert run["model"] == {"id": str(tiny_model_dir.resolve()), "revision": None, "path": str(tiny_model_dir.resolve())}
    assert run["device"] == "cpu" and run["dtype"] == "fp32" and run["attention"] == "fused"
    assert set(run["versions"]) >= {"torch", "diffusers", "transformers", "p2p"}
    assert set(run["seconds"]) >= {"plan", "encode", "sample", "decode", "total"}
    assert run["images"]["grid"] == "grid.png" and run["images"]["edit-1-mask"] == "edit-1-mask.png"
    assert run["prompts"]["edit-2"] == small["edits"][1]["target"]
    recipe = run["recipe"]
    assert [e["type"] for e in recipe["edits"]] == ["replace", "refine"]  # inferred
    assert recipe["edits"][0]["cross_replace"] == {"default": [0.0, 0.8]}  # defaults filled in
    assert recipe["edits"][0]["self_replace"] == [0.0, 0.4]
    assert recipe["size"] == [128, 128] and recipe["steps"] == 3 and recipe["guidance"] == 7.5
    assert parse_recipe(recipe).edits[1].target == small["edits"][1]["target"]  # loadable as a recipe again


def test_json_is_the_only_stdout_and_the_model_loads_once(small, cli, write_recipe, tiny_model_dir, tmp_path):
    first = write_recipe()
    second = write_recipe({**small, "name": "other", "edits": small["edits"][1:]}, name="other")
    result = cli("edit", first, second, "--model", tiny_model_dir, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["name"] for line in lines] == ["small", "other"]
    assert lines[0]["out"] == str(tmp_path / "out" / "small")
    assert os.path.exists(lines[1]["images"]["edit-1"]) and os.path.exists(lines[0]["run"])
    assert set(lines[0]["seconds"]) >= {"sample", "total"}
    assert result.stderr.count("loading model") == 1


def test_baselines_go_under_their_edits(cli, write_recipe, tiny_model_dir, tmp_path):
    result = cli("edit", write_recipe(), "--model", tiny_model_dir, "--out", tmp_path, "--baseline", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert {"baseline-1.png", "baseline-2.png"} <= set(files_in(tmp_path / "small"))
    grid = Image.open(tmp_path / "small" / "grid.png")
    assert grid.height > 2 * 128  # a second row


def test_existing_folder_is_kept_unless_overwrite(cli, write_recipe, tiny_model_dir, tmp_path):
    recipe = write_recipe()
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    result = cli("edit", recipe, "--model", tiny_model_dir, "--out", tmp_path)
    assert result.exit_code == 1
    assert f"{folder}/ already exists; pass --overwrite" in result.stderr
    assert files_in(folder) == ["mine.txt"] and files_in(tmp_path) == ["small", "small.yaml"]
    assert "loading model" not in result.stderr  # refused before any work

    result = cli("edit", recipe, "--model", tiny_model_dir, "--out", tmp_path, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "mine.txt" not in files_in(folder) and "run.json" in files_in(folder)
    assert files_in(tmp_path) == ["small", "small.yaml"]


def test_recipe_from_stdin(cli, tiny_model_dir, tmp_path):
    text = "source: a photo of a house on a mountain\nsize: 128\nsteps: 2\nedits:\n  - target: a photo of a house on a mountain at fall\n"
    result = cli("edit", "-", "--model", tiny_model_dir, "--out", tmp_path, input=text)
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "recipe" / "run.json").read_text())  # named "recipe" when it has no name
    assert run["recipe_file"] == "-" and run["recipe"]["edits"][0]["type"] == "refine"


def test_set_overrides_fields_before_validation(cli, write_recipe, tiny_model_dir, tmp_path):
    result = cli("edit", write_recipe(), "--model", tiny_model_dir, "--out", tmp_path, "--steps", "2", "--seed", "7",
                 "--set", "edits.0.cross_replace=0.6", "--set", "guidance=5", "--set", "name=tuned")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "tuned" / "run.json").read_text())
    assert run["recipe"]["edits"][0]["cross_replace"] == {"default": [0.0, 0.6]}
    assert run["recipe"]["guidance"] == 5 and run["recipe"]["steps"] == 2 and run["seed"] == 7
    assert run["overrides"] == ["edits.0.cross_replace=0.6", "guidance=5", "name=tuned", "steps=2", "seed=7"]


@pytest.mark.parametrize(
    "assignment, line",
    [
        ("edits.0.cross_replace=1.5", "edits[0].cross_replace (edit-1): tau 1.5 is outside [0, 1]"),
        ("edits.5.target=a cat", "--set edits.5.target=a cat: edits[5] does not exist (edits has 2 items)"),
        ("guidance", "--set guidance: expected KEY=VALUE, e.g. --set edits.0.cross_replace=0.6"),
    ],
)
def test_bad_set_is_an_invalid_recipe(cli, write_recipe, tmp_path, assignment, line):
    result = cli("edit", write_recipe(), "--model", tmp_path / "nowhere", "--out", tmp_path / "out", "--set", assignment)
    assert result.exit_code == 2
    assert f"  {line}\n" in result.stderr
    assert not (tmp_path / "out").exists()


def test_one_invalid_recipe_stops_all_before_any_model(small, cli, write_recipe, tmp_path):
    good = write_recipe()
    bad = write_recipe({**small, "steps": 0}, name="bad")
    result = cli("edit", good, bad, "--model", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.exit_code == 2  # the model folder is never looked at: that would be exit 1
    assert f"error: {bad}: invalid recipe (1 problem)\n  steps: Input should be greater than or equal to 1" in result.stderr
    assert not (tmp_path / "out").exists() and result.stdout == ""


def test_tokenizer_problems_are_reported_before_sampling(small, cli, write_recipe, tiny_model_dir, tmp_path):
    data = {**small, "edits": [{**small["edits"][0], "local_blend": {"words": ["tiger"]}}]}
    result = cli("edit", write_recipe(data), "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert '  edits[0].local_blend.words (edit-1): "tiger" is in neither prompt;' in result.stderr
    assert not (tmp_path / "out" / "small").exists()


def test_missing_model_folder_is_exit_1_without_traceback(cli, write_recipe, tmp_path):
    result = cli("edit", write_recipe(), "--model", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"\nerror: cannot load the model: no model folder at {tmp_path / 'nowhere'};" in result.stderr
    assert "Traceback" not in result.stderr
    debug = cli("edit", write_recipe(), "--model", tmp_path / "nowhere", "--out", tmp_path / "out", "--debug")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr
    env = cli("edit", write_recipe(), "--model", tmp_path / "nowhere", "--out", tmp_path / "out", env={"P2P_DEBUG": "1"})
    assert "Traceback" in env.stderr


def test_bundled_model_missing_says_so(cli, write_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr("p2p_cli.models.bundled_weights", lambda: tmp_path / "weights")
    result = cli("edit", write_recipe(), "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "the bundled shapes model is not installed" in result.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_exit_1(cli, write_recipe, tiny_model_dir, tmp_path):
    result = cli("edit", write_recipe(), "--model", tiny_model_dir, "--out", tmp_path, "--device", "cuda")
    assert result.exit_code == 1
    assert "CUDA is not available on this machine: use --device cpu" in result.stderr


def test_usage_errors_are_exit_2(cli, write_recipe, tmp_path):
    assert cli("edit", "-", "-", input="").exit_code == 2
    assert cli("edit", write_recipe(), "--device", "tpu").exit_code == 2
    assert cli("edit").exit_code == 2
    clash = cli("edit", write_recipe(), write_recipe(), "--model", tmp_path, "--out", tmp_path)
    assert clash.exit_code == 2 and "would both write" in clash.stderr


def test_hub_id_offline_fails_fast_with_advice(write_recipe, tmp_path):
    """Through the console script in a fresh process, so the hub library sees HF_HUB_OFFLINE at import."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    tic = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "p2p_cli", "edit", str(write_recipe()), "--model", "CompVis/stable-diffusion-v1-4",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert time.perf_counter() - tic < 60  # import time on a busy machine; no network retries
    assert "CompVis/stable-diffusion-v1-4 is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in proc.stderr
    assert "pass --model with a local folder" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out").exists()
