"""Real-image inversion on the tiny model: null-text retraces better than DDIM; the cache hits and misses."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.files import inversion_cache
from p2p_cli.engine.inversion import Inversion, encode_image, invert, psnr, reconstruct, reconstruct_latent
from p2p_cli.files.inversion_cache import cached_invert, load_inversion
from p2p_cli.engine.pipeline import decode_latents, encode_prompts, run_edit
from p2p_cli.recipe import parse_recipe

PROMPT = "a big red circle on a white background"
STEPS = 4


@pytest.fixture(scope="module")
def picture() -> torch.Tensor:
    """A blocky random (3, 128, 128) picture with 8-bit values."""
    gen = torch.Generator().manual_seed(0)
    small = (torch.rand(3, 16, 16, generator=gen) * 255).round() / 255
    return torch.nn.functional.interpolate(small[None], size=(128, 128), mode="nearest")[0]


def test_null_text_retraces_better_than_ddim_and_run_edit_reproduces_it(tiny_model, picture):
    z0 = encode_image(tiny_model, picture[None])
    with torch.no_grad():
        ceiling = decode_latents(tiny_model, z0)[0]  # the VAE alone
    results = {}
    for method in ("ddim", "negative-prompt", "null-text"):
        inv = invert(tiny_model, picture, PROMPT, method=method, steps=STEPS, guidance=7.5)
        assert inv.latent.shape == (1, 4, 16, 16) and inv.uncond.shape == (STEPS, 77, 32)
        assert inv.seconds > 0 and inv.vae_psnr == pytest.approx(psnr(ceiling, picture))
        results[method] = (inv, reconstruct_latent(tiny_model, inv, PROMPT, 7.5))
    error = {m: torch.mean((z - z0) ** 2).item() for m, (_, z) in results.items()}
    assert error["null-text"] < 0.7 * error["ddim"], error
    with torch.no_grad():
        images = {m: decode_latents(tiny_model, z)[0] for m, (_, z) in results.items()}
    assert psnr(images["null-text"], ceiling) > psnr(images["ddim"], ceiling)
    with torch.no_grad():
        cond, empty = encode_prompts(tiny_model, [PROMPT, ""]).hidden.float().split(1)
    assert torch.equal(results["negative-prompt"][0].uncond, cond.expand(STEPS, -1, -1))
    assert torch.equal(results["ddim"][0].uncond, empty.expand(STEPS, -1, -1))
    assert not torch.allclose(results["null-text"][0].uncond[0], results["null-text"][0].uncond[-1])  # per step

    inv = results["null-text"][0]  # the source row of an edit IS the reconstruction
    rec = reconstruct(tiny_model, inv, PROMPT, 7.5)
    assert torch.equal(rec, images["null-text"])
    target = "a big blue circle on a white background"
    recipe = parse_recipe({"source": PROMPT, "steps": STEPS, "edits": [{"target": target}]})
    edited = run_edit(tiny_model, recipe, latent=inv.latent, uncond_per_step=inv.uncond)
    assert torch.allclose(edited.images[0], rec, atol=1e-4)


def test_cache_hit_skips_the_inversion_and_changes_miss(tiny_model, tiny_v_model, picture, tmp_path, monkeypatch):
    settings = dict(prompt=PROMPT, method="ddim", steps=2, guidance=7.5)
    first, hit = cached_invert(tiny_model, picture, **settings, cache=tmp_path)
    assert not hit and len(list(tmp_path.glob("*.safetensors"))) == 1
    assert first.settings["key"] and first.settings["image_sha256"]

    calls = []

    def fake_invert(model, image, prompt, **kw):
        calls.append(prompt)
        return Inversion(torch.zeros(1, 4, 16, 16), torch.zeros(kw["steps"], 77, 32), kw["method"], 0.1, {})

    monkeypatch.setattr(inversion_cache, "invert", fake_invert)
    again, hit = cached_invert(tiny_model, picture, **settings, cache=tmp_path)
    assert hit and calls == []
    assert torch.equal(again.latent, first.latent) and torch.equal(again.uncond, first.uncond)
    assert again.seconds == first.seconds and again.settings == first.settings

    changed = picture.clone()
    changed[:, 0, 0] = 1 - changed[:, 0, 0]  # one pixel
    misses = [
        dict(image=changed), dict(prompt="a big red circle"), dict(steps=3), dict(guidance=5.0),
        dict(method="negative-prompt"), dict(negative_prompt="blurry"), dict(model=tiny_v_model),
    ]
    for change in misses:
        args = {"model": tiny_model, "image": picture, **settings, **change}
        _, hit = cached_invert(args.pop("model"), args.pop("image"), **args, cache=tmp_path)
        assert not hit, change
    assert len(calls) == len(misses)

    path = next(p for p in tmp_path.glob("*.safetensors") if p.stem == first.settings["key"])
    path.write_bytes(path.read_bytes()[:100])  # a damaged file is a miss, then rewritten
    assert load_inversion(path) is None
    with pytest.warns(UserWarning, match="is damaged .* removed it and inverting again"):
        _, hit = cached_invert(tiny_model, picture, **settings, cache=tmp_path)
    assert not hit and load_inversion(path, first.settings["key"]) is not None
