"""Pictures that must not be trusted: a FIFO is refused at once, a decompression bomb is one clear line."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from p2p_cli.render.load import ImageError, check_picture, load_image


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "picture.png"
    os.mkfifo(fifo)
    caught = []
    worker = threading.Thread(target=lambda: caught.append(pytest.raises(ImageError, check_picture, fifo)),
                              daemon=True)  # the old loader blocked in open() forever
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "open_picture blocked on a FIFO"
    assert "is not a regular file (a pipe, socket or device)" in str(caught[0].value)


def test_a_decompression_bomb_is_one_line_not_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 = 1600: above the warning, below the error
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        with pytest.raises(ImageError) as caught:
            load_image(path, (32, 32))
    assert str(caught.value) == (f"{path} has more than 1,000 pixels, the most p2p reads (Pillow's decompression-bomb"
                                 " limit, Image.MAX_IMAGE_PIXELS); scale it down first")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(path)  # above the error limit: the same line
    with pytest.raises(ImageError, match="has more than 1,000 pixels"):
        check_picture(path)


def test_the_cli_refuses_a_fifo_before_the_model_loads(cli, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = cli("invert", fifo, "--prompt", "a cat", "--model", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "is not a regular file" in result.stderr and "loading model" not in result.stderr
