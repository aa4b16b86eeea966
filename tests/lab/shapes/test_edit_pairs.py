"""Edit pairs the model draws itself (lab/shapes/edit_pairs.py, train_mmdit --edit-sources): a drawing is read back
into the scene it stands for or refused, an edit changes one attribute of one object, the pairs share their
drawing's noise, and the drawing is the diffusers pipeline's sampler."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lab.shapes.edit_pairs import edited, euler_sample, pairs_from, redraw
from lab.shapes.oracle import read
from lab.shapes.world import POSITIONS, is_heldout, render, sample_scene, sample_wide_scene

from p2p_cli.models import bundled_weights

needs_bundled = pytest.mark.skipif(not (bundled_weights() / "vae").is_dir(), reason="bundled shapes model absent")


def _scenes(n: int, seed: int = 0):
    """Wide and grid scenes whose objects differ in colour (identical objects may pair either way round)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        s = (sample_wide_scene if len(out) % 2 else sample_scene)(rng)
        if len({o.colour for o in s.objects}) == len(s.objects):
            out.append(s)
    return out


def test_a_crisp_drawing_reads_back_as_its_own_scene():
    read_back = 0
    for scene in _scenes(60):
        back = redraw(scene, render(scene))
        if back is None:  # an object whose redrawn centroid crosses a cell's edge by a fraction of a pixel
            continue
        read_back += 1
        assert back.places == scene.places and back.background == scene.background
        for a, b in zip(scene.objects, back.objects):
            (ax, ay), (bx, by) = a.centre(), b.centre()
            assert (a.shape, a.colour, a.size) == (b.shape, b.colour, b.size)
            assert max(abs(ax - bx), abs(ay - by), abs(a.r() - b.r())) <= 1.5
            if scene.places:
                assert b.position == a.position
    assert read_back >= 57


def test_a_drawing_that_cannot_stand_for_its_caption_is_refused():
    two = next(s for s in _scenes(40, seed=1) if len(s.objects) == 2)
    missing = replace(two, objects=two.objects[:1])
    assert redraw(two, render(missing)) is None  # an object missing
    other_bg = next(b for b in ("white", "black", "gray") if b != two.background)
    assert redraw(two, render(replace(two, background=other_bg))) is None
    recoloured = replace(two, objects=[replace(two.objects[0], colour=next(
        c for c in ("red", "green", "blue", "yellow") if c not in {o.colour for o in two.objects})), two.objects[1]])
    assert redraw(two, render(recoloured)) is None  # nothing of the first object's colour
    placed = next(s for s in _scenes(40, seed=2) if s.places and s.objects[0].radius < 0)  # a grid scene
    o = placed.objects[0]
    moved = POSITIONS[(POSITIONS.index(o.position) + 4) % 9]
    caption_says = replace(placed, objects=[replace(o, position=moved)] + placed.objects[1:])
    drawn = render(placed)
    assert redraw(placed, drawn) is not None
    assert redraw(caption_says, drawn) is None  # the caption names a place the drawing missed


def test_an_edit_changes_one_attribute_of_one_object_and_never_makes_a_held_out_one():
    rng = np.random.default_rng(3)
    kinds = set()
    for scene in _scenes(200, seed=3):
        new = edited(rng, scene)
        if new is None:
            continue
        changes = [(a, b) for a, b in zip(scene.objects, new.objects) if a != b]
        assert len(changes) == 1 and len(new.objects) == len(scene.objects)
        a, b = changes[0]
        diff = {f for f in ("shape", "colour", "size", "position", "cx", "cy", "radius")
                if getattr(a, f) != getattr(b, f)}
        assert diff in ({"shape"}, {"colour"})
        kinds |= diff
        if diff == {"colour"}:
            assert b.colour not in {o.colour for o in scene.objects}
        assert not any(is_heldout(o) for o in new.objects)
    assert kinds == {"shape", "colour"}


def test_euler_lands_on_the_end_of_a_straight_path():
    x0, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    got = euler_sample(lambda x, sigma: (x - x0) / sigma if sigma > 0 else noise - x0, noise, 7)
    assert torch.allclose(got, x0, atol=1e-5)
    with pytest.raises(AssertionError):
        assert torch.allclose(euler_sample(lambda x, sigma: noise - 2 * x0, noise, 7), x0, atol=1e-3)


