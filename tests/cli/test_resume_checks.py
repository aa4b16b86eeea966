"""--resume keeps a folder only when every file its run.json lists is there with its recorded size; a damaged
folder of the same recipe is written again in its place. Stale temporary folders of killed runs are removed."""

from __future__ import annotations

import json

import pytest
import yaml

from p2p_cli.files.outputs import SIZES, intact

RECIPE = {"name": "a", "source": "a painting of a squirrel eating a burger", "steps": 2, "size": 128,
          "edits": [{"target": "a painting of a lion eating a burger"}]}


@pytest.fixture
def finished_run(cli, tiny_model_dir, tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "out"
    assert cli("edit", path, "--model", tiny_model_dir, "--out", out, "--quiet").exit_code == 0
    return path, out / "a"


@pytest.mark.parametrize("damage", ["delete", "truncate", "replace-with-link"])
def test_a_folder_that_lost_a_file_is_run_again(cli, tiny_model_dir, finished_run, damage):
    path, folder = finished_run
    record = json.loads((folder / "run.json").read_text())
    assert set(record[SIZES]) >= {"edit-1.png", "source.png", "grid.png"} and "run.json" not in record[SIZES]
    picture = folder / "edit-1.png"
    original = picture.read_bytes()
    if damage == "delete":
        picture.unlink()
    elif damage == "truncate":
        picture.write_bytes(original[:100])
    else:
        picture.unlink()
        picture.symlink_to(folder / "source.png")
    assert not intact(folder, record)
    again = cli("edit", path, "--model", tiny_model_dir, "--out", folder.parent, "--resume")
    assert again.exit_code == 0, again.output
    assert "kept" not in again.stdout and "running a again" in again.stderr
    assert picture.read_bytes() == original and not picture.is_symlink()
    third = cli("edit", path, "--model", tiny_model_dir, "--out", folder.parent, "--resume")
    assert third.exit_code == 0 and f"kept {folder}/" in third.stdout


def test_a_record_that_lists_files_outside_is_not_intact(tmp_path):
    (tmp_path / "x.png").write_bytes(b"12")
    assert intact(tmp_path, {SIZES: {"x.png": 2}})
    assert not intact(tmp_path, {SIZES: {"x.png": 3}})
    assert not intact(tmp_path / "sub", {SIZES: {"../x.png": 2}}) and not intact(tmp_path, {SIZES: {}})
    assert not intact(tmp_path, {SIZES: {"x.png": "2"}}) and not intact(tmp_path, [])
    assert intact(tmp_path, {"images": {"source": "x.png"}})  # a run.json written before sizes were recorded


def test_stale_temporary_folders_of_killed_runs_are_removed(cli, tiny_model_dir, finished_run):
    import subprocess

    path, folder = finished_run
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid whose process is gone
    stale = folder.parent / f".a.tmp-{dead.pid}-0123abcd"
    (stale / "attention").mkdir(parents=True)
    (stale / "edit-1.png").write_bytes(b"half")
    running = subprocess.Popen(["sleep", "60"])
    live = folder.parent / f".a.tmp-{running.pid}-0123abcd"  # a live process's: left alone
    live.mkdir()
    other = folder.parent / f".b.tmp-{dead.pid}-0123abcd"  # another recipe's: not this run's to judge
    other.mkdir()
    try:
        again = cli("edit", path, "--model", tiny_model_dir, "--out", folder.parent, "--resume")
    finally:
        running.kill()
        running.wait()
    assert again.exit_code == 0, again.output
    assert not stale.exists() and live.exists() and other.exists()
    [line] = [line for line in again.stderr.splitlines() if "temporary folder" in line]
    assert line == f"removed 1 temporary folder that killed runs left: {stale}"
