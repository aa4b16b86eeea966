"""models.load_model: local save_pretrained folders, scheduler settings, safetensors only, offline hub ids."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file

from p2p_cli.models import ModelLoadError, load_model, pick_device, pick_dtype


def test_local_folder_loads_every_part(tiny_model_dir):
    model = load_model(str(tiny_model_dir), device="cpu")
    assert model.id == model.path == str(tiny_model_dir.resolve()) and model.revision is None
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.native_size == (128, 128)
    assert type(model.scheduler).__name__ == "DDIMScheduler"
    assert model.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]


def test_scheduler_gets_sd_ddim_settings_only_where_missing(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "prediction_type": "v_prediction", "skip_prk_steps": True}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    sched = load_model(str(folder), device="cpu").scheduler.config
    assert sched.prediction_type == "v_prediction"  # the model's own
    assert (sched.clip_sample, sched.set_alpha_to_one, sched.steps_offset) == (False, False, 1)  # SD DDIM


def test_pickle_weights_need_allow_pickle(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    unet = folder / "unet"
    torch.save(load_file(unet / "diffusion_pytorch_model.safetensors"), unet / "diffusion_pytorch_model.bin")
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="only pickle weights found; pass --allow-pickle"):
        load_model(str(folder), device="cpu")
    assert load_model(str(folder), device="cpu", allow_pickle=True).unet is not None


def test_not_a_model_folder(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelLoadError, match=r"is not a diffusers model folder: missing vae/, text_encoder/"):
        load_model(str(tmp_path), device="cpu")
    with pytest.raises(ModelLoadError, match="no model folder at ./nowhere"):
        load_model("./nowhere", device="cpu")


def test_bundled_model_missing(tmp_path, monkeypatch):
    monkeypatch.setattr("p2p_cli.models.bundled_weights", lambda: tmp_path)
    for spec in (None, "shapes"):
        with pytest.raises(ModelLoadError, match="the bundled shapes model is not installed"):
            load_model(spec, device="cpu")


def test_hub_id_offline_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tic = time.perf_counter()
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        load_model("someone/no-such-model-p2p-test", device="cpu")
    assert time.perf_counter() - tic < 5


def test_device_and_dtype_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert pick_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        pick_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            pick_device("cuda")
