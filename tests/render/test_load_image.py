"""Pictures -> tensors at the model's size: the crop and resize rules, mode conversion, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from p2p_cli.render.load import ImageError, check_picture, load_image


def save(tmp_path, array: np.ndarray, name: str = "pic.png", mode: str | None = None):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_centre_crop_keeps_the_middle_and_resizes(tmp_path):
    """A 300x100 picture: the centre 100x100 (green) survives, the red and blue sides are cut."""
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:200] = (0, 255, 0)
    pixels[:, 200:] = (0, 0, 255)
    image = load_image(save(tmp_path, pixels), (64, 64))
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert torch.equal(image, torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 64, 64))


def test_centre_crop_to_a_non_square_size(tmp_path):
    """A tall picture cropped to a wide output cuts top and bottom (size is (h, w))."""
    pixels = np.zeros((300, 100, 3), np.uint8)
    pixels[100:150] = 255
    image = load_image(save(tmp_path, pixels), (32, 64))  # aspect 2: the middle 100x50 rows 125..175
    assert image.shape == (3, 32, 64)
    assert image[:, :15].min() > 0.98 and image[:, 17:].max() < 0.02  # rows 125..150 white, 150..175 black


def test_explicit_crop_box_is_used(tmp_path):
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[10:50, 150:190] = (255, 255, 255)
    image = load_image(save(tmp_path, pixels), (40, 40), crop=(150, 10, 190, 50))
    assert image.shape == (3, 40, 40) and image.min() == 1.0  # exactly the white square, no resize needed


def test_rgba_goes_over_white_and_grey_becomes_rgb(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:32, :, :] = (255, 0, 0, 255)  # opaque red top, transparent bottom
    image = load_image(save(tmp_path, rgba, "a.png"), (64, 64))
    assert torch.equal(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0])) and image[:, 63, 0].min() == 1.0
    grey = np.full((64, 64), 128, np.uint8)
    image = load_image(save(tmp_path, grey, "g.png"), (64, 64))
    assert image.shape == (3, 64, 64) and torch.allclose(image, torch.full_like(image, 128 / 255))
    grey16 = np.full((64, 64), 128 * 257, np.uint16)
    image = load_image(save(tmp_path, grey16, "g16.png"), (64, 64))
    assert torch.allclose(image, torch.full_like(image, 128 / 255))


@pytest.mark.parametrize(
    "make, crop, message",
    [
        (lambda d: d / "nothing.png", None, "no picture at"),
        (lambda d: d, None, "is a folder, not a picture"),
        (lambda d: (d / "junk.png").write_bytes(b"not a picture at all") and d / "junk.png", None,
         "is not a picture Pillow can read"),
        (lambda d: save(d, np.zeros((20, 200, 3), np.uint8)), None, "is too small: it is 200x20 px, and this model"
         " needs at least 32 px a side (it works at 128x128)"),
        (lambda d: save(d, np.zeros((200, 200, 3), np.uint8)), (0, 0, 20, 20), "is too small: its crop is 20x20 px"),
        (lambda d: save(d, np.zeros((200, 200, 3), np.uint8)), (0, 0, 300, 100), "crop [0, 0, 300, 100] goes outside"
         " the 200x200 picture"),
        (lambda d: save(d, np.zeros((200, 200, 3), np.uint8)), (0, 0, 200, 100), "crop [0, 0, 200, 100] is 200x100 px,"
         " but the model makes 128x128 pictures; give a box of that shape (e.g. [0, 0, 100, 100])"),
    ],
    ids=["missing", "folder", "unreadable", "tiny", "tiny-crop", "crop-outside", "crop-aspect"],
)
def test_bad_pictures_give_clear_errors(tmp_path, make, crop, message):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=None) as info:
        load_image(path, (128, 128), crop)
    assert message in str(info.value)


def test_truncated_file_is_unreadable(tmp_path):
    path = save(tmp_path, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageError, match="cannot read|not a picture"):
        check_picture(path)
