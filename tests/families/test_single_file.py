"""Single-file checkpoints: the family comes from the tensor names; offline, a clear error says what to do."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from p2p_cli.models import ModelLoadError, load_model, single_file_family
from p2p_cli.resolve import SINGLE_FILE_KEYS


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_family_from_tensor_names(tmp_path, family):
    path = tmp_path / "model.safetensors"
    save_file({SINGLE_FILE_KEYS[family]: torch.zeros(1), "other.weight": torch.zeros(2)}, str(path))
    assert single_file_family(path) == family


def test_foreign_and_pickled_files_are_refused(tmp_path):
    other = tmp_path / "lora.safetensors"
    save_file({"unet.down.lora_A.weight": torch.zeros(1)}, str(other))
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion 1.x/2.x or SDXL single-file checkpoint"):
        load_model(str(other), device="cpu", dtype="fp32")
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not really")
    with pytest.raises(ModelLoadError, match="only .safetensors single-file checkpoints"):
        load_model(str(pickled), device="cpu", dtype="fp32")


def test_offline_single_file_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    path = tmp_path / "sdxl.safetensors"
    save_file({SINGLE_FILE_KEYS["sdxl"]: torch.zeros(1)}, str(path))
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path), device="cpu", dtype="fp32")
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert str(path) in message and "save_pretrained(folder)" in message and "StableDiffusionXLPipeline" in message
