"""A sweep's pictures are what `p2p edit` makes at the same tau: same latent, same batch rules."""

from __future__ import annotations

import torch

from p2p_cli.engine.pipeline import run_edit
from p2p_cli.recipe import parse_recipe
from p2p_cli.analysis.tau_sweep import expand, run_sweep

EDITS = [
    {"target": "a painting of a lion eating a burger", "cross_replace": {"default": 0.8, "lion": 0.4},
     "local_blend": {"words": ["squirrel", "lion"], "threshold": 0.5}},
    {"target": "a painting of a squirrel eating a big burger", "self_replace": 0.6},
]


def recipe(edits):
    return parse_recipe({"source": "a painting of a squirrel eating a burger", "steps": 3, "seed": 3,
                         "self_replace_max_res": 8, "edits": edits})


def close(a, b):
    return torch.allclose(a, b, atol=1e-4, rtol=0)


def test_sweep_images_equal_edit_runs_at_the_same_tau(tiny_model):
    sweep = expand(recipe(EDITS), [0.2, 0.6], None, baseline=True)
    result = run_sweep(tiny_model, sweep, batch_size=3)  # batches [e1 0.2, e1 0.6, e2 0.2] and [e2 0.6]
    assert len(result.chunk_sources) == 2
    assert close(result.chunk_sources[0], result.chunk_sources[1])  # every batch's donor is the same source
    for tau in (0.2, 0.6):
        at_tau = [{**e, "cross_replace": {**e["cross_replace"], "default": tau}} if isinstance(e.get("cross_replace"),
                  dict) else {**e, "cross_replace": tau} for e in EDITS]
        edit = run_edit(tiny_model, recipe(at_tau), baseline=True)  # [source, e1, e2, baseline-1, baseline-2]
        assert close(edit.images[0], result.source)
        for k in (1, 2):
            i = next(i for i, p in enumerate(sweep.points) if p.edit == k and p.tau == tau)
            assert close(result.images[i], edit.images[k]), (k, tau)
            assert close(result.baselines[k], edit.images[2 + k])
        mask = result.masks[next(i for i, p in enumerate(sweep.points) if p.edit == 1 and p.tau == tau)]
        assert (mask != edit.masks[1]).float().mean() < 0.01
    assert not close(result.images[0], result.images[1])  # tau matters
    assert result.masks[2] is None
