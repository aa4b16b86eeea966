"""Pieces of the shapes training that decide what the model learns to read (no training is run here beyond a
few steps of the decoder fine-tune on a tiny VAE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.shapes.train import (Tokens, attention_targets, donor_captions, reading_loss, scenes_batch,
                                   shuffle_padding)


def _eos(ids: torch.Tensor, eos: int) -> list[int]:
    return (ids == eos).int().argmax(1).tolist()


def test_padding_donors_have_exactly_as_many_tokens(tokenizer):
    tokens, eos = Tokens(tokenizer), tokenizer.eos_token_id
    rng = np.random.default_rng(0)
    _, caps, _, _ = scenes_batch(rng, 32)
    kept = [i % 8 != 0 for i in range(32)]
    caps = [c if k else "" for c, k in zip(caps, kept)]
    ids = tokens(caps)
    rows, donors = donor_captions(rng, ids, kept, tokens, eos)
    assert rows and all(kept[i] for i in rows)
    assert len(rows) >= 0.9 * sum(kept)
    assert [_eos(ids, eos)[i] for i in rows] == _eos(tokens(donors), eos)
    assert all(caps[i] != d for i, d in zip(rows, donors))


def test_shuffle_padding_replaces_only_what_follows_the_caption(tokenizer):
    tokens, eos = Tokens(tokenizer), tokenizer.eos_token_id
    caps = ["a big red circle on the left", "", "a small blue square at the top"]
    ids = tokens(caps)
    cond = torch.arange(3.0)[:, None, None].expand(3, 77, 4).clone()
    donor = torch.full((2, 77, 4), -1.0)
    out = shuffle_padding(cond, donor, [0, 2], ids, eos)
    e0, _, e2 = _eos(ids, eos)
    assert torch.equal(out[0, :e0], cond[0, :e0]) and (out[0, e0:] == -1).all()
    assert torch.equal(out[1], cond[1])  # the unconditional prompt keeps its own padding
    assert torch.equal(out[2, :e2], cond[2, :e2]) and (out[2, e2:] == -1).all()


def test_localisation_targets_cover_the_object_words_and_its_place(tokenizer):
    rng = np.random.default_rng(3)
    _, caps, scenes, with_bg = scenes_batch(rng, 8)
    targets, select = attention_targets(scenes, with_bg, [True] * 8)
    for cap, sel in zip(caps, select):
        ids = tokenizer(cap).input_ids
        words = [tokenizer.decode([ids[i]]) for i in sel.nonzero()[:, 0].tolist()]
        assert {"circle", "square", "triangle"} & set(words)
        assert {"top", "bottom", "left", "right", "center"} & set(words)
        assert not {"a", "the", "on", "in", "at", "and"} & set(words)


def test_reading_loss_is_low_when_each_place_reads_its_own_words():
    rng = np.random.default_rng(5)
    _, _, scenes, with_bg = scenes_batch(rng, 4)
    targets, _ = attention_targets(scenes, with_bg, [True] * 4)
    own = (targets > 0.5).float().transpose(1, 2)  # (B, 256, 77)
    reads_own = torch.where(own.sum(-1, keepdim=True) > 0, own / own.sum(-1, keepdim=True).clamp_min(1),
                            torch.full_like(own, 1 / 77))
    uniform = torch.full_like(own, 1 / 77)
    assert reading_loss([reads_own], targets) < 1e-3
    assert reading_loss([uniform], targets) > 2.0


def test_padding_donors_can_name_the_same_background(tokenizer):
    tokens, eos = Tokens(tokenizer), tokenizer.eos_token_id
    rng = np.random.default_rng(1)
    _, caps, scenes, with_bg = scenes_batch(rng, 32)
    kept = [True] * 32
    named = [s.background if b else None for s, b in zip(scenes, with_bg)]
    rows, donors = donor_captions(rng, tokens(caps), kept, tokens, eos, named)
    assert len(rows) >= 28
    for i, d in zip(rows, donors):
        if named[i] is None:
            assert "background" not in d
        else:
            assert d.endswith(f"on a {named[i]} background")


def test_decoder_finetune_changes_only_the_decoder():
    import numpy as np
    import pytest

    from lab.arch import tiny_components
    from lab.shapes.train import Config, finetune_decoder, main

    vae = tiny_components(0)["vae"]
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    tuned = finetune_decoder(vae, Config(vae_batch=2), np.random.default_rng(0), minutes=0.001)
    after = tuned.state_dict()
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"decoder", "post_quant_conv"}  # the latent space, and so the UNet, is untouched
    assert tuned.config.scaling_factor == vae.config.scaling_factor
    assert not any(p.requires_grad for p in tuned.parameters())
    with pytest.raises(SystemExit) as e:
        main(["--out", "x", "--decoder-only"])
    assert e.value.code == 2


def _tiny_config(**kw):
    from lab.shapes.train import Config

    return Config(vae_channels=(8, 8, 8), vae_groups=8, unet_channels=(16, 16, 32), unet_groups=8, unet_heads=2,
                  text_hidden=16, text_layers=1, text_heads=2, vae_batch=2, batch=4, warmup=1, **kw)


def _counting_wide(monkeypatch) -> list:
    from lab.shapes import train as tr
    from lab.shapes.world import sample_wide_scene

    drawn = []

    def counting(rng):
        drawn.append(sample_wide_scene(rng))
        return drawn[-1]

    monkeypatch.setitem(tr.WORLDS, "wide", counting)
    return drawn


def test_the_wide_world_option_trains_the_unet_on_wide_scenes(tmp_path, monkeypatch):
    """--world wide: the diffusion batches and the padding donors are drawn from the wide world (half its
    captions name no place, one to three objects)."""
    from lab.shapes import train as tr

    drawn = _counting_wide(monkeypatch)
    cfg = _tiny_config(world="wide")
    vae, unet, text = tr.build(cfg, 0)
    before = unet.state_dict()["conv_out.weight"].clone()
    steps = tr.train_diffusion(vae.requires_grad_(False), unet, text, cfg, np.random.default_rng(1), minutes=5,
                               out=tmp_path / "m", save_every=5, max_steps=2)
    assert steps == 2 and not torch.equal(unet.state_dict()["conv_out.weight"], before)
    # 200 for the one-token check, 2 x 4 training scenes, and the padding donors' draws
    assert len(drawn) > 200 + 2 * cfg.batch
    assert {s.places for s in drawn} == {True, False} and {len(s.objects) for s in drawn} == {1, 2, 3}
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.slow
def test_the_wide_world_option_trains_the_autoencoder_on_wide_scenes(monkeypatch):
    from lab.shapes import train as tr

    drawn = _counting_wide(monkeypatch)
    cfg = _tiny_config(world="wide")
    tr.train_vae(tr.build(cfg, 0)[0], cfg, np.random.default_rng(0), steps=1, minutes=1)
    assert len(drawn) == cfg.vae_batch + 256  # one step and the scaling-factor batch


def test_the_grid_world_stays_the_default():
    from lab.shapes.train import WORLDS, Config, main
    from lab.shapes.world import sample_scene

    assert Config().world == "grid" and WORLDS["grid"] is sample_scene
    with pytest.raises(SystemExit) as e:
        main(["--out", "x", "--world", "round"])
    assert e.value.code == 2
