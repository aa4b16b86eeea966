"""The SD3-layout shapes trainer: its shortcut for the absent T5 is exact, a few steps write a folder diffusers'
StableDiffusion3Pipeline loads and samples from, within the size limit; the wide world's localisation targets sit
on the objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from p2p_cli.models import bundled_weights, load_model
from lab.shapes.train import attention_targets
from lab.shapes.train_mmdit import (T5_ROWS, Config, JointRecorder, bundled_parts, build_transformer, sigmas_for,
                                        train)
from lab.shapes.world import sample_wide_scene, shape_mask

needs_bundled = pytest.mark.skipif(not (bundled_weights() / "vae").is_dir(), reason="bundled shapes model absent")


def test_one_zero_row_with_a_log_bias_is_the_pipelines_256_zero_rows():
    """StableDiffusion3Pipeline without T5 appends 256 zero rows; training uses one row whose logit gets
    + log(256). The transformer's output must be the same."""
    t = build_transformer(Config(layers=2), seed=0, text_dim=16, pooled_dim=8).eval()
    with torch.no_grad():
        for p in t.parameters():  # the zero-initialised output layers would hide any difference
            p.add_(0.05 * torch.randn_like(p))
    x, c, pooled, ts = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 16), torch.randn(2, 8), torch.tensor([300.0, 900.0])
    with torch.no_grad():
        full = t(hidden_states=x, encoder_hidden_states=torch.cat([c, torch.zeros(2, T5_ROWS, 16)], 1),
                 pooled_projections=pooled, timestep=ts).sample
        recorder = JointRecorder()
        t.set_attn_processor(recorder)
        short = t(hidden_states=x, encoder_hidden_states=torch.cat([c, torch.zeros(2, 1, 16)], 1),
                  pooled_projections=pooled, timestep=ts).sample
        wrong = JointRecorder(t5_rows=1)
        t.set_attn_processor(wrong)
        unbiased = t(hidden_states=x, encoder_hidden_states=torch.cat([c, torch.zeros(2, 1, 16)], 1),
                     pooled_projections=pooled, timestep=ts).sample
    assert torch.allclose(full, short, atol=1e-5)
    assert not torch.allclose(full, unbiased, atol=1e-3)
    assert len(recorder.maps) == 2 and recorder.maps[0].shape == (2, 64, 77)  # one map per joint block
    assert (recorder.maps[0].sum(-1) < 1).all()  # a share of one softmax over image and text keys


def test_sigmas_follow_the_shift():
    g = torch.Generator().manual_seed(0)
    plain, shifted = sigmas_for(4000, 1.0, g), sigmas_for(4000, 3.0, torch.Generator().manual_seed(0))
    assert 0 < plain.min() and plain.max() < 1 and abs(plain.mean().item() - 0.5) < 0.02
    assert (shifted >= plain).all() and shifted.mean() > 0.6


def test_pair_sigmas_are_the_noisy_share_of_the_same_distribution():
    full = sigmas_for(200_000, 3.0, torch.Generator().manual_seed(0))
    top = sigmas_for(200_000, 3.0, torch.Generator().manual_seed(1), top=0.4)
    cut = full.quantile(0.6)
    assert top.min() >= cut - 2e-3  # only the noisiest 40 %
    upper = full[full >= cut]
    for q in (0.1, 0.5, 0.9):  # and distributed there as the full draw is
        assert abs(top.quantile(q).item() - upper.quantile(q).item()) < 5e-3


def test_wide_unplaced_captions_have_targets_on_their_objects():
    rng = np.random.default_rng(0)
    scene = next(s for s in (sample_wide_scene(rng) for _ in range(100)) if not s.places and len(s.objects) == 2)
    targets, select = attention_targets([scene], [True], [True])
    a, b = scene.objects
    for token, o in ((3, a), (7, b)):  # "a big red circle and a small blue square ...": colour words 3 and 7
        mask = torch.from_numpy(shape_mask(o.shape, o.cx, o.cy, o.r())).float()
        region = torch.nn.functional.avg_pool2d(mask[None, None], 4).flatten()
        assert select[0, token] and torch.allclose(targets[0, token], region)


