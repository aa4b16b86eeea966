"""Invert once, edit many: inversions saved as safetensors, found again by a hash of what made them."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from p2p_cli.families import Geometry
from p2p_cli.invert import Inversion, NullTextSettings, Progress, invert
from p2p_cli.models import Model

FORMAT = "p2p-inversion/1"
FILE_NAME = "inversion.safetensors"


def cache_dir() -> Path:
    """$P2P_CACHE/inversions, else $XDG_CACHE_HOME/p2p/inversions, else ~/.cache/p2p/inversions."""
    root = os.environ.get("P2P_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "p2p"
    return Path(root).expanduser() / "inversions"


def image_bytes(image: torch.Tensor) -> bytes:
    """The 8-bit pixels of a (3, H, W) image in [0, 1], with its shape: what the hash of a picture covers."""
    pixels = image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).contiguous()
    return repr(tuple(pixels.shape)).encode() + pixels.numpy().tobytes()


_fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # unet -> digest, freed with the model


def model_fingerprint(model: Model) -> str:
    """A hash of the first values of every weight (and each shape): retrained weights under one id differ."""
    if model.unet in _fingerprints:
        return _fingerprints[model.unet]
    h = hashlib.sha256()
    for net in model.networks():
        heads = []
        for name, p in net.named_parameters():
            h.update(f"{name}{tuple(p.shape)}".encode())
            heads.append(p.detach().flatten()[:4].float())
        h.update(torch.cat(heads).cpu().numpy().tobytes())  # one transfer per network
    digest = h.hexdigest()
    _fingerprints[model.unet] = digest
    return digest


def inversion_key(image: torch.Tensor, model: Model, *, prompt: str, method: str, steps: int, guidance: float,
                  negative_prompt: str = "", null_text: NullTextSettings = NullTextSettings(),
                  geo: Geometry | None = None) -> dict:
    """What an inversion depends on, with its hash under "key": the picture, prompt, model and settings."""
    what = {
        "format": FORMAT,
        "image_sha256": hashlib.sha256(image_bytes(image)).hexdigest(),
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "method": method,
        "steps": steps,
        "guidance": float(guidance),
        "null_text": vars(null_text) if method == "null-text" else None,
        "model": {"id": model.id, "revision": model.revision, "weights": model_fingerprint(model),
                  "dtype": str(model.dtype).removeprefix("torch."),
                  "scheduler": {k: v for k, v in model.scheduler.config.items() if not k.startswith("_")}},
    }
    if model.loras:  # LoRA adapters change the weights (the fingerprint is taken once per UNet)
        what["model"]["loras"] = [(lora["sha256"], lora["scale"]) for lora in model.loras]
    if model.family.uses_micro_conditioning:  # SDXL: the size and crop ids condition every step
        geo = geo or Geometry(size=tuple(image.shape[-2:]))
        what["geometry"] = model.family.time_ids(geo, 1)[0].tolist()
    what["key"] = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    return what


def save_inversion(inversion: Inversion, path: Path, key: str) -> Path:
    """Write the inversion (tensors, and its settings as metadata) to `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "key": key,
        "method": inversion.method,
        "seconds": repr(inversion.seconds),
        "vae_psnr": repr(inversion.vae_psnr),
        "settings": json.dumps(inversion.settings, sort_keys=True),
    }
    tensors = {"latent": inversion.latent.float().contiguous(), "uncond": inversion.uncond.float().contiguous()}
    tensors.update({f"uncond_added.{k}": v.float().contiguous() for k, v in inversion.uncond_added.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_inversion(path: Path, key: str | None = None) -> Inversion | None:
    """The inversion in `path`, or None when it is missing, unreadable or made for another key."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or (key is not None and meta.get("key") != key):
                return None
            latent, uncond = f.get_tensor("latent"), f.get_tensor("uncond")
            added = {k.removeprefix("uncond_added."): f.get_tensor(k) for k in f.keys() if k.startswith("uncond_added.")}
        vae_psnr = float(meta["vae_psnr"]) if meta.get("vae_psnr") not in (None, "None") else None
        return Inversion(latent=latent, uncond=uncond, method=meta["method"], seconds=float(meta["seconds"]),
                         settings=json.loads(meta["settings"]), vae_psnr=vae_psnr, uncond_added=added)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):  # partial or foreign: a miss
        return None


def cached_invert(model: Model, image: torch.Tensor, *, prompt: str, method: str, steps: int, guidance: float,
                  negative_prompt: str = "", null_text: NullTextSettings = NullTextSettings(),
                  progress: Progress | None = None, cache: Path | None = None,
                  geo: Geometry | None = None) -> tuple[Inversion, bool]:
    """(inversion, whether it came from the cache): invert only when no earlier inversion matches.

    The key (in inversion.settings["key"]) hashes the 8-bit picture, the prompts, the method and its settings,
    and the model (id, revision, weights, dtype, scheduler).
    """
    what = inversion_key(image, model, prompt=prompt, method=method, steps=steps, guidance=guidance,
                         negative_prompt=negative_prompt, null_text=null_text, geo=geo)
    key = what["key"]
    path = (cache or cache_dir()) / f"{key}.safetensors"
    found = load_inversion(path, key)
    if found is not None:
        return found, True
    inversion = invert(model, image, prompt, method=method, steps=steps, guidance=guidance,
                       negative_prompt=negative_prompt, null_text=null_text, progress=progress, geo=geo)
    inversion.settings.update(key=key, image_sha256=what["image_sha256"], model=what["model"])
    try:
        save_inversion(inversion, path, key)
    except OSError as err:  # a read-only cache costs the next run its time, not this run its result
        warnings.warn(f"could not cache the inversion in {path.parent}: {err.strerror or err}", stacklevel=2)
    return inversion, False
