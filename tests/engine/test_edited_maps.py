"""Stores and local blend read the maps each row used: a target's cross maps as edited, the source's self maps
where injected (as the reference, whose store holds the probabilities the edit overwrites in place).

The oracle records the queries and keys of the blend layers with forward hooks during the same run, recomputes
the probabilities, edits them in the reference's gather form and builds the mask in the test's own code.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from p2p_cli.engine import pipeline
from p2p_cli.engine.pipeline import run_edit
from p2p_cli.recipe import parse_recipe
from p2p_cli.analysis.maps import cross_maps, self_matrix, viz_store

SOURCE = "a painting of a squirrel eating a burger"
STEPS = 4


def recipe(edit: dict, **top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 3, "self_replace_max_res": 8, "edits": [edit]}
    return parse_recipe({**data, **top})


class RecordingBlend(pipeline.LocalBlend):
    """LocalBlend that keeps the maps it read and the mask of every step; the instances made are in `made`."""

    made: ClassVar[list[RecordingBlend]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks: list[torch.Tensor] = []
        self.maps: list[torch.Tensor] = []
        RecordingBlend.made.append(self)

    def __call__(self, step, x):
        out = super().__call__(step, x)
        self.masks.append(self.last_mask.clone())
        self.maps.append(self.store.mean_maps("cross", self.side).clone())  # (B, h, w, L): sum so far / T
        return out


def record_cross_layers(model) -> tuple[dict[str, list], list]:
    """Forward hooks on to_q / to_k of the down and up cross-attention layers: per layer, per call, (q, k)."""
    calls: dict[str, list] = {}
    handles = []
    for name, module in model.unet.named_modules():
        if not (name.endswith("attn2") and name.startswith(("down_blocks", "up_blocks"))):
            continue
        calls[name] = []
        here: dict = {}

        def keep_q(mod, inp, out, here=here):
            here["q"] = out.detach().clone()

        def keep_k(mod, inp, out, name=name, here=here, attn=module):
            calls[name].append((here.pop("q"), out.detach().clone(), attn.heads, attn.scale))

        handles += [module.to_q.register_forward_hook(keep_q), module.to_k.register_forward_hook(keep_k)]
    return calls, handles


def cond_probs(q, k, heads: int, scale: float, guided: bool) -> torch.Tensor:
    """softmax(Q K^T * scale) of the conditional half, (B, heads, Q, K)."""
    if guided:
        q, k = q[q.shape[0] // 2 :], k[k.shape[0] // 2 :]
    b = q.shape[0]
    q = q.view(b, -1, heads, q.shape[-1] // heads).transpose(1, 2)
    k = k.view(b, -1, heads, k.shape[-1] // heads).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)


def reference_edit(a_src, a_tgt, plan, step: int) -> torch.Tensor:
    """The notebooks' refine form: each target token gathers one source column; unaligned ones keep their own;
    times the equalizer; gated by alpha. a_src (heads, Q, L), a_tgt (heads, Q, L), target 0 of plan."""
    mapper = plan.mapper[0]
    assert ((mapper == 0) | (mapper == 1)).all() and (mapper.sum(0) <= 1).all(), "needs a one-hot mapper"
    src_index = mapper.argmax(0)  # (L,) the source position each target token reads
    aligned, eq, alpha = plan.aligned[0], plan.equalizer[0], plan.alpha[step, 0]
    edit = (a_src[..., src_index] * aligned + a_tgt * (1 - aligned)) * eq
    return alpha * edit + (1 - alpha) * a_tgt


def reference_mask(maps: torch.Tensor, tokens: torch.Tensor, threshold: float, side: int, latent: int) -> torch.Tensor:
    """maps (Q, L) averaged over layers, heads, steps; the reference's mask: sum tokens, max-pool 3x3, nearest
    upsample to the latent, divide by the max, threshold."""
    m = (maps * tokens).sum(-1).reshape(1, 1, side, side)
    m = F.max_pool2d(m, 3, stride=1, padding=1)
    m = F.interpolate(m, size=(latent, latent), mode="nearest")
    return (m / m.max() > threshold)[0, 0]


BLEND_CASES = {
    # "lion" is only in the target, so the mask is the target's alone; inside the cross window "lion" reads the
    # source's "squirrel" map (equal token counts), outside it its own
    "replace": {"target": "a painting of a lion eating a burger", "cross_replace": 0.5,
                "local_blend": {"words": ["lion"], "threshold": 0.95}},
    # refine: "squirrel" moves one token right; "big" is inserted (its own map), both reweighted
    "refine+reweight": {"target": "a painting of a big squirrel eating a burger", "cross_replace": 0.75,
                        "reweight": {"big": 3.0, "squirrel": 0.5},
                        "local_blend": {"words": ["squirrel", "big"], "threshold": 0.94}},
}


@pytest.mark.parametrize("attention", ["fused", "explicit"])
@pytest.mark.parametrize("case", sorted(BLEND_CASES))
def test_blend_mask_comes_from_the_edited_target_maps(tiny_model, monkeypatch, case, attention):
    """Per step, the maps local blend reads for the target are its edited ones, and its mask is the reference's
    mask of them (a random model's maps are flat: the thresholds are high so that the masks are partial)."""
    monkeypatch.setattr(pipeline, "LocalBlend", RecordingBlend)
    monkeypatch.setattr(RecordingBlend, "made", [])
    r = recipe(BLEND_CASES[case], blend_res=8)
    calls, handles = record_cross_layers(tiny_model)
    try:
        out = run_edit(tiny_model, r, attention=attention)
    finally:
        for h in handles:
            h.remove()
    (blend,) = RecordingBlend.made
    plan, side, latent = out.plan, out.layout["blend_res"], out.layout["latent_hw"][0]
    assert side == 8 and len(blend.masks) == STEPS
    layers = [name for name, c in calls.items() if c[0][0].shape[1] == side * side]
    assert len(layers) >= 2 and all(len(calls[n]) == STEPS for n in layers)
    gated = plan.alpha[:, 0].amax(-1) > 0  # (T,) steps inside the cross window
    assert 0 < gated.sum() < STEPS, "the test needs steps inside and outside the cross window"

    threshold = float(plan.blend["threshold"][0])
    src_tokens, tgt_tokens = plan.blend["src_tokens"][0], plan.blend["tgt_tokens"][0]
    edited_sum = own_sum = src_sum = 0
    partial, differs = [], []
    for step in range(STEPS):
        edited, own, src = [], [], []
        for name in layers:
            probs = cond_probs(*calls[name][step], guided=True)  # (2, heads, Q, L): source, target
            src.append(probs[0])
            own.append(probs[1])
            edited.append(reference_edit(probs[0], probs[1], plan, step))
        src_sum = src_sum + torch.stack(src).mean((0, 1))  # (Q, L): mean over layers and heads, summed over steps
        edited_sum = edited_sum + torch.stack(edited).mean((0, 1))
        own_sum = own_sum + torch.stack(own).mean((0, 1))

        read = blend.maps[step].reshape(2, side * side, -1) * STEPS  # the store's sums so far
        assert torch.allclose(read[0], src_sum, atol=1e-6, rtol=0)
        assert torch.allclose(read[1], edited_sum, atol=1e-6, rtol=0), f"step {step}: not the edited maps"
        assert (read[1] - own_sum).abs().max() > 1e-4  # every sum so far holds step 0's edit (probabilities ~1/77)

        src_mask = reference_mask(src_sum, src_tokens, threshold, side, latent)
        want = src_mask | reference_mask(edited_sum, tgt_tokens, threshold, side, latent)
        unedited = src_mask | reference_mask(own_sum, tgt_tokens, threshold, side, latent)
        got = blend.masks[step][0, 0].bool()
        assert torch.equal(got, want), f"step {step}: {(got != want).sum()} cells differ from the edited maps' mask"
        partial.append(0 < want.float().mean() < 1)
        differs.append(not torch.equal(want, unedited))
    assert any(partial), "the test needs a partial mask"
    if case == "replace":  # the edited maps' mask is not the one the unedited maps would give
        assert any(differs)


@pytest.mark.parametrize("attention", ["fused", "explicit"])
def test_stores_record_the_maps_each_row_used(tiny_model, attention):
    """Cross and self replaced over every step, identity mapper, no reweight: the target used the source's maps,
    so its stored cross maps (all layers) and injected self maps (side <= 8) are the source's; with taus 0 not."""
    edit = {"target": "a painting of a lion eating a burger"}
    stores = {}
    for tau in (1.0, 0.0):
        stores[tau] = [viz_store(STEPS, side, ("down", "up")) for side in (4, 8, 16)]
        run_edit(tiny_model, recipe({**edit, "cross_replace": tau, "self_replace": tau}), attention=attention,
                 stores=stores[tau])
    for store, side in zip(stores[1.0], (4, 8, 16)):
        cross = store.mean_maps("cross", side)  # (B, h, w, L)
        assert torch.allclose(cross[1], cross[0], atol=1e-6, rtol=0), side
        self_src, self_tgt = self_matrix(store, 0, side, ("down", "up")), self_matrix(store, 1, side, ("down", "up"))
        if side <= 8:
            assert torch.allclose(self_tgt, self_src, atol=1e-6, rtol=0), side
        else:  # not injected at side 16: the target's own
            assert not torch.allclose(self_tgt, self_src, atol=1e-4, rtol=0)
    for store, side in zip(stores[0.0], (4, 8, 16)):
        assert not torch.allclose(cross_maps(store, 1, side, ("down", "up")), cross_maps(store, 0, side, ("down", "up")),
                                  atol=1e-4, rtol=0), side
