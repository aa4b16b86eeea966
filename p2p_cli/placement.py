"""Quantized parts and offloaded models, through diffusers' and transformers' own machinery only: the
quantization config each part's from_pretrained takes, a GGUF denoiser read with from_single_file, and the offload
hooks a diffusers pipeline installs (model, sequential, group) and removes, and the VAE's tiling and slicing for one
decode or encode (loading.py names the settings)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p2p_cli.loading import (DENOISERS, KINDS, Loading, diffusers_config, pipeline_config, tile_side,
                             transformers_config)
from p2p_cli.resolve import PIPELINES


class LoadingError(RuntimeError):
    """Loading settings a backend or family cannot take; the message names the setting and the fix."""


def check_backend(loading: Loading, device: str = "cuda") -> None:
    """Each quantization's package is installed (a clear line, not an ImportError deep in diffusers), and
    bitsandbytes runs on a CUDA device (diffusers' and transformers' bitsandbytes quantizers refuse the CPU)."""
    kinds = {kind for _, kind in loading.quantize}
    needs = {"torchao": {"int8", "fp8"} & kinds, "bitsandbytes": {"bnb-8bit", "bnb-4bit"} & kinds,
             "gguf": {k for k in kinds if k.endswith(".gguf")}}
    for package, used in needs.items():
        if not used:
            continue
        try:
            __import__(package)
        except ImportError:
            raise LoadingError(f"quantize: {', '.join(sorted(used))} needs the {package} package (pip install"
                               f" {package}, or pip install 'p2p[quantize]')") from None
    if needs["bitsandbytes"] and device != "cuda":
        raise LoadingError(f"quantize: {', '.join(sorted(needs['bitsandbytes']))} needs a CUDA GPU (diffusers' and"
                           f" transformers' bitsandbytes quantizers refuse {device}); use int8 or fp8 (torchao"
                           " weight-only) or a .gguf file here")


def part_kwargs(loading: Loading, part: str, dtype) -> dict:
    """The from_pretrained keyword arguments of one part: its quantization config, or none."""
    kind = loading.kind(part)
    if kind is None or kind not in KINDS:
        return {}
    make = diffusers_config if part in DENOISERS or part == "vae" else transformers_config
    return {"quantization_config": make(kind, dtype)}


def pipeline_kwargs(loading: Loading, dtype) -> dict:
    """A pipeline's from_pretrained keyword arguments: PipelineQuantizationConfig of its quantized parts."""
    config = pipeline_config(loading, dtype)
    return {"quantization_config": config} if config is not None else {}


def gguf_denoiser(cls: Any, path: Path, folder: Path, part: str, dtype) -> Any:
    """A denoiser from a GGUF file (its weights stay quantized; computed in `dtype`), configured by the folder's
    `part`/config.json: diffusers' from_single_file with GGUFQuantizationConfig."""
    from diffusers import GGUFQuantizationConfig

    if not path.is_file():
        raise LoadingError(f"quantize.{part}: no GGUF file at {path}")
    try:
        return cls.from_single_file(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
                                    config=str(folder), subfolder=part, torch_dtype=dtype).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise LoadingError(f"quantize.{part}: cannot read {path} as this model's {part}: {err}") from None


def pipeline_class(family: str) -> Any:
    """The family's diffusers pipeline class (resolve.PIPELINES)."""
    import diffusers

    name = next(cls for cls, fam in PIPELINES.items() if fam == family)
    return getattr(diffusers, name)


def offload_pipeline(model: Any) -> Any:
    """A diffusers pipeline of the family holding the Model's very components (none copied), for its hooks."""
    cls = pipeline_class(model.family.name)
    params = inspect.signature(cls.__init__).parameters
    parts = model.parts()
    kwargs = {name: parts.get(name) for name in params if name not in ("self", "kwargs")
              and params[name].default is inspect.Parameter.empty}
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    return cls(**kwargs)


def install_offload(model: Any, offload: str, device) -> Any:
    """diffusers' offload hooks on the Model's networks (weights stay on the CPU, each part runs on `device`):
    model (one network at a time), sequential (one layer at a time), group (blocks of the denoiser, and every
    other network, as groups). Returns the pipeline that holds the hooks (remove_offload takes them away)."""
    import torch

    pipe = offload_pipeline(model)
    device = torch.device(device)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                                  num_blocks_per_group=1)
    else:
        raise LoadingError(f"offload: {offload!r} is not one of model, sequential, group")
    return pipe


