"""Offload (loading.py `offload:`): diffusers' own hooks installed on the model's networks and removed through
diffusers' API; the pictures equal those without offload. There is no GPU here: the hooks run with the CPU as the
execution device (diffusers takes an explicit device), so this checks the plumbing, not the memory saved."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.engine.pipeline import run_edit
from p2p_cli.loading import parse
from p2p_cli.models import load_model
from p2p_cli.placement import has_offload_hooks, remove_offload
from p2p_cli.recipe import parse_recipe

RECIPE = parse_recipe({"source": "a red cat on a sofa", "steps": 2, "seed": 3, "size": 128,
                       "edits": [{"target": "a blue cat on a sofa"}]})


@pytest.fixture(scope="module")
def folder(tmp_path_factory, save_tiny_model):
    return save_tiny_model(tmp_path_factory.mktemp("offload"))


@pytest.fixture(scope="module")
def plain(folder):
    return run_edit(load_model(str(folder), device="cpu", dtype="fp32"), RECIPE).images


@pytest.mark.parametrize("offload", ["model", "sequential", "group"])
def test_hooks_installed_same_pictures_and_removed(folder, plain, offload):
    model = load_model(str(folder), device="cpu", dtype="fp32", loading=parse(None, offload))
    assert model.loading.offload == offload and model.offload is not None
    assert all(has_offload_hooks(net) for net in (model.unet, model.vae, model.text_encoder))
    assert model.offload.unet is model.unet  # the hooks sit on the model's own networks
    if offload != "sequential":  # accelerate's per-layer hooks fail with the CPU as execution device (not a GPU)
        assert torch.allclose(run_edit(model, RECIPE).images, plain, atol=1e-6, rtol=0)
    remove_offload(model.offload)
    assert not any(has_offload_hooks(net) for net in (model.unet, model.vae, model.text_encoder))
    assert torch.allclose(run_edit(model, RECIPE).images, plain, atol=1e-6, rtol=0)


def test_plain_loading_installs_no_hooks(folder):
    model = load_model(str(folder), device="cpu", dtype="fp32")
    assert model.offload is None and not has_offload_hooks(model.unet)
