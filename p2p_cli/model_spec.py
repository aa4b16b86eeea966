"""What a recipe is checked against, without torch: a model's family (and its defaults), sizes and attention
layout, read from its config files (a folder, a cached hub snapshot, the bundled models) or from a loaded model's
components. `checks.recipe_problems_for_model` turns (recipe, ModelSpec) into every problem, for `p2p validate`
and for the API before the engine runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2p_cli.family_defaults import FAMILY_DEFAULTS, FamilyDefaults, FolderDefaults
from p2p_cli.loading import tile_side, vae_tile


@dataclass(frozen=True)
class ModelSpec:
    """A model as its checks need it. Sides are in pixels unless named latent."""

    family: FamilyDefaults
    native: int  # the side the denoiser was trained at, in pixels
    vae_scale: int  # pixels per latent cell
    multiple: int  # a picture side must be a multiple of this (VAE x the denoiser's downsampling or patch)
    cross_depths: tuple[int, ...] = ()  # UNet: the down-block depths that hold cross-attention
    blocks: int | None = None  # joint families: how many joint-attention blocks (numbered from 0)
    patch: int = 1  # joint families: latent cells per image token side
    id: str = "model"
    # what only a loaded model knows: the tokenizers of the text the denoiser reads (an int for positions no
    # tokenizer reads), and a check of a prompt that a second tokenizer must split alike (None: nothing to check)
    text_parts: tuple[Any, ...] = ()
    prompt_check: Callable[[str], str | None] | None = field(default=None, compare=False)
    unconditional: bool | None = None  # loaded: guidance runs an unconditional batch (distilled: no); None: family's
    vae_tile: int | None = None  # the side in pixels of the VAE's tile (loading.vae_tile), and its own pixels per
    vae_factor: int = 8  # latent cell (FLUX.2's vae_scale adds its 2x2 patch): what the recipe's vae: reads
    defaults: FolderDefaults | None = None  # the model folder's p2p-defaults.json (real pictures' windows), if any

    def vae_tiles(self, mode: str | None, size: tuple[int, int] | None) -> int | None:
        """The tile side a picture of `size` (None: native) is decoded in under `vae:` (None: whole)."""
        if self.vae_tile is None:
            return None
        return tile_side(mode, size or (self.native, self.native), self.vae_tile, self.vae_factor)

    @property
    def cfg(self) -> bool:
        """Whether guidance runs classifier-free guidance's unconditional batch on this model."""
        return self.family.cfg if self.unconditional is None else self.unconditional

    def latent(self, size: tuple[int, int] | None) -> tuple[int, int]:
        """(h, w) of the latent for a picture size (None: native)."""
        height, width = size or (self.native, self.native)
        return height // self.vae_scale, width // self.vae_scale

    def cross_sides(self, latent_hw: tuple[int, int]) -> list[int]:
        """UNet: the sides of the cross-attention layers of the down and up blocks at a latent size."""
        side = max(latent_hw)
        return sorted({-(-side // 2**d) for d in self.cross_depths})

    def grid(self, latent_hw: tuple[int, int]) -> int:
        """Joint families: the side of the image-token grid at a latent size."""
        return max(latent_hw) // self.patch


def from_configs(family: str, vae: dict, unet: dict | None = None, transformer: dict | None = None, *,
                 id: str = "model", text_parts: tuple = (), prompt_check=None,
                 unconditional: bool | None = None, defaults: FolderDefaults | None = None) -> ModelSpec:
    """A ModelSpec from the components' config dicts (as config.json holds them, or `component.config`)."""
    if "temperal_downsample" in vae:  # Qwen-Image's video VAE
        scale = 2 ** len(vae["temperal_downsample"])
    else:
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
    tiles = dict(vae_tile=vae_tile(vae), vae_factor=scale, defaults=defaults)
    defaults = FAMILY_DEFAULTS[family]
    if transformer is not None:
        patch = int(transformer.get("patch_size", 2) or 2)
        if family in ("flux", "qwen-image", "chroma"):  # 2x2 packing outside the transformer; no sample_size: 1024 px
            side, patch = 128, 2
        elif family in ("flux2-klein", "flux2-dev"):  # latents drawn in 2x2 patches: 16 px a cell, one token a cell
            scale, side, patch = scale * 2, 64, 1
        else:
            side = int(transformer["sample_size"])
        blocks = int(transformer.get("num_layers", 0)) + int(transformer.get("num_single_layers", 0) or 0)
        return ModelSpec(defaults, side * scale, scale, scale * patch, blocks=blocks, patch=patch, id=id,
                         text_parts=text_parts, prompt_check=prompt_check, unconditional=unconditional, **tiles)
    sample = unet["sample_size"]
    side = sample if isinstance(sample, int) else sample[0]
    depths = tuple(i for i, kind in enumerate(unet["down_block_types"]) if "CrossAttn" in kind)
    multiple = scale * 2 ** (len(unet["block_out_channels"]) - 1)
    return ModelSpec(defaults, side * scale, scale, multiple, cross_depths=depths, id=id, text_parts=text_parts,
                     prompt_check=prompt_check, unconditional=unconditional, **tiles)
