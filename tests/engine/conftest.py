"""Shared engine fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def picture() -> torch.Tensor:
    """A blocky random (3, 128, 128) picture with 8-bit values (seed 1; test_inversion.py and
    test_inversion_cache_faults.py draw their own from seed 0)."""
    gen = torch.Generator().manual_seed(1)
    small = (torch.rand(3, 16, 16, generator=gen) * 255).round() / 255
    return torch.nn.functional.interpolate(small[None], size=(128, 128), mode="nearest")[0]


def invert_twice(model, picture: torch.Tensor, prompt: str, method: str, steps: int, cache):
    """(first, again, hit): the same inversion asked for twice through the cache; the second should be a hit."""
    from p2p_cli.files.inversion_cache import cached_invert

    first, _ = cached_invert(model, picture, prompt=prompt, method=method, steps=steps, guidance=7.5, cache=cache)
    again, hit = cached_invert(model, picture, prompt=prompt, method=method, steps=steps, guidance=7.5, cache=cache)
    return first, again, hit
