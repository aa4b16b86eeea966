"""Invert once, edit many: inversions saved as safetensors, found again by a hash of what made them."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from p2p_cli.fingerprint import fingerprint
from p2p_cli.families import Geometry
from p2p_cli.files import FileWarning
from p2p_cli.engine.inversion import NOISE_MAPS, Inversion, NullTextSettings, Progress, invert
from p2p_cli.models import Model
from p2p_cli.placement import vae_tile_for
from p2p_cli.paths import check_regular

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


def _head(weight: torch.Tensor) -> torch.Tensor:
    """A weight's first 4 values; a torchao tensor (quantized: no flatten) dequantized first."""
    try:
        return weight.flatten()[:4].float()
    except NotImplementedError:
        return weight.dequantize().flatten()[:4].float()


def model_fingerprint(model: Model) -> str:
    """A hash of the first values of every weight (and each shape): retrained weights under one id differ."""
    if model.denoiser in _fingerprints:
        return _fingerprints[model.denoiser]
    h = hashlib.sha256()
    for net in model.networks():
        heads = []
        for name, p in net.named_parameters():
            h.update(f"{name}{tuple(p.shape)}".encode())
            heads.append(_head(p.detach()))
        h.update(torch.cat(heads).cpu().numpy().tobytes())  # one transfer per network
    digest = h.hexdigest()
    _fingerprints[model.denoiser] = digest
    return digest


def inversion_key(image: torch.Tensor, model: Model, *, prompt: str, method: str, steps: int, guidance: float,
                  negative_prompt: str = "", null_text: NullTextSettings = NullTextSettings(),
                  geo: Geometry | None = None, vae: str | None = None) -> dict:
    """What an inversion depends on, with its hash under "key": the picture, prompt, model and settings (and the
    VAE's tile where the picture is encoded in tiles)."""
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
    if not model.loading.plain:  # quantized weights give other noise (offload is recorded too: it is the setting)
        what["model"]["loading"] = model.loading.record()
    if model.loras:  # LoRA adapters change the weights (the fingerprint is taken once per UNet)
        what["model"]["loras"] = [(lora["sha256"], lora["scale"]) for lora in model.loras]
    if geo is not None and geo.shift is not None:  # SD3 / FLUX: a recipe's sampler shift moves every step
        what["shift"] = float(geo.shift)
    tile = vae_tile_for(model.vae, vae, tuple(image.shape[-2:]))
    if tile is not None:  # diffusers' tiled encoder gives a slightly different latent
        what["vae_tile"] = tile
    if model.family.uses_micro_conditioning:  # SDXL: the size and crop ids condition every step
        geo = geo or Geometry(size=tuple(image.shape[-2:]))
        what["geometry"] = model.family.time_ids(geo, 1)[0].tolist()
    what["key"] = fingerprint(what)
    return what


class CacheEntryError(ValueError):
    """A cache file that is there but cannot be trusted; the message says what is wrong with it."""


LATENT_LIMIT = 1e4  # |values| of a DDIM-inverted latent sit within a few units; beyond this it is not one


def save_inversion(inversion: Inversion, path: Path, key: str) -> Path:
    """Write the inversion (tensors, and its settings as metadata) to `path`, atomically; OSError on failure
    (a full disk included: safetensors' own SafetensorError is turned into one)."""
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
    tensors = {"latent": inversion.latent.float().contiguous().clone(), "uncond": inversion.uncond.float().contiguous()}
    tensors.update({f"uncond_added.{k}": v.float().contiguous() for k, v in inversion.uncond_added.items()})
    if inversion.trajectory is not None:
        tensors["trajectory"] = inversion.trajectory.float().contiguous().clone()  # latent is a view of its start
    if inversion.noise is not None:
        tensors["noise"] = inversion.noise.float().contiguous()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except SafetensorError as err:
        raise OSError(f"cannot write {path}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_inversion(path: Path, key: str | None = None) -> Inversion:
    """The inversion in `path`; CacheEntryError when the file is damaged, foreign, or made for another key.

    Checks what the file claims (format, key, method, settings) and what it holds: two float32 tensors of the
    right ranks, every value finite and of a sane size. FileNotFoundError when there is no file."""
    try:
        check_regular(path)  # a FIFO at the entry's path would hang every edit of the picture
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            if meta.get("format") != FORMAT:
                raise CacheEntryError(f"not a {FORMAT} file (format {meta.get('format')!r})")
            if key is not None and meta.get("key") != key:
                raise CacheEntryError("made for another picture, prompt, model or settings than its name says")
            extra = {n for n in names if n.startswith("uncond_added.")}  # SDXL: the unconditional rows' extras
            wanted = {"latent", "uncond"} | ({"trajectory"} if meta.get("method") == "direct" else set()) | (
                {"noise"} if meta.get("method") in NOISE_MAPS else set())
            if names - extra != wanted:
                raise CacheEntryError(f"holds the tensors {sorted(names)}, not {' and '.join(sorted(wanted))}")
            latent, uncond = f.get_tensor("latent"), f.get_tensor("uncond")
            trajectory = f.get_tensor("trajectory") if "trajectory" in names else None
            noise = f.get_tensor("noise") if "noise" in names else None
            added = {n.removeprefix("uncond_added."): f.get_tensor(n) for n in sorted(extra)}
    except FileNotFoundError:
        raise
    except CacheEntryError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, TypeError) as err:  # truncated, garbage
        raise CacheEntryError(f"unreadable ({type(err).__name__}: {str(err)[:200]})") from None
    try:
        settings = json.loads(meta["settings"])
        seconds = float(meta["seconds"])
        vae_psnr = float(meta["vae_psnr"]) if meta.get("vae_psnr") not in (None, "None") else None
        method = meta["method"]
    except (KeyError, ValueError, TypeError) as err:
        raise CacheEntryError(f"its settings are damaged ({type(err).__name__}: {err})") from None
    if not isinstance(settings, dict) or settings.get("method", method) != method:
        raise CacheEntryError("its settings are damaged")
    checks = [("latent", latent, 4), ("uncond", uncond, 3)] + [(f"uncond_added.{k}", v, None) for k, v in added.items()]
    checks += [("trajectory", trajectory, 4)] if trajectory is not None else []
    checks += [("noise", noise, 4)] if noise is not None else []
    for name, tensor, rank in checks:
        if tensor.dtype != torch.float32 or (rank is not None and tensor.dim() != rank) or 0 in tensor.shape:
            raise CacheEntryError(f"{name} is {tensor.dtype} of shape {tuple(tensor.shape)}, not a float32 tensor"
                                  + (f" of rank {rank}" if rank is not None else ""))
        if not torch.isfinite(tensor).all():
            raise CacheEntryError(f"{name} holds NaN or infinite values")
        if tensor.abs().max() > LATENT_LIMIT:
            raise CacheEntryError(f"{name} holds values beyond {LATENT_LIMIT:g}")
    if latent.shape[0] != 1:
        raise CacheEntryError(f"latent has shape {tuple(latent.shape)}, not one picture's")
    if trajectory is not None and (trajectory.shape[0] != uncond.shape[0] + 1 or trajectory.shape[1:] != latent.shape[1:]
                                   or not torch.equal(trajectory[:1], latent)):
        raise CacheEntryError(f"trajectory has shape {tuple(trajectory.shape)}; it must start at the latent and have"
                              " one latent more than there are steps")
    if noise is not None and (noise.shape[0] != uncond.shape[0] or noise.shape[1:] != latent.shape[1:]):
        raise CacheEntryError(f"noise has shape {tuple(noise.shape)}; it must have one map per step")
    return Inversion(latent=latent, uncond=uncond, method=method, seconds=seconds, settings=settings,
                     vae_psnr=vae_psnr, uncond_added=added, trajectory=trajectory, noise=noise)


