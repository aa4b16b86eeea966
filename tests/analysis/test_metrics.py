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


def _ssim_map_by_the_book(a, b):
    """SSIM's five local means, each its own 11x11 Gaussian convolution (Wang et al. 2004), reflected borders."""
    import torch.nn.functional as F

    from p2p_cli.analysis.metrics import gaussian_window

    window = gaussian_window(11, 1.5, a.dtype)[None, None].expand(3, 1, -1, -1)

    def mean(x):
        return F.conv2d(F.pad(x, [5] * 4, mode="reflect"), window, groups=3)

    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b, cov = mean(a * a) - mu_a**2, mean(b * b) - mu_b**2, mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_ssim_map_equals_five_separate_2d_convolutions(image, dtype):
    """float64 (p2p's metric) runs the Gaussian as two 1-D passes: equal to 1e-11; float32 (PIE-Bench's) keeps
    the 11x11 window, bit for bit, so that it rounds as the benchmark's evaluator does."""
    from p2p_cli.analysis.metrics import ssim_map

    a, b = image[None].to(dtype), noised(image, 0.1)[None].to(dtype)
    ours, book = ssim_map(a, b), _ssim_map_by_the_book(a, b)
    if dtype == torch.float64:
        assert (ours - book).abs().max() < 1e-11
    else:
        assert torch.equal(ours, book)
