"""Attention maps for pictures against probabilities recorded independently, and the pictures' invariants."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline

from p2p_cli.engine.pipeline import initial_latent, run_edit
from p2p_cli.recipe import parse_recipe
from p2p_cli.render.attention import DIM, cross_tiles, mask_over, word_tiles
from p2p_cli.analysis.maps import (cross_maps, parse_step_range, pick_res, self_components, self_matrix, step_weights,
                         token_labels, viz_store, word_map, word_positions)

SOURCE = "a painting of a squirrel eating a lasagne"
STEPS = 4


class RecordingProcessor:
    """Plain attention with an explicit softmax; keeps the conditional half's probabilities of every call."""

    def __init__(self, calls: list[torch.Tensor]):
        self.calls = calls  # one (heads, Q, K) per call, i.e. per step

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n, _ = hidden_states.shape

        def heads(x):  # (b, seq, heads * d) -> (b, heads, seq, d)
            return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q, k, v = heads(attn.to_q(hidden_states)), heads(attn.to_k(context)), heads(attn.to_v(context))
        probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # (b, heads, Q, K)
        self.calls.append(probs[b // 2].clone())  # [uncond, cond]: the conditional prompt
        out = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


def recorded(model, steps: int) -> dict[str, list[torch.Tensor]]:
    """Every layer's cond probabilities per step, from diffusers' own pipeline with our hand-written processor."""
    calls = {name: [] for name in model.unet.attn_processors}
    previous = model.unet.attn_processors
    model.unet.set_attn_processor({name: RecordingProcessor(calls[name]) for name in calls})
    try:
        pipe = StableDiffusionPipeline(
            vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
            scheduler=model.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        pipe([SOURCE], latents=initial_latent(3, 4, (16, 16)), num_inference_steps=steps, guidance_scale=7.5,
             height=128, width=128, output_type="pt")
    finally:
        model.unet.set_attn_processor(previous)
    return calls


def place_of(name: str) -> str:
    return "mid" if name.startswith("mid") else "down" if name.startswith("down") else "up"


@pytest.fixture(scope="module")
def runs(tiny_model):
    """Our run (identity edit, so row 0 is the plain source) with three stores, and the recorded probabilities."""
    recipe = parse_recipe({"source": SOURCE, "steps": STEPS, "seed": 3,
                           "edits": [{"target": SOURCE, "type": "replace", "cross_replace": 0, "self_replace": 0}]})
    stores = {
        "8-down-up-all": viz_store(STEPS, 8, ("down", "up")),
        "4-all-late": viz_store(STEPS, 4, ("down", "mid", "up"), (0.5, 1.0)),
        "8-down-up-early": viz_store(STEPS, 8, ("down", "up"), (0.0, 0.5)),
    }
    run_edit(tiny_model, recipe, stores=list(stores.values()))
    return stores, recorded(tiny_model, STEPS)


@pytest.mark.parametrize("key,res,places,first,stop", [
    ("8-down-up-all", 8, ("down", "up"), 0, STEPS),
    ("4-all-late", 4, ("down", "mid", "up"), 2, STEPS),
    ("8-down-up-early", 8, ("down", "up"), 0, 2),
])
def test_stored_average_is_the_mean_over_layers_heads_and_steps(runs, key, res, places, first, stop):
    stores, calls = runs
    chosen = {kind: [n for n, c in calls.items() if place_of(n) in places and n.endswith(f"{kind}.processor")
                     and c[0].shape[-2] == res * res] for kind in ("attn1", "attn2")}
    assert chosen["attn2"] and chosen["attn1"]
    for kind, ours in (("attn2", cross_maps(stores[key], 0, res, places)),
                       ("attn1", self_matrix(stores[key], 0, res, places))):
        direct = torch.stack([calls[n][s] for n in chosen[kind] for s in range(first, stop)]).mean((0, 1))  # (Q, K)
        if kind == "attn2":
            direct = direct.reshape(res, res, -1)  # (h, w, 77)
        assert ours.shape == direct.shape
        assert torch.allclose(ours, direct, atol=1e-5)


def test_step_range_changes_what_is_averaged(runs):
    stores, _ = runs
    assert step_weights(STEPS, (0.5, 1.0)).tolist() == [0, 0, 1, 1]
    assert parse_step_range("0.5:") == (0.5, 1.0) and parse_step_range(":0.25") == (0.0, 0.25)
    for bad in ("0.5", "0.6:0.2", "a:b", "0:1.5"):
        with pytest.raises(ValueError):
            parse_step_range(bad)
    with pytest.raises(ValueError, match="holds none"):
        step_weights(3, (0.5, 0.6))
    early = cross_maps(stores["8-down-up-early"], 0, 8, ("down", "up"))
    full = cross_maps(stores["8-down-up-all"], 0, 8, ("down", "up"))
    assert not torch.allclose(early, full, atol=1e-4)


def test_self_components_are_orthonormal(runs):
    stores, _ = runs
    comps, shares = self_components(stores["8-down-up-all"], 0, 8, ("down", "up"), k=10)
    assert comps.shape == (10, 8, 8) and shares.shape == (10,)
    flat = comps.reshape(10, -1).double()
    assert torch.allclose(flat @ flat.T, torch.eye(10, dtype=torch.float64), atol=1e-5)
    assert (shares[:-1] >= shares[1:]).all() and 0 < shares.sum() < 1
    assert (flat.gather(1, flat.abs().argmax(1, keepdim=True)) > 0).all()  # signs fixed


def test_tiles_per_token_and_words_sum_their_tokens(runs, tokenizer):
    stores, _ = runs
    maps = cross_maps(stores["8-down-up-all"], 0, 8, ("down", "up"))
    labels = token_labels(tokenizer, SOURCE)
    assert [t for _, t in labels] == ["a", "painting", "of", "a", "squirrel", "eating", "a", "lasag", "ne"]
    assert len(token_labels(tokenizer, SOURCE, special=True)) == len(labels) + 2
    image = torch.rand(3, 128, 128)
    tiles = cross_tiles(image, maps, labels)
    assert len(tiles) == len(labels) and [t.caption for t in tiles] == [t for _, t in labels]
    assert tiles[0].image.shape == (3, 128, 128)
    positions = word_positions(tokenizer, SOURCE, "lasagne")
    assert positions == [8, 9]
    assert torch.allclose(word_map(maps, positions), maps[..., 8] + maps[..., 9])
    assert word_positions(tokenizer, SOURCE, "lion") is None
    heat, plain = word_tiles(image, word_map(maps, positions), "lasagne", "source")
    assert heat.image.shape == plain.image.shape == (3, 128, 128) and plain.image.std() > 0


def test_mask_picture_keeps_the_image_inside_and_dims_outside():
    image, mask = torch.rand(3, 16, 16), (torch.rand(16, 16) > 0.5).float()
    pic = mask_over(image, mask)
    assert torch.equal(pic[:, mask > 0], image[:, mask > 0])
    assert torch.allclose(pic[:, mask == 0], image[:, mask == 0] * DIM)


def test_res_defaults_to_a_quarter_of_the_latent_but_at_least_16_and_must_exist(tiny_model):
    from p2p_cli.analysis.maps import default_res

    assert [default_res((s, s)) for s in (8, 16, 64, 128)] == [8, 16, 16, 32]  # SD 512 px: 16, SDXL: 32
    assert pick_res(tiny_model, (16, 16), ("down", "up")) == 16  # a 4x4 map cannot place an object
    assert pick_res(tiny_model, (16, 16), ("mid",)) == 4  # the nearest side there is
    assert pick_res(tiny_model, (16, 16), ("down", "up"), 8) == 8
    with pytest.raises(ValueError, match="the sides are 4, 8, 16"):
        pick_res(tiny_model, (16, 16), ("down", "up"), 2)
    with pytest.raises(ValueError, match="the sides are 4$"):
        pick_res(tiny_model, (16, 16), ("mid",), 8)


def test_grey_background_keeps_the_heat_colours_apart_from_the_picture():
    from p2p_cli.render.attention import OVERLAY, colorize, grey, heat_over

    image = torch.zeros(3, 8, 8)
    image[0] = 1.0  # a red picture
    map_ = torch.linspace(0, 1, 64).reshape(8, 8)
    over_grey = heat_over(image, map_, "grey")
    luma = 0.299
    assert torch.allclose(over_grey, (1 - OVERLAY) * luma + OVERLAY * colorize(map_))
    assert torch.allclose(grey(image)[1], grey(image)[2])  # no colour left under the heat
    assert not torch.allclose(heat_over(image, map_), over_grey)
    with pytest.raises(ValueError, match="expected one of image, grey"):
        heat_over(image, map_, "sepia")
