"""Layer geometry, in one place: where each attention layer of a UNet sits (place, kind) and its side at a
latent size, and the latent size of a picture. Sides are derived from the latent, never fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerInfo:
    """Where an attention layer sits: module path, UNet place (down, mid, up) and kind.

    A transformer's joint attention layer appears twice, with place "joint" and its block number: as a cross
    layer (name "<path>:text", the image-query x text-key block of its probabilities) and as a self layer
    ("<path>:image", the image-query x image-key block).
    """

    name: str
    place: str
    is_cross: bool
    block: int = -1  # joint layers: the block's number (FLUX: double-stream blocks first, then single-stream)

    @property
    def kind(self) -> str:
        return "cross" if self.is_cross else "self"


def place_of(name: str) -> str:
    """"down", "mid" or "up" from a UNet attention processor's module path."""
    return "mid" if name.startswith("mid_block") else "down" if name.startswith("down_blocks") else "up"


def layer_infos(unet: Any) -> dict[str, LayerInfo]:
    """LayerInfo for every attention processor of a diffusers UNet, keyed by its module path."""
    return {name: LayerInfo(name=name, place=place_of(name), is_cross=name.endswith("attn2.processor"))
            for name in unet.attn_processors}


def joint_views(block: int, path: str) -> tuple[LayerInfo, LayerInfo]:
    """The cross (text keys) and self (image keys) views of one joint attention layer."""
    return LayerInfo(f"{path}:text", "joint", True, block), LayerInfo(f"{path}:image", "joint", False, block)


def model_layers(model: Any) -> dict[str, LayerInfo]:
    """Every attention layer (view) of a model's denoiser, keyed by name."""
    if model.family.denoiser == "unet":
        return layer_infos(model.unet)
    return {info.name: info for block, path in model.family.blocks(model) for info in joint_views(block, path)}


def layer_grid(model: Any, latent_hw: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """(h, w) of every attention layer (view) at a latent size."""
    if model.family.denoiser == "unet":
        lh, lw = latent_hw
        return {name: (lh // (max(latent_hw) // side), lw // (max(latent_hw) // side))
                for name, side in level_sides(model, latent_hw).items()}
    grid = model.family.token_grid(model, latent_hw)
    return {name: grid for name in model_layers(model)}


def level_sides(model: Any, latent_hw: tuple[int, int]) -> dict[str, int]:
    """Side (max of h, w) of every attention layer, from its block's depth in the UNet."""
    levels = len(model.unet.config.block_out_channels)
    side = max(latent_hw)
    sides = {}
    for name in model.unet.attn_processors:
        parts = name.split(".")
        if parts[0] == "down_blocks":
            depth = int(parts[1])
        elif parts[0] == "up_blocks":
            depth = levels - 1 - int(parts[1])
        else:
            depth = levels - 1
        sides[name] = -(-side // 2**depth)
    return sides


def cross_sides(model: Any, latent_hw: tuple[int, int], places: tuple[str, ...] = ("down", "up")) -> list[int]:
    """Sorted sides of the cross-attention layers in `places`."""
    return sorted({side for name, side in level_sides(model, latent_hw).items()
                   if name.endswith("attn2.processor") and place_of(name) in places})


def latent_size(model: Any, size: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) of the latent for a picture size in pixels (None: the model's native size)."""
    height, width = size or model.native_size
    return height // model.vae_scale, width // model.vae_scale


def size_multiple(model: Any) -> int:
    """Picture sides must be multiples of this: the VAE's factor times the denoiser's downsampling (a
    transformer's patch size)."""
    return model.vae_scale * model.family.downsampling(model)
