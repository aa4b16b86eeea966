"""SIGINT, SIGTERM and a closed stdout: the command stops, removes what is unfinished, says what it kept, and
exits 130, 143 or 141 (quietly), without a traceback; an interrupt is never lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _send_during(monkeypatch, module: str, name: str, sig: int, swallow: bool = False, after: bool = False):
    """Make module.name send `sig` to this process when called (optionally inside code that swallows it)."""
    import importlib

    mod = importlib.import_module(module)
    original = getattr(mod, name)

    def wrapped(*args, **kwargs):
        if after:
            result = original(*args, **kwargs)
        if swallow:
            try:
                os.kill(os.getpid(), sig)
                time.sleep(0.05)  # the handler runs here, inside the try
            except BaseException:  # noqa: BLE001 - what careless library code does
                pass
        else:
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
        return result if after else original(*args, **kwargs)

    monkeypatch.setattr(mod, name, wrapped)


def test_sigterm_while_writing_removes_the_unfinished_folder_and_says_what_was_kept(
        cli, write_recipe, tiny_model_dir, tmp_path, monkeypatch):
    first = write_recipe({**SMALL, "name": "first", "steps": 2}, name="first")
    second = write_recipe({**SMALL, "name": "second", "steps": 2}, name="second")
    calls = []
    import p2p_cli.render.grid as grid

    original = grid.save_grid

    def save_grid(*args, **kwargs):  # the second recipe's grid: SIGTERM while its folder is being written
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        return original(*args, **kwargs)

    monkeypatch.setattr(grid, "save_grid", save_grid)
    out = tmp_path / "out"
    result = cli("edit", first, second, "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 143, result.output
    assert entries(out) == ["first"]  # no .second.tmp-PID-... left behind
    assert "run.json" in entries(out / "first")
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: interrupted (SIGTERM): kept the finished folder {out / 'first'}/; nothing was written" \
                   " for the unfinished work"
    assert "Traceback" not in result.stderr
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handler is back


def test_a_swallowed_sigint_while_writing_is_not_lost(cli, write_recipe, tiny_model_dir, tmp_path, monkeypatch):
    """Library code that catches everything (or an interrupt landing in a __del__) must not turn Ctrl-C into exit 0."""
    _send_during(monkeypatch, "p2p_cli.render.grid", "save_grid", signal.SIGINT, swallow=True)
    out = tmp_path / "out"
    result = cli("edit", write_recipe({**SMALL, "steps": 2}), "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 130, result.output
    assert entries(out) == []  # absent: the commit did not happen
    assert "interrupted (SIGINT): nothing was written for the unfinished work" in result.stderr
    assert result.stdout == ""


def test_an_interrupt_during_the_rename_leaves_the_folder_whole_and_says_so(tmp_path, monkeypatch):
    from p2p_cli.files import interrupts, outputs

    _send_during(monkeypatch, "p2p_cli.files.outputs", "_commit", signal.SIGINT, after=True)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    outputs.finished.clear()
    with interrupts.handlers():
        with pytest.raises(interrupts.Interrupted) as caught:
            with outputs.atomic_folder(folder, overwrite=True) as tmp:
                (tmp / "new.txt").write_text("new")
    assert caught.value.code == 130
    assert entries(tmp_path) == ["run"] and entries(folder) == ["new.txt"]  # whole, the old one gone
    assert outputs.finished == [folder]


def _p2p(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([sys.executable, "-m", "p2p_cli", *map(str, args)], env=env, cwd=REPO, **kwargs)


def test_ctrl_c_while_importing_is_exit_130_without_traceback(write_recipe, tmp_path):
    """The console script installs its handlers before the heavy imports (torch, diffusers, typer). `edit`, whose
    imports take seconds: `validate` imports no torch and could finish within the half second."""
    proc = _p2p("edit", write_recipe(), "--out", tmp_path / "out", stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True)
    time.sleep(0.5)  # torch and typer are still being imported
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted (SIGINT)")


def test_sigterm_in_a_real_process_while_sampling(write_recipe, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    proc = _p2p("edit", write_recipe({**SMALL, "steps": 400}), "--model", tiny_model_dir, "--out", out,
                stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen = ""
    while "400 steps" not in seen:  # its log line: sampling has begun
        line = proc.stderr.readline()
        assert line, f"the command ended early: {seen}"
        seen += line
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, seen + stderr
    assert stderr.strip().endswith("interrupted (SIGTERM): nothing was written for the unfinished work")
    assert "Traceback" not in stderr and stdout == "" and entries(out) == []


def test_a_closed_stdout_stops_the_command_quietly(small, cli, write_recipe, tiny_model_dir, tmp_path, monkeypatch):
    """The JSON line of the first recipe meets a closed pipe: no error line, exit 141, the second recipe not run."""
    import p2p_cli.cli.jobs as edit

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(edit, "print", closed, raising=False)
    first = write_recipe({**small, "name": "first", "steps": 2}, name="first")
    second = write_recipe({**small, "name": "second", "steps": 2}, name="second")
    out = tmp_path / "out"
    result = cli("edit", first, second, "--model", tiny_model_dir, "--out", out, "--json", "--quiet")
    assert result.exit_code == 141, result.output
    assert result.stderr == ""
    assert entries(out) == ["first"] and "run.json" in entries(out / "first")


@pytest.mark.slow
def test_a_closed_stdout_stops_quietly_and_leaves_no_half_folder(small, write_recipe, tiny_model_dir, tmp_path):
    """`p2p edit a.yaml b.yaml --json | head -1`: the reader is gone before the first line is written."""
    first = write_recipe({**small, "name": "first", "steps": 2}, name="first")
    second = write_recipe({**small, "name": "second", "steps": 2}, name="second")
    read, write = os.pipe()
    os.close(read)  # as `head` does once it has its line
    out = tmp_path / "out"
    proc = _p2p("edit", first, second, "--model", tiny_model_dir, "--out", out, "--json", "--quiet",
                stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 141, stderr
    assert stderr == ""  # no "Broken pipe" line, no "Exception ignored" at exit
    assert entries(out) == ["first"] and "run.json" in entries(out / "first")  # whole; then it stopped
    json.loads((out / "first" / "run.json").read_text())