def remove_offload(pipe: Any) -> None:
    """Take every offload hook away (the networks stay on the CPU)."""
    import torch

    from diffusers.hooks import HookRegistry
    from diffusers.hooks import group_offloading as group

    pipe.remove_all_hooks()  # model and sequential offload (accelerate's hooks)
    names = (group._GROUP_OFFLOADING, group._LAYER_EXECUTION_TRACKER, group._LAZY_PREFETCH_GROUP_OFFLOADING)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module) and group._is_group_offload_enabled(component):
            registry = HookRegistry.check_if_exists_or_initialize(component)
            for name in names:  # as diffusers takes group offload away before applying it again
                registry.remove_hook(name, recurse=True)


def has_offload_hooks(module: Any) -> bool:
    """Whether any offload hook (accelerate's, or diffusers' group offload) sits on the module or inside it."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return any(hasattr(m, "_hf_hook") for m in module.modules()) or _is_group_offload_enabled(module)


# the VAE attributes diffusers' tiling and slicing read (AutoencoderKL and AutoencoderKLFlux2: one tile side;
# AutoencoderKLQwenImage: height, width and the strides between tiles)
VAE_STATE = ("use_tiling", "use_slicing", "tile_sample_min_size", "tile_latent_min_size", "tile_sample_min_height",
             "tile_sample_min_width", "tile_sample_stride_height", "tile_sample_stride_width")


def vae_factor(vae: Any) -> int:
    """The VAE's own pixels per latent cell (FLUX.2's family scale adds its 2x2 patch on top)."""
    ratio = getattr(vae, "spatial_compression_ratio", None)  # Qwen-Image's
    if ratio:
        return int(ratio)
    sample, latent = getattr(vae, "tile_sample_min_size", None), getattr(vae, "tile_latent_min_size", None)
    if isinstance(sample, int) and isinstance(latent, int) and latent > 0:  # AutoencoderKL's, FLUX.2's, tiny's
        return sample // latent
    return 2 ** (len(vae.config.block_out_channels) - 1)


def vae_tile_now(vae: Any) -> int | None:
    """The side of the VAE's tile in pixels as the VAE holds it now (from its config, unless its owner changed
    it); None for a VAE diffusers cannot tile."""
    if hasattr(vae, "tile_sample_min_height"):
        return int(min(vae.tile_sample_min_height, vae.tile_sample_min_width))
    size = getattr(vae, "tile_sample_min_size", None)
    if size is None or not hasattr(vae, "use_tiling"):
        return None
    return int(min(size) if isinstance(size, (list, tuple)) else size)


def vae_tile_for(vae: Any, mode: str | None, size: tuple[int, int]) -> int | None:
    """The tile side a picture of `size` is decoded or encoded in under `mode` (loading.tile_side), None: whole."""
    tile = vae_tile_now(vae)
    if tile is None:
        if mode == "tiled":
            raise LoadingError(f"vae: tiled: diffusers cannot tile a {type(vae).__name__}; use auto or full")
        return None
    return tile_side(mode, size, tile, vae_factor(vae))


@contextmanager
def vae_tiling(vae: Any, mode: str | None, size: tuple[int, int], rows: int) -> Iterator[int | None]:
    """diffusers' tiled VAE (enable_tiling) for pictures of `size` where `mode` says so (loading.tile_side), and
    its slicing (enable_slicing: one picture at a time) when it tiles several rows; otherwise neither. Yields the
    tile side (None: whole). The VAE's own settings (a user's pipeline's included) are put back afterwards."""
    side = vae_tile_for(vae, mode, size)
    saved = {name: getattr(vae, name) for name in VAE_STATE if hasattr(vae, name)}
    try:
        if side is None:
            if "use_tiling" in saved:
                vae.disable_tiling()
                vae.disable_slicing()
        else:
            vae.enable_tiling()
            if rows > 1:
                vae.enable_slicing()
            else:
                vae.disable_slicing()
            listed = isinstance(getattr(vae, "tile_sample_min_size", None), (list, tuple))  # diffusers compares ints
            if side != vae_tile_now(vae) or listed:  # tiled, a picture within one of the VAE's tiles: smaller tiles
                factor = vae_factor(vae)
                if hasattr(vae, "tile_sample_min_height"):
                    stride = max(factor, side * 3 // 4 // factor * factor)  # the 256 / 192 of diffusers' defaults
                    vae.tile_sample_min_height = vae.tile_sample_min_width = side
                    vae.tile_sample_stride_height = vae.tile_sample_stride_width = stride
                else:
                    vae.tile_sample_min_size, vae.tile_latent_min_size = side, side // factor
        yield side
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)
