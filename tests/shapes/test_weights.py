"""The bundled weights load with the diffusers / transformers classes and stay small (skipped when absent)."""

import json

import pytest

from p2p_cli.shapes import weights_dir

W = weights_dir()
pytestmark = pytest.mark.skipif(not (W / "model_index.json").exists(), reason="shapes weights not trained yet")


def test_size_at_most_40_mb():
    total = sum(p.stat().st_size for p in W.rglob("*") if p.is_file())
    assert total <= 40_000_000


def test_layout_and_loading():
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    index = json.loads((W / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert all(list(W.glob(f"{sub}/*.safetensors")) for sub in ("unet", "vae", "text_encoder"))
    unet = UNet2DConditionModel.from_pretrained(W / "unet")
    vae = AutoencoderKL.from_pretrained(W / "vae")
    text = CLIPTextModel.from_pretrained(W / "text_encoder")
    tok = CLIPTokenizer.from_pretrained(W / "tokenizer")
    sched = DDIMScheduler.from_pretrained(W / "scheduler")
    assert unet.config.sample_size == 16 and len(vae.config.block_out_channels) == 3
    assert unet.config.cross_attention_dim == text.config.hidden_size
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.prediction_type == "epsilon"
    ids = tok("a big red circle on the left", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77) and ids[0, 0] == 49406
    with torch.no_grad():
        cond = text(ids)[0]  # (1, 77, hidden)
        z = torch.randn(1, 4, 16, 16)
        eps = unet(z, 10, cond).sample
        img = vae.decode(z / vae.config.scaling_factor).sample
    assert eps.shape == z.shape and img.shape == (1, 3, 64, 64)
    assert torch.isfinite(eps).all() and torch.isfinite(img).all()