@needs_bundled
@pytest.mark.slow  # long; make test-slow
def test_a_few_steps_write_a_folder_diffusers_loads(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    vae, text = bundled_parts(bundled_weights())
    cfg = Config(batch=4, warmup=1)
    transformer = build_transformer(cfg, 0, 2 * text.config.hidden_size, 2 * text.config.projection_dim)
    before = transformer.state_dict()["proj_out.weight"].clone()
    steps = train(transformer, vae, text, cfg, np.random.default_rng(0), minutes=5, out=tmp_path / "m",
                  save_every=5, max_steps=3)
    assert steps == 3
    assert not torch.equal(transformer.state_dict()["proj_out.weight"], before)
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline" and index["text_encoder_3"] == [None, None]
    size = sum(p.stat().st_size for p in (tmp_path / "m").rglob("*.safetensors"))
    assert size <= 40_000_000
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "m", text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.shift_factor == 0.0 and pipe.transformer.config.in_channels == 4
    out = pipe("a big red circle on a white background", num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    model = load_model(str(tmp_path / "m"), device="cpu", dtype="fp32")  # the path a hub SD3 folder takes
    assert model.family.name == "sd3" and model.text_encoder_3 is None and model.transformer.config.num_layers == 4


def test_the_anneal_falls_from_the_full_rate_to_nothing_by_the_nearer_limit():
    from lab.shapes.train_mmdit import annealed

    assert annealed(0, 600, 0, None) == 1.0
    assert annealed(300, 600, 10, None) == pytest.approx(0.5)
    assert annealed(600, 600, 10, None) == pytest.approx(0.0) and annealed(900, 600, 10, None) == pytest.approx(0.0)
    assert annealed(60, 600, 50, 100) == pytest.approx(0.5)  # the steps are the nearer limit
    assert annealed(60, 600, 5, 100) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.1)))


def test_a_grown_transformer_draws_what_it_drew_until_training_opens_its_new_blocks():
    from lab.shapes.train_mmdit import grow

    cfg = Config(layers=3, heads=2, head_dim=8)
    small = build_transformer(cfg, 0, 32, 32).eval()
    with torch.no_grad():  # gates that a trained model has: nothing is zero by chance
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    big = grow(small, 2).eval()
    assert big.config.num_layers == 5 and big.transformer_blocks[-1].context_pre_only
    assert not any(b.context_pre_only for b in big.transformer_blocks[:-1])
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 7, 32, generator=g)
    pooled = torch.randn(2, 32, generator=g)
    t = torch.tensor([300.0, 800.0])
    with torch.no_grad():
        want = small(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample
        got = big(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # the new blocks are not dead: their gates get a gradient, so training can open them
    big.train()
    out = big(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample
    out.square().mean().backward()
    gate = big.transformer_blocks[2].norm1.linear.weight.grad
    d = gate.shape[0] // 6
    assert gate[2 * d:3 * d].abs().sum() > 0 and gate[5 * d:6 * d].abs().sum() > 0


def test_counts_weight_the_wide_worlds_scenes_and_bad_counts_are_refused(capsys):
    from lab.shapes.train_mmdit import main
    from lab.shapes.world import sample_wide_scene

    rng = np.random.default_rng(0)
    n = [len(sample_wide_scene(rng, counts=(0.0, 0.25, 0.75)).objects) for _ in range(400)]
    assert 1 not in n and 0.65 < n.count(3) / len(n) < 0.85
    for bad, said in [("0.5,0.5", "sum to 1"), ("a,b,c", "three probabilities"), ("0.5,0.6,-0.1", "sum to 1")]:
        with pytest.raises(SystemExit) as e:
            main(["--out", "unused", "--counts", bad])
        assert e.value.code == 2 and said in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--grow", "2"])
    assert "give --resume" in capsys.readouterr().err
