"""The test run's shared loads (tests/shared_loads.py) hand a model out again only while it is as loaded, so that
sharing can never hide a run that changes the model it was given."""

from __future__ import annotations

import pytest
import torch

import p2p_cli.models
from tests.shared_loads import share


def test_a_model_as_loaded_is_shared_and_a_changed_one_is_loaded_again(tmp_path, save_tiny_model):
    folder = share(save_tiny_model(tmp_path / "m"))

    def load():
        return p2p_cli.models.load_model(str(folder), device="cpu", dtype="fp32")

    first = load()
    assert load() is first
    with torch.no_grad():
        next(first.unet.parameters()).add_(1.0)  # a run that changed a weight in place
    second = load()
    assert second is not first and load() is second
    second.unet.set_attn_processor({k: torch.nn.Identity() for k in second.unet.attn_processors})  # not restored
    assert load() is not second


def test_a_folder_not_marked_read_only_loads_from_disk_every_time(tmp_path, save_tiny_model):
    folder = save_tiny_model(tmp_path / "m")
    assert p2p_cli.models.load_model(str(folder), device="cpu", dtype="fp32") is not \
        p2p_cli.models.load_model(str(folder), device="cpu", dtype="fp32")


def test_the_bundled_model_pointed_elsewhere_is_not_shared(monkeypatch, tmp_path):
    monkeypatch.setattr("p2p_cli.models.bundled_weights", lambda: tmp_path / "weights")
    with pytest.raises(p2p_cli.models.ModelLoadError, match="not installed"):
        p2p_cli.models.load_model("shapes", device="cpu", dtype="fp32")
