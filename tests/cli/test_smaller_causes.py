"""Smaller things a user met: validate checks a local model path, an empty pairs file is an error, and the
inversion cache's warnings are the tool's `warning:` lines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_validate_refuses_a_missing_local_model(cli, tmp_path):
    path = tmp_path / "r.yaml"
    for model in ("./nope", str(tmp_path / "nope"), "~/nope-p2p", "a/b/c"):
        path.write_text(f"model: {model}\nsource: a cat\nedits: [{{target: a dog}}]\n")
        result = cli("validate", path)
        assert result.exit_code == 2, (model, result.output)
        assert f"model: no model folder or file at {model}" in result.stderr
    for model in ("shapes", "shapes-mmdit", "someone/some-model", str(tmp_path)):  # fine here (a hub id: on load)
        path.write_text(f"model: {model}\nsource: a cat\nedits: [{{target: a dog}}]\n")
        assert "model: no model" not in cli("validate", path).stderr, model


def test_an_empty_pairs_file_is_exit_2(cli, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n  \n")
    result = cli("dataset", pairs, "--out", tmp_path / "out", "--clip", "none", "--keep", "none")
    assert result.exit_code == 2, result.output
    assert "holds no caption pairs" in result.stderr and not (tmp_path / "out").exists()


def test_cache_warnings_are_warning_lines(tmp_path):
    script = textwrap.dedent("""
        import warnings
        from p2p_cli.cli.errors import handled
        from p2p_cli.files import FileWarning
        with handled():
            warnings.warn("the cached inversion x is damaged (...); removed it and inverting again", FileWarning)
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.stderr == "warning: the cached inversion x is damaged (...); removed it and inverting again\n"


def test_the_cache_warns_with_the_tools_category(tiny_model, tmp_path):
    import warnings

    import torch

    from p2p_cli.files import FileWarning
    from p2p_cli.files.inversion_cache import cached_invert, inversion_key

    picture = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(2))
    settings = dict(prompt="a big red circle", method="ddim", steps=2, guidance=7.5)
    key = inversion_key(picture, tiny_model, **settings)["key"]
    (tmp_path / f"{key}.safetensors").write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached_invert(tiny_model, picture, **settings, cache=tmp_path)
    assert [w.category for w in caught if "cached inversion" in str(w.message)] == [FileWarning]
