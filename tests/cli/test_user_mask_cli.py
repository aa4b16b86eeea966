"""A recipe's mask through `p2p edit`: the applied mask is written (mask.png, which the folder's recipe names), a
missing file is exit 2."""

from __future__ import annotations

import json

import numpy as np
import yaml
from PIL import Image

SOURCE = "a painting of a squirrel eating a burger"


def test_a_recipe_with_a_mask_writes_the_applied_mask(cli, tiny_model_dir, tmp_path):
    Image.fromarray(np.tile(np.array([255] * 64 + [0] * 64, dtype=np.uint8), (128, 1))).save(tmp_path / "m.png")
    data = {"name": "masked", "source": SOURCE, "steps": 2, "size": 128, "mask": "m.png",
            "edits": [{"target": "a painting of a lion eating a burger"}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    result = cli("edit", tmp_path / "r.yaml", "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "masked"
    shown = np.asarray(Image.open(folder / "edit-1-mask.png"))
    assert shown[:, :60].min() == 255 and shown[:, 68:].max() == 0
    assert json.loads((folder / "run.json").read_text())["recipe"]["mask"] == "mask.png"  # the folder replays alone
    assert np.array_equal(np.asarray(Image.open(folder / "mask.png")), np.asarray(Image.open(tmp_path / "m.png")))
    data["mask"] = "missing.png"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    bad = cli("edit", tmp_path / "r.yaml", "--model", tiny_model_dir, "--out", tmp_path / "out2")
    assert bad.exit_code == 2 and "mask:" in bad.stderr
