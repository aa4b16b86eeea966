"""Output paths are checked before any model loads; --overwrite replaces a link, never what it points to; nothing
is left behind (no .NAME.tmp-* or .NAME.old-* siblings), also on a full disk."""

from __future__ import annotations

import errno

import pytest

from p2p_cli.files.outputs import OutputPathError, atomic_folder, check_free
from tests.cli.conftest import SMALL


def entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_out_that_is_a_file_is_a_usage_error_before_the_model(cli, write_recipe, tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    result = cli("edit", write_recipe(), "--model", tmp_path / "nowhere", "--out", out)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --out {out}: {out} exists and is not a folder; pass another --out\n"
    below = cli("edit", write_recipe(), "--model", tmp_path / "nowhere", "--out", out / "deeper")
    assert below.exit_code == 2 and f"{out} exists and is not a folder" in below.stderr


def test_a_name_taken_by_a_file_fails_only_its_own_recipe(small, cli, write_recipe, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "taken").write_text("mine")
    taken = write_recipe({**small, "name": "taken", "steps": 2}, name="taken")
    free = write_recipe({**small, "name": "free", "steps": 2}, name="free")
    result = cli("edit", taken, free, "--model", tiny_model_dir, "--out", out, "--overwrite")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {out / 'taken'} exists and is not a folder; move it away")
    assert result.stderr.count("loading model") == 1 and result.stderr.index("exists and") < result.stderr.index(
        "loading model")  # found before any model loads
    assert entries(out) == ["free", "taken"] and (out / "taken").read_text() == "mine"


def test_a_dangling_link_is_refused_up_front_and_overwrite_replaces_the_link(cli, write_recipe, tiny_model_dir,
                                                                            tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "small").symlink_to(tmp_path / "gone")
    recipe = write_recipe({**SMALL, "steps": 2})
    result = cli("edit", recipe, "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert f"{out / 'small'} is a symbolic link to {tmp_path / 'gone'} (which does not exist)" in result.stderr
    assert "loading model" not in result.stderr
    result = cli("edit", recipe, "--model", tiny_model_dir, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert entries(out) == ["small"] and not (out / "small").is_symlink() and "run.json" in entries(out / "small")


def test_overwrite_replaces_a_link_to_a_folder_and_leaves_its_target_alone(tmp_path):
    target = tmp_path / "elsewhere"
    (target / "sweep").mkdir(parents=True)
    (target / "precious.png").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "run").symlink_to(target)
    with pytest.raises(OutputPathError, match="p2p does not write through links"):
        check_free(out / "run", overwrite=False)
    with atomic_folder(out / "run", overwrite=True) as tmp:
        (tmp / "new.png").write_text("new")
    assert entries(out) == ["run"]  # no .run.old-PID-... link left behind
    assert not (out / "run").is_symlink() and entries(out / "run") == ["new.png"]
    assert entries(target) == ["precious.png", "sweep"]  # neither deleted nor moved


def test_too_long_a_name_for_the_file_system_is_refused(tmp_path):
    with pytest.raises(OutputPathError, match="the name is too long for this file system"):
        check_free(tmp_path / ("x" * 240), overwrite=False)


def test_a_full_disk_while_writing_leaves_nothing(small, cli, write_recipe, tiny_model_dir, tmp_path, monkeypatch):
    import p2p_cli.files.outputs as outputs

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(outputs, "write_json", full)  # run.json, written last inside the temporary folder
    out = tmp_path / "out"
    result = cli("edit", write_recipe({**small, "steps": 2}), "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert "No space left on device: " in result.stderr and "Traceback" not in result.stderr
    assert entries(out) == []  # the half-written temporary folder is gone


def test_diverged_sampling_fails_its_recipe_and_writes_no_pictures(small, cli, write_recipe, tiny_model_dir, tmp_path):
    """guidance 1e30 makes NaN latents; they were decoded into flat pictures with exit 0."""
    wild = write_recipe({**small, "name": "wild", "steps": 2, "guidance": 1e30}, name="wild")
    calm = write_recipe({**small, "name": "calm", "steps": 2}, name="calm")
    out = tmp_path / "out"
    result = cli("edit", wild, calm, "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert (f"error: {wild}: sampling diverged for source, edit-1, edit-2 (NaN, infinite or huge latent values), so"
            " nothing was written; lower guidance (1e+30)") in result.stderr
    assert entries(out) == ["calm"]  # the next recipe still ran


@pytest.mark.parametrize("kind", ["proc", "long-name", "long-path"])
def test_out_problems_are_exit_2_before_loading_with_a_short_message(cli, tmp_path, kind):
    out = {"proc": "/proc/p2p", "long-name": str(tmp_path / ("x" * 300)),
           "long-path": str(tmp_path / "/".join(["d" * 100] * 50))}[kind]
    result = cli("edit", "--prompt", "a big [red->blue] circle", "--out", out, "--steps", 2)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --out ") and "loading model" not in result.stderr
    assert len(result.stderr) < 400 and "unexpected" not in result.stderr
