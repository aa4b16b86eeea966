"""Model families: one small adapter per backbone (SD 1.x/2.x, SDXL); the control engine is shared.

`detect(parts)` names the family of a set of components from the components themselves (never from a
model's name): a UNet with text_time conditioning and a second text encoder is SDXL, a UNet with one text
encoder is SD 1.x/2.x.
"""

from __future__ import annotations

from p2p_cli.families.base import Conditioning, Family, Geometry
from p2p_cli.families.sd import FAMILY as SD
from p2p_cli.families.sdxl import FAMILY as SDXL

FAMILIES: dict[str, Family] = {f.name: f for f in (SD, SDXL)}

__all__ = ["Conditioning", "Family", "Geometry", "FAMILIES", "SD", "SDXL", "detect", "get"]


def detect(parts: dict) -> Family:
    """The family of a dict of components (unet, text_encoder, text_encoder_2, ...)."""
    for family in (SDXL, SD):
        if family.matches(parts):
            return family
    unet = parts.get("unet")
    kind = getattr(getattr(unet, "config", None), "addition_embed_type", None)
    raise ValueError(
        f"unsupported model: a UNet with addition_embed_type={kind!r} and "
        f"{'a' if parts.get('text_encoder_2') is not None else 'no'} second text encoder is neither"
        " Stable Diffusion 1.x/2.x nor SDXL"
    )


def get(name: str) -> Family:
    """A family by name ("sd", "sdxl")."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}: use one of {', '.join(FAMILIES)}") from None
