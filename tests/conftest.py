"""Shared fixtures: the offline CLIP tokenizer and tiny random SD components (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.arch import clip_tokenizer, tiny_components
from p2p_cli.models import from_components

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    """Tiny epsilon-prediction model: latent 16x16 (128 px), cross-attention layers at sides 16, 8, 4."""
    return from_components(tiny_components(seed=0), id="tiny")


@pytest.fixture(scope="session")
def tiny_v_model():
    """The same architecture as a v-prediction model (SD 2.x style)."""
    return from_components(tiny_components(seed=1, prediction_type="v_prediction"), id="tiny-v")
