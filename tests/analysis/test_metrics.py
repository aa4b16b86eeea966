"""Edit metrics on known image pairs, and the CLIP columns with a tiny random CLIP built from config."""

from __future__ import annotations

import math

import pytest
import torch

from p2p_cli.analysis.metrics import (
    ClipScorer, MetricUnavailable, clip_pixels, clip_score, directional_similarity, psnr, ssim,
)


@pytest.fixture
def image():
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=gen), size=(64, 64), mode="bilinear")
    return smooth[0]  # (3, 64, 64) in [0, 1]


def noised(image, amount, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (image + amount * torch.randn(image.shape, generator=gen)).clamp(0, 1)


def test_identical_images():
    img = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(2))
    assert ssim(img, img.clone()) == pytest.approx(1.0, abs=1e-12)
    assert psnr(img, img.clone()) == math.inf


def test_noise_scores_lower_the_more_there_is(image):
    a, b = noised(image, 0.05), noised(image, 0.2)
    assert 1 > ssim(image, a) > ssim(image, b) > 0
    assert math.inf > psnr(image, a) > psnr(image, b) > 0
    assert psnr(image, image * 0 + image.mean()) < psnr(image, a)
    uniform = torch.full_like(image, 0.5)
    assert psnr(uniform, uniform + 0.1) == pytest.approx(20.0)  # 10 log10(1 / 0.01)


def test_background_ignores_changes_inside_the_mask(image):
    mask = torch.zeros(64, 64)
    mask[16:40, 20:44] = 1  # the edited region
    edited = image.clone()
    edited[:, mask.bool()] = torch.rand(3, int(mask.sum()), generator=torch.Generator().manual_seed(3))
    keep = 1 - mask
    assert ssim(image, edited, keep) == pytest.approx(1.0, abs=1e-12)
    assert psnr(image, edited, keep) == math.inf
    assert ssim(image, edited) < 0.9 and psnr(image, edited) < 30
    outside = noised(image, 0.1) * keep + image * mask  # changes outside do count
    assert ssim(image, outside, keep) < 0.95
    assert ssim(image, edited, torch.zeros(64, 64)) is None and psnr(image, edited, torch.zeros(64, 64)) is None


def test_clip_pixels_resize_and_crop():
    x = clip_pixels(torch.rand(2, 3, 64, 96), 32)
    assert x.shape == (2, 3, 32, 32)
    grey = clip_pixels(torch.full((1, 3, 40, 40), 0.5), 32)
    assert torch.allclose(grey[0, :, 0, 0], (0.5 - torch.tensor([0.48145466, 0.4578275, 0.40821073]))
                          / torch.tensor([0.26862954, 0.26130258, 0.27577711]), atol=1e-5)


def test_clip_scores_with_a_tiny_clip(tiny_clip_dir, image):
    scorer = ClipScorer(str(tiny_clip_dir)).load()
    images = torch.stack([image, noised(image, 0.3), image.flip(-1)])
    feats = scorer.image_features(images)
    texts = scorer.text_features(["a photo of a cat", "a photo of a dog", "a photo of a cat"])
    assert feats.shape == (3, 16) and texts.shape == (3, 16)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3)) and torch.allclose(texts.norm(dim=-1), torch.ones(3))
    assert torch.allclose(texts[0], texts[2])
    for i in range(3):
        score = clip_score(feats[i], texts[1])
        assert math.isfinite(score) and 0 <= score <= 100
    d = directional_similarity(feats[0], feats[1], texts[0], texts[1])
    assert d is not None and math.isfinite(d) and -1 <= d <= 1
    assert directional_similarity(feats[0], feats[1], texts[0], texts[2]) is None  # same prompt: no text change


def test_clip_unavailable_says_why(tmp_path, monkeypatch):
    with pytest.raises(MetricUnavailable, match="no CLIP model folder at"):
        ClipScorer(str(tmp_path / "nowhere")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricUnavailable, match="has no config.json"):
        ClipScorer(str(tmp_path / "empty")).load()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MetricUnavailable, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        ClipScorer("nobody-p2p-test/not-a-clip").load()
