"""LoRA weights in a model, loaded with diffusers' own LoRA loader (PEFT adapters; safetensors files only).

The paper suggests combining Prompt-to-Prompt with styles; a LoRA changes the networks' weights, not the
attention maths, so every edit, map and inversion works on a model with LoRAs as on any other. Adapters
are added unfused, each at its scale, with the family's own diffusers pipeline as the loader (models.family_pipeline:
StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline, QwenImagePipeline,
Flux2KleinPipeline, Flux2Pipeline, ChromaPipeline), so the same file means the same weights here and in diffusers. They need the `peft` package (`pip install 'p2p-cli[lora]'`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from p2p_cli.models import ModelLoadError


class LoraError(ModelLoadError):
    """A LoRA file that cannot be used; the message says why and what to do."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    from p2p_cli.paths import open_regular

    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _loader(model: Any) -> Any:
    """The family's diffusers pipeline around the model's own components (nothing is copied): its LoRA loader."""
    from p2p_cli.models import family_pipeline

    pipe = family_pipeline(model)
    if not hasattr(pipe, "load_lora_weights"):
        raise LoraError(f"diffusers has no LoRA loader for {model.family.label} ({type(pipe).__name__})")
    return pipe


def apply_loras(model: Any, loras: list[tuple[str | Path, float]]) -> list[dict]:
    """Load each (path, scale) into the model as a PEFT adapter and activate them all at their scales.

    Returns and records in model.loras [{"path", "scale", "sha256"}]. The model is changed in place: load a
    fresh model for another set of LoRAs.
    """
    if not loras:
        return []
    if model.loras:
        raise LoraError("this model already has LoRA weights; load the model again for another set")
    try:
        import peft  # noqa: F401 - the loader needs it; say so before it fails deep inside diffusers
    except ImportError:
        raise LoraError("LoRA weights need the peft package: pip install 'p2p-cli[lora]' (or pip install peft)") from None
    pipe = _loader(model)
    names, scales, records = [], [], []
    for i, (path, scale) in enumerate(loras):
        path = Path(path)
        if path.suffix != ".safetensors":
            raise LoraError(f"{path}: only .safetensors LoRA files are loaded (pickled files can run code)")
        if not path.is_file():
            raise LoraError(f"{path}: no such file")
        name = f"p2p_lora_{i}"
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            raise LoraError(f"{path}: not LoRA weights diffusers can load into {model.family.label}: {err}") from None
        names.append(name)
        scales.append(float(scale))
        records.append({"path": str(path.resolve()), "scale": float(scale), "sha256": file_sha256(path)})
    pipe.set_adapters(names, adapter_weights=scales)
    for net in model.networks():
        net.to(model.device)  # adapters are made on the CPU
        if net is not model.vae and net.dtype != model.dtype:
            net.to(model.dtype)
    model.loras = records
    return records
