"""Layer geometry, in one place: where each attention layer of a UNet sits (place, kind) and its side at a
latent size, and the latent size of a picture. Sides are derived from the latent, never fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerInfo:
    """Where an attention layer sits: module path, UNet place (down, mid, up) and kind."""

    name: str
    place: str
    is_cross: bool

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
    """Picture sides must be multiples of this: the VAE's factor times the UNet's downsampling."""
    return model.vae_scale * 2 ** (len(model.unet.config.block_out_channels) - 1)
