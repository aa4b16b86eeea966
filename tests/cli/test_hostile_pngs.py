"""Hostile pictures and command lines are the input's fault: exit 2 with one line, never "unexpected" (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def _png(path, texts=None, size=(8, 8), ztxt=None):
    info = PngInfo()
    for key, value in (texts or {}).items():
        info.add_text(key, value)
    if ztxt is not None:
        key, data = ztxt
        info.add(b"zTXt", key.encode() + b"\0\0" + zlib.compress(data, 9))
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("case", ["bomb", "ztxt-200mb", "invalid-recipe", "5mb-recipe", "deep-recipe", "not-png"])
def test_show_and_edit_refuse_with_exit_2(cli, tmp_path, monkeypatch, case):
    path = tmp_path / "x.png"
    if case == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 is above it
        _png(path, {"p2p-recipe": "{}"}, size=(40, 40))
    elif case == "ztxt-200mb":
        _png(path, ztxt=("p2p-recipe", b" " * 200_000_000))
    elif case == "invalid-recipe":
        _png(path, {"parameters": "a cat", "p2p-recipe": "{not json"})
    elif case == "5mb-recipe":
        _png(path, {"p2p-recipe": json.dumps({"source": "a" * 5_000_000, "edits": []})})
    elif case == "deep-recipe":
        _png(path, {"p2p-recipe": "[" * 100_000 + "]" * 100_000})
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    shown = cli("show", path)
    assert shown.exit_code == 2, shown.output
    assert "unexpected" not in shown.stderr and str(path) in shown.stderr
    edited = cli("edit", path, "--out", tmp_path / "out")
    assert edited.exit_code == 2, edited.output
    assert "unexpected" not in edited.stderr and not (tmp_path / "out").exists()


def _run(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "p2p_cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, **kwargs)


def test_closed_stdin_is_exit_2(tmp_path):
    done = _run(["validate", "-"], preexec_fn=lambda: os.close(0))
    assert done.returncode == 2, done.stderr
    assert "standard input is closed" in done.stderr and "unexpected" not in done.stderr


def test_threads_past_any_cpu_is_exit_2(cli, tmp_path):
    result = cli("edit", "--prompt", "a big [red->blue] circle", "--threads", "99999999999999999999", "--out",
                 tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "--threads 99999999999999999999: at most 1024" in result.stderr
