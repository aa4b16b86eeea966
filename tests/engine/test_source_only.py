"""A source-only run (what `p2p attn-viz --prompt` samples): one row, the same picture and maps as the source
row of a full run."""

from __future__ import annotations

import torch

from p2p_cli.engine.control.store import AttentionStore
from p2p_cli.engine.pipeline import run_edit
from p2p_cli.recipe import parse_recipe

SOURCE = "a painting of a squirrel eating a burger"


def test_source_only_is_one_row_equal_to_the_full_runs_source(family_model):
    r = parse_recipe({"source": SOURCE, "steps": 3, "seed": 1,
                      "edits": [{"target": SOURCE, "type": "replace", "cross_replace": 0, "self_replace": 0}]})
    stores = [AttentionStore(lambda layer, side: layer.is_cross, torch.ones(3)) for _ in range(2)]
    alone = run_edit(family_model, r, source_only=True, stores=stores[:1])
    full = run_edit(family_model, r, stores=stores[1:])
    assert alone.roles == ["source"] and alone.images.shape[0] == 1
    assert torch.allclose(alone.images[0], full.images[0], atol=1e-5)
    name = next(iter(stores[0].sums))
    assert stores[0].sums[name].shape[0] == 1 and stores[1].sums[name].shape[0] == 2
    assert torch.allclose(stores[0].sums[name][0], stores[1].sums[name][0], atol=1e-5)