def load_inversion(path: Path, key: str | None = None) -> Inversion | None:
    """The inversion in `path`, or None when it is missing, unreadable, damaged or made for another key."""
    try:
        return read_inversion(path, key)
    except (FileNotFoundError, CacheEntryError):
        return None


def check_fits(inversion: Inversion, model: Model, image: torch.Tensor, *, method: str, steps: int,
               prompt: str) -> None:
    """CacheEntryError when a loaded inversion does not fit the run that asks for it: the latent's channels and
    size against the model and picture, one unconditional embedding per step, the method, steps and prompt."""
    side = model.vae_scale
    want = (1, model.latent_channels, image.shape[-2] // side, image.shape[-1] // side)
    if tuple(inversion.latent.shape) != want:
        raise CacheEntryError(f"its latent has shape {tuple(inversion.latent.shape)}; this model and picture"
                              f" need {want}")
    if inversion.uncond.shape[0] != steps:
        raise CacheEntryError(f"it has {inversion.uncond.shape[0]} unconditional embeddings for {steps} steps")
    settings = inversion.settings
    for name, value in (("method", method), ("steps", steps), ("prompt", prompt)):
        if name in settings and settings[name] != value:
            raise CacheEntryError(f"its settings say {name} {settings[name]!r}, not {value!r}")
    if inversion.method != method:
        raise CacheEntryError(f"it is a {inversion.method} inversion, not {method}")


def cached_invert(model: Model, image: torch.Tensor, *, prompt: str, method: str, steps: int, guidance: float,
                  negative_prompt: str = "", null_text: NullTextSettings = NullTextSettings(),
                  progress: Progress | None = None, cache: Path | None = None,
                  geo: Geometry | None = None, vae: str | None = None,
                  warn: Callable[[str], None] | None = None) -> tuple[Inversion, bool]:
    """(inversion, whether it came from the cache): invert only when no earlier inversion matches.

    The key (in inversion.settings["key"]) hashes the 8-bit picture, the prompts, the method and its settings,
    and the model (id, revision, weights, dtype, scheduler). A cache entry that is damaged or does not fit is
    dropped with a warning and the picture is inverted again; failing to write the cache (read-only, full disk)
    is a warning too: the cache saves later runs time, it never fails this one.
    """
    warn = warn or (lambda message: warnings.warn(message, FileWarning, stacklevel=3))
    what = inversion_key(image, model, prompt=prompt, method=method, steps=steps, guidance=guidance,
                         negative_prompt=negative_prompt, null_text=null_text, geo=geo, vae=vae)
    key = what["key"]
    path = (cache or cache_dir()) / f"{key}.safetensors"
    try:
        found = read_inversion(path, key)
        check_fits(found, model, image, method=method, steps=steps, prompt=prompt)
        found.settings.pop("vae", None)  # the key holds the tile: this call's vae: encodes the picture alike
        found.settings.update({} if vae is None else {"vae": vae})
        return found, True
    except FileNotFoundError:
        pass
    except CacheEntryError as err:
        warn(f"the cached inversion {path} is damaged ({err}); removed it and inverting again")
        try:
            path.unlink()
        except OSError:
            pass
    inversion = invert(model, image, prompt, method=method, steps=steps, guidance=guidance,
                       negative_prompt=negative_prompt, null_text=null_text, progress=progress, geo=geo, vae=vae)
    inversion.settings.update(key=key, image_sha256=what["image_sha256"], model=what["model"])
    try:
        save_inversion(inversion, path, key)
    except OSError as err:  # a read-only cache or a full disk costs the next run its time, not this run its result
        warn(f"could not cache the inversion in {path.parent}: {err.strerror or err}; the edit goes on")
    return inversion, False
