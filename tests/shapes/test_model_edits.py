"""What the paper claims, checked on the bundled shapes model with the pixel oracle (a fast subset of
`python -m lab.shapes.evaluate`; skipped when the weights are not there)."""

from __future__ import annotations

import pytest

from lab.shapes import evaluate as ev
from p2p_cli.shapes import weights_dir

pytestmark = pytest.mark.skipif(not (weights_dir() / "model_index.json").exists(), reason="no shapes weights")
STEPS = 25


@pytest.fixture(scope="module")
def shapes_model():
    from p2p_cli.models import load_model

    return load_model(None, device="cpu", dtype="fp32")


@pytest.mark.slow  # the shipped weights' plain pictures (lab.shapes.evaluate measures them); plain sampling
# itself is checked against diffusers' pipeline in tests/engine/test_pipeline.py
def test_plain_generation_follows_the_caption(shapes_model):
    scores = ev.eval_plain(shapes_model, 8, STEPS, 7.5, batch=8)
    assert scores["colour"] >= 0.75, scores


def test_colour_swap_changes_the_colour_and_keeps_the_place(shapes_model):
    result = ev.eval_swap(shapes_model, "colour", 4, STEPS, 7.5)
    assert result["p2p"]["changed"] >= 0.75, result
    assert result["p2p"]["kept"] >= 0.75, result


@pytest.mark.slow  # long; make test-slow
def test_local_blend_keeps_the_rest_of_the_picture(shapes_model):
    result = ev.eval_blend(shapes_model, 3, STEPS, 7.5)
    assert result["mean_change_outside_blend"] < result["mean_change_outside_no_blend"], result
    assert result["mean_change_outside_blend"] < ev.BLEND_MAX_CHANGE, result
