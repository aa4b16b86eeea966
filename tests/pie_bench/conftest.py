"""PIE-Bench fixtures: a three-picture folder in the benchmark's format (pie_fixtures.py), and a tiny random DINO
ViT saved like a real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pie_fixtures import write_pie_folder


@pytest.fixture
def pie_folder(tmp_path) -> Path:
    return write_pie_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_dino():
    """A tiny random ViTModel (patch 32 at 224 px: 50 tokens)."""
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=224, patch_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=37)
    return ViTModel(config, add_pooling_layer=False).eval()


@pytest.fixture(scope="session")
def tiny_dino_dir(tmp_path_factory, tiny_dino) -> Path:
    folder = tmp_path_factory.mktemp("tiny-dino")
    tiny_dino.save_pretrained(folder)
    return folder
