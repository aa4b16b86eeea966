"""The commands on tiny random SD3 and FLUX.1 models saved by their own diffusers pipelines, loaded through the
same path as a hub snapshot (the family is found from the components)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.cli.conftest import SMALL


@pytest.fixture(scope="module", params=["sd3", "flux"])
def joint_dir(request, tmp_path_factory, save_tiny_model):
    return request.param, save_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), family=request.param)


@pytest.fixture
def recipe_file(tmp_path):
    def write(**top):
        data = {**json.loads(json.dumps(SMALL)), "name": "joint", "steps": 2, **top}
        path = tmp_path / "joint.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return write


def test_edit_writes_the_usual_folder_and_records_the_family(cli, joint_dir, recipe_file, tmp_path):
    family, folder = joint_dir
    out = tmp_path / "out"
    result = cli("edit", recipe_file(), "--model", folder, "--out", out, "--baseline")
    assert result.exit_code == 0, result.output
    names = {p.name for p in (out / "joint").iterdir()}
    assert {"source.png", "edit-1.png", "edit-2.png", "baseline-1.png", "grid.png", "run.json"} <= names
    run = json.loads((out / "joint" / "run.json").read_text())
    assert run["family"] == family
    assert run["recipe"]["guidance"] == {"sd3": 7.0, "flux": 3.5}[family]  # the family's default, resolved


def test_validate_shows_the_blocks_not_the_unet_keys(cli, joint_dir, recipe_file):
    family, folder = joint_dir
    result = cli("validate", recipe_file(model=str(folder), self_blocks=[0]))
    assert result.exit_code == 0, result.output
    text = result.stdout + result.stderr
    assert "self_blocks: [0]" in text and "self_replace_max_res" not in text
    assert {"sd3": "guidance: 7 ", "flux": "guidance: 3.5 "}[family] in text


def test_unet_keys_fail_with_the_fix(cli, joint_dir, recipe_file, tmp_path):
    _, folder = joint_dir
    result = cli("edit", recipe_file(self_replace_max_res=8), "--model", folder, "--out", tmp_path / "out")
    assert result.exit_code != 0
    assert "self_replace_max_res:" in result.stderr and "self_blocks" in result.stderr
    assert not (tmp_path / "out" / "joint").exists()