def test_pairs_share_their_drawings_noise_and_differ_in_one_word():
    """The rows pairs_from makes from drawings (here the world's own crisp pictures of the captions, which all
    read back): source then edit, the drawing's noise on both, captions one word apart, the source's rendering."""
    rng = np.random.default_rng(5)
    scenes = _scenes(8, seed=5)
    with_bg = [bool(i % 3) for i in range(8)]
    noise = torch.randn(8, 4, 16, 16)
    x, caps, out, bg, paired, n = pairs_from(rng, scenes, with_bg, np.stack([render(s) for s in scenes]), noise)
    assert n >= 6 and x.shape == (2 * n, 3, 64, 64) and paired.shape == (2 * n, 4, 16, 16) and len(caps) == 2 * n
    for i in range(n):
        src, tgt = caps[2 * i].split(), caps[2 * i + 1].split()
        assert torch.equal(paired[2 * i], paired[2 * i + 1]) and any(torch.equal(paired[2 * i], e) for e in noise)
        assert len(src) == len(tgt) and sum(a != b for a, b in zip(src, tgt)) == 1
        assert bg[2 * i] == bg[2 * i + 1] and ("background" in caps[2 * i]) == bg[2 * i]
        assert torch.equal(x[2 * i], torch.from_numpy(render(out[2 * i])).permute(2, 0, 1).float() / 127.5 - 1)
    blank = np.stack([render(replace(s, objects=[])) for s in scenes])  # nothing drawn: nothing kept
    assert pairs_from(rng, scenes, with_bg, blank, noise)[-1] == 0


@needs_bundled
@pytest.mark.slow  # long; make test-slow
def test_the_drawing_is_the_sd3_pipelines_own_sampler(tmp_path):
    """SelfDrawnPairs.draw (explicit attention with one zero-T5 row, Euler on even sigmas, guidance) against
    diffusers' StableDiffusion3Pipeline given the same sigmas, latents and guidance."""
    from diffusers import StableDiffusion3Pipeline

    from lab.arch import clip_tokenizer
    from lab.shapes.train import Tokens
    from lab.shapes.train_mmdit import Config, SelfDrawnPairs, bundled_parts, build_transformer, save

    vae, text = bundled_parts(bundled_weights())
    cfg = Config(layers=2, edit_sources=2, edit_steps=4)
    model = build_transformer(cfg, 0, 2 * text.config.hidden_size, 2 * text.config.projection_dim).eval()
    with torch.no_grad():
        for p in model.parameters():  # the zero-initialised output layer would draw the noise itself
            p.add_(0.05 * torch.randn_like(p))
    save(tmp_path / "m", model, vae, text, clip_tokenizer(), cfg.shift)
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "m", text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    captions = ["a big red circle on a white background", "a small blue square and a big green triangle"]
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = SelfDrawnPairs(model, vae, text, Tokens(clip_tokenizer()), sample_wide_scene, cfg).draw(captions, noise)
    theirs = pipe(captions, latents=noise.clone(), sigmas=list(np.linspace(1.0, 0.0, 5)[:-1]), guidance_scale=7.5,
                  output_type="np").images
    theirs = np.round(theirs * 255).astype(np.int16)
    assert np.abs(ours.astype(np.int16) - theirs).max() <= 1


@needs_bundled
@pytest.mark.slow  # long; make test-slow
def test_the_unet_drawing_is_the_sd_pipelines_own_sampler():
    """lab.shapes.train.SelfDrawnPairs.draw (DDIM, guidance) against diffusers' StableDiffusionPipeline on the
    bundled UNet model, given the same latents, steps and guidance."""
    from diffusers import StableDiffusionPipeline

    from lab.arch import clip_tokenizer
    from lab.shapes.train import Config, SelfDrawnPairs, Tokens

    pipe = StableDiffusionPipeline.from_pretrained(bundled_weights(), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    cfg = Config(edit_sources=2, edit_steps=6)
    captions = ["a big red circle in the top left on a white background", "a small blue square on the right"]
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = SelfDrawnPairs(pipe.unet, pipe.text_encoder, pipe.vae, Tokens(clip_tokenizer()), sample_scene,
                          cfg).draw(captions, noise)
    theirs = pipe(captions, latents=noise.clone(), num_inference_steps=6, guidance_scale=7.5, output_type="np").images
    theirs = np.round(theirs * 255).astype(np.int16)
    assert np.abs(ours.astype(np.int16) - theirs).max() <= 1
    assert len(read(ours[0])) == 1  # the bundled model draws the one object
