"""The inversion cache is an optimisation and untrusted: a bad entry is dropped with a warning and the picture is
inverted again; failing to write it is a warning and the run goes on."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from p2p_cli.files import inversion_cache
from p2p_cli.files.inversion_cache import cached_invert, load_inversion

PROMPT = "a big red circle on a white background"
SETTINGS = dict(prompt=PROMPT, method="ddim", steps=2, guidance=7.5)


@pytest.fixture(scope="module")
def picture() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(3, 128, 128, generator=gen)


@pytest.fixture
def entry(tiny_model, picture, tmp_path):
    """(path of a good cache entry, its inversion)."""
    first, hit = cached_invert(tiny_model, picture, **SETTINGS, cache=tmp_path)
    assert not hit
    return tmp_path / f"{first.settings['key']}.safetensors", first


def rewrite(path, **tensors):
    """Replace tensors of a cache entry, keeping its metadata (key, settings): what a tamperer would do."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        data = {name: f.get_tensor(name) for name in f.keys()}
    data.update(tensors)
    save_file(data, str(path), metadata=meta)


@pytest.mark.parametrize("tamper, reason", [
    (dict(latent=torch.full((1, 4, 16, 16), float("nan"))), "latent holds NaN or infinite values"),
    (dict(uncond=torch.full((2, 77, 32), float("inf"))), "uncond holds NaN or infinite values"),
    (dict(latent=torch.zeros(1, 4, 8, 8)), "its latent has shape (1, 4, 8, 8); this model and picture need"
                                           " (1, 4, 16, 16)"),
    (dict(uncond=torch.zeros(5, 77, 32)), "it has 5 unconditional embeddings for 2 steps"),
    (dict(latent=torch.zeros(1, 4, 16, 16, dtype=torch.float16)), "latent is torch.float16 of shape"),
    (dict(uncond=torch.zeros(77, 32)), "uncond is torch.float32 of shape (77, 32), not a float32 tensor of rank 3"),
    (dict(latent=torch.full((1, 4, 16, 16), 1e30)), "latent holds values beyond 10000"),
    (dict(extra=torch.zeros(1)), "holds the tensors ['extra', 'latent', 'uncond'], not latent and uncond"),
], ids=["nan-latent", "inf-uncond", "latent-shape", "uncond-steps", "fp16", "rank", "huge", "extra-tensor"])
def test_a_tampered_entry_is_dropped_and_inverted_again(tiny_model, picture, tmp_path, entry, tamper, reason):
    path, first = entry
    rewrite(path, **tamper)
    warned = []
    again, hit = cached_invert(tiny_model, picture, **SETTINGS, cache=tmp_path, warn=warned.append)
    assert not hit  # it was used silently before
    assert len(warned) == 1 and f"the cached inversion {path} is damaged (" in warned[0] and reason in warned[0]
    assert warned[0].endswith("removed it and inverting again")
    assert torch.equal(again.latent, first.latent)  # inverted again: the same as the first time
    assert load_inversion(path, first.settings["key"]) is not None  # and the good entry is back


def test_a_truncated_or_foreign_entry_is_dropped(tiny_model, picture, tmp_path, entry):
    path, first = entry
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    warned = []
    _, hit = cached_invert(tiny_model, picture, **SETTINGS, cache=tmp_path, warn=warned.append)
    assert not hit and "is damaged (unreadable (SafetensorError" in warned[0]
    with safe_open(str(path), framework="pt") as f:  # the right key in a file that claims another method
        meta, data = f.metadata(), {n: f.get_tensor(n) for n in f.keys()}
    save_file(data, str(path), metadata={**meta, "settings": json.dumps({**json.loads(meta["settings"]),
                                                                         "prompt": "a cat"})})
    warned.clear()
    _, hit = cached_invert(tiny_model, picture, **SETTINGS, cache=tmp_path, warn=warned.append)
    assert not hit and "its settings say prompt 'a cat', not" in warned[0]


def test_a_full_disk_while_caching_is_a_warning_and_the_run_goes_on(tiny_model, picture, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No'
                              ' space left on device" })')

    monkeypatch.setattr(inversion_cache, "save_file", full)
    warned = []
    inversion, hit = cached_invert(tiny_model, picture, **SETTINGS, cache=tmp_path, warn=warned.append)
    assert not hit and inversion.latent.shape == (1, 4, 16, 16)
    assert len(warned) == 1 and warned[0].startswith(f"could not cache the inversion in {tmp_path}: cannot write")
    assert "No space left on device" in warned[0] and warned[0].endswith("the edit goes on")
    assert list(tmp_path.iterdir()) == []  # no temporary file left
