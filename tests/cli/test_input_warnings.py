"""Inputs the model cannot handle well say so before anything runs: a size far from the native one, a centre
crop that cuts away much of the picture."""

from __future__ import annotations

import numpy as np
import yaml
from PIL import Image

from p2p_cli.checks import crop_warning, size_warning


def test_size_and_crop_rules():
    assert size_warning((64, 64), 64) is None and size_warning((128, 96), 64) is None
    assert "far above this model's native 64x64 (16x the pixels)" in size_warning((256, 256), 64)
    assert "far below" in size_warning((512, 512), 1024 * 4)
    assert crop_warning((640, 512), (64, 64)) is None  # keeps 80 %
    assert "keeps 50% of the 1024x512 picture" in crop_warning((1024, 512), (64, 64))


def test_validate_warns_about_them_on_the_bundled_model(cli, tmp_path):
    Image.fromarray(np.zeros((64, 160, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    data = {"source": "a big red circle in the center on a white background", "image": "wide.png",
            "edits": [{"target": "a big blue circle in the center on a white background"}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    result = cli("validate", tmp_path / "r.yaml")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "the centre crop keeps 40% of the 160x64 picture" in result.stderr
    data.pop("image")
    data["size"] = 512
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    result = cli("validate", tmp_path / "r.yaml")
    assert result.exit_code == 0 and "size: 512x512 is far above this model's native 64x64" in result.stderr
