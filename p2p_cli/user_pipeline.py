"""A diffusers pipeline the user already has, as a Model: its components in place (nothing copied, moved or
cast), and the records of how it was quantized and offloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from p2p_cli.loading import Loading
from p2p_cli.models import Model, ModelLoadError, pipeline_parts


def from_pipeline(pipe: Any) -> Model:
    """A Model on a diffusers pipeline the user already has (StableDiffusionPipeline, StableDiffusionXLPipeline,
    StableDiffusion3Pipeline, FluxPipeline, however its components were built, quantized or offloaded): its
    networks and tokenizers used in place, nothing copied, moved or cast. The engine installs its attention
    processors for a run and restores the pipeline's own afterwards, and likewise sets its VAE's tiling and slicing
    for each decode and encode (placement.vae_tiling: the recipe's `vae:`, from the VAE's tile as the pipeline has
    it) and puts the pipeline's own settings back, so the pipeline generates as before.

    The scheduler is a new one made from the pipeline's config (its own keeps its state): SD and SDXL sample with
    DDIM with the settings SD's config lacks, as a folder loaded by name does. The device is where the pipeline
    computes (its execution device, under offload too), the dtype the denoiser's."""
    from diffusers import DDIMScheduler

    from p2p_cli.families import detect
    from p2p_cli.families.sd import SD_SCHEDULER

    parts = pipeline_parts(pipe)
    try:
        family = detect(parts)
    except ValueError as err:
        raise ModelLoadError(f"a {type(pipe).__name__}: {err}") from None
    scheduler = parts["scheduler"]
    if family.denoiser == "unet":  # as load_folder reads a folder's scheduler config: the keys its file held
        defaulted = set(scheduler.config.get("_use_default_values", ()))  # diffusers fills in its class's defaults
        config = {k: v for k, v in scheduler.config.items() if k not in defaulted}
        parts["scheduler"] = DDIMScheduler.from_config({**SD_SCHEDULER, **config})
    else:
        parts["scheduler"] = type(scheduler).from_config(scheduler.config)
    denoiser = parts.get("unet", parts.get("transformer"))
    device = getattr(pipe, "_execution_device", None) or pipe.device
    name = pipe.name_or_path
    path = str(Path(name).resolve()) if name and Path(name).is_dir() else None
    options = {k: pipe.config[k] for k in ("force_zeros_for_empty_prompt", "is_distilled") if k in pipe.config}
    if isinstance(getattr(pipe, "system_message", None), str):  # Flux2Pipeline's, which a user may have changed
        options["system_message"] = pipe.system_message
    return Model(**parts, family=family, options=options, id=path or name or f"pipeline:{type(pipe).__name__}",
                 path=path, device=torch.device(device), dtype=denoiser.dtype, loading=pipeline_loading(parts))


def pipeline_loading(parts: dict[str, Any]) -> Loading:
    """How a user's pipeline was quantized and offloaded, for the records (run.json, the inversion cache's key):
    each quantized network's backend and config type ("torchao:Int8WeightOnlyConfig", "gguf", "bitsandbytes_4bit"),
    and "pipeline" when offload hooks sit on its networks."""
    from p2p_cli.placement import has_offload_hooks

    quantize, hooked = [], False
    for name, net in parts.items():
        if not isinstance(net, torch.nn.Module):
            continue
        hooked = hooked or has_offload_hooks(net)
        quantizer = getattr(net, "hf_quantizer", None)
        if quantizer is not None:
            config = quantizer.quantization_config
            kind = str(getattr(config, "quant_method", "quantized")).split(".")[-1].lower()
            detail = getattr(config, "quant_type", None)
            detail = type(detail).__name__ if detail is not None and not isinstance(detail, str) else detail
            quantize.append((name, f"{kind}:{detail}" if detail else kind))
    return Loading(tuple(sorted(quantize)), "pipeline" if hooked else "none")


def as_model(model: Any) -> Model:
    """A Model as it is, or one on a diffusers pipeline's components (from_pipeline)."""
    if isinstance(model, Model):
        return model
    if hasattr(model, "components") and hasattr(model, "config"):  # a diffusers DiffusionPipeline
        return from_pipeline(model)
    raise TypeError(f"a model is a p2p Model (load_model) or a diffusers pipeline, not {type(model).__name__}")
