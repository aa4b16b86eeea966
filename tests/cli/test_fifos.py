"""Every file p2p opens must be a regular file first: a FIFO (or a device) is refused at once, never waited on
(p2p_cli/paths.py is the one helper every reader goes through)."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch

from p2p_cli.paths import NotRegularFile, check_regular, open_regular, read_regular


def finishes(fn, *args, timeout: float = 10.0):
    """fn(*args) in a thread; its result or exception, and fails the test when it is still blocked after timeout."""
    out: list = []

    def run():
        try:
            out.append(("ok", fn(*args)))
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            out.append(("raised", err))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"{getattr(fn, '__name__', fn)} blocked on a FIFO"
    return out[0]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_the_helper_refuses_a_fifo_and_a_device_without_blocking(fifo, tmp_path):
    kind, err = finishes(read_regular, fifo)
    assert kind == "raised" and isinstance(err, NotRegularFile) and "a FIFO" in err.strerror
    with pytest.raises(NotRegularFile, match="character device"):
        check_regular("/dev/null")
    with pytest.raises(NotRegularFile, match="folder"):
        open_regular(tmp_path)
    kind, data = finishes(lambda: open_regular(fifo, pipes=True).read())  # a recipe's pipe without a writer: empty
    assert (kind, data) == ("ok", b"")
    (tmp_path / "f").write_bytes(b"abc")
    assert read_regular(tmp_path / "f", limit=1) == b"ab"


def test_a_fifo_as_model_fails_at_once(cli, tmp_path):
    path = tmp_path / "m.safetensors"
    os.mkfifo(path)
    kind, result = finishes(cli, "edit", "--prompt", "a big [red->blue] circle", "--model", path, "--out",
                            tmp_path / "out", "--quiet")
    assert kind == "ok" and result.exit_code == 1, result.output
    assert "not a regular file (a FIFO)" in result.stderr


def test_a_fifo_in_a_model_folder_fails_at_once(tiny_model_dir, tmp_path):
    from p2p_cli.models import ModelLoadError, load_model

    folder = tmp_path / "model"
    folder.mkdir()
    for part in tiny_model_dir.iterdir():
        (folder / part.name).symlink_to(part)
    (folder / "model_index.json").unlink()
    os.mkfifo(folder / "model_index.json")
    (folder / "unet").unlink()
    (folder / "unet").mkdir()
    for f in (tiny_model_dir / "unet").iterdir():
        (folder / "unet" / f.name).symlink_to(f)
    (folder / "unet" / "config.json").unlink()
    os.mkfifo(folder / "unet" / "config.json")
    kind, err = finishes(load_model, str(folder), "cpu", "fp32")
    assert kind == "raised" and isinstance(err, ModelLoadError) and "not a regular file" in str(err)


def test_a_fifo_at_a_cache_entry_is_dropped(tiny_model, tmp_path):
    from p2p_cli.files.inversion_cache import cached_invert, inversion_key

    picture = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))
    settings = dict(prompt="a big red circle", method="ddim", steps=2, guidance=7.5)
    key = inversion_key(picture, tiny_model, negative_prompt="", null_text=None, geo=None, **settings)["key"]
    os.mkfifo(tmp_path / f"{key}.safetensors")
    warned: list[str] = []
    kind, out = finishes(lambda: cached_invert(tiny_model, picture, **settings, cache=tmp_path, warn=warned.append))
    assert kind == "ok", out
    assert not out[1] and "not a regular file (a FIFO)" in warned[0]
    assert (tmp_path / f"{key}.safetensors").is_file()  # the FIFO is gone, the entry written


def test_show_on_a_fifo(cli, fifo):
    kind, result = finishes(cli, "show", fifo)
    assert kind == "ok" and result.exit_code == 2 and "not a regular file (a FIFO)" in result.stderr


def test_a_recipe_fifo_without_writer_does_not_hang(cli, fifo):
    kind, result = finishes(cli, "validate", fifo)
    assert kind == "ok" and result.exit_code == 2, result.output


@pytest.mark.parametrize("reader", ["dataset_pairs", "resume_run_json", "lora"])
def test_other_readers_refuse_a_fifo(reader, tmp_path, fifo):
    if reader == "dataset_pairs":
        from p2p_cli.analysis.dataset import read_pairs

        kind, err = finishes(read_pairs, fifo)
    elif reader == "resume_run_json":
        from p2p_cli.runs.records import resume_state

        os.rename(fifo, tmp_path / "run.json")
        kind, err = finishes(resume_state, tmp_path, "abc")
        assert (kind, err) == ("ok", None)
        return
    else:
        from p2p_cli.loras import file_sha256

        kind, err = finishes(file_sha256, fifo)
    assert kind == "raised", err
    assert "regular file" in str(err) or "FIFO" in str(err), err
    json.dumps(str(err))
