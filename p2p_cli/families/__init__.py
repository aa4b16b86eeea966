"""Model families: one small adapter per backbone (SD 1.x/2.x, SDXL, SD3, FLUX.1, Qwen-Image, FLUX.2 klein and dev,
Chroma); the control engine is shared.

`detect(parts)` names the family of a set of components from the components themselves (never from a
model's name): a UNet with text_time conditioning and a second text encoder is SDXL, a UNet with one text
encoder is SD 1.x/2.x; an SD3Transformer2DModel is SD3, a FluxTransformer2DModel FLUX.1, a
QwenImageTransformer2DModel Qwen-Image, a Flux2Transformer2DModel with a Qwen3 text encoder FLUX.2 klein, with a
Mistral3 one FLUX.2 dev, a ChromaTransformer2DModel Chroma.
"""

from __future__ import annotations

from p2p_cli.families.base import Conditioning, Family, Geometry
from p2p_cli.families.sd import FAMILY as SD
from p2p_cli.families.sdxl import FAMILY as SDXL
from p2p_cli.families.sd3 import FAMILY as SD3
from p2p_cli.families.flux import FAMILY as FLUX
from p2p_cli.families.qwen_image import FAMILY as QWEN_IMAGE
from p2p_cli.families.flux2 import DEV as FLUX2_DEV
from p2p_cli.families.flux2 import FAMILY as FLUX2_KLEIN
from p2p_cli.families.chroma import FAMILY as CHROMA

FAMILIES: dict[str, Family] = {f.name: f for f in (SD, SDXL, SD3, FLUX, QWEN_IMAGE, FLUX2_KLEIN, FLUX2_DEV, CHROMA)}

__all__ = ["Conditioning", "Family", "Geometry", "FAMILIES", "SD", "SDXL", "SD3", "FLUX", "QWEN_IMAGE", "FLUX2_KLEIN",
           "FLUX2_DEV", "CHROMA", "detect", "get"]


def detect(parts: dict) -> Family:
    """The family of a dict of components (unet, text_encoder, text_encoder_2, ...)."""
    for family in (SD3, FLUX, QWEN_IMAGE, FLUX2_KLEIN, FLUX2_DEV, CHROMA, SDXL, SD):
        if family.matches(parts):
            return family
    if parts.get("transformer") is not None:
        raise ValueError(f"unsupported model: a {type(parts['transformer']).__name__} is not SD3, FLUX.1, Qwen-Image"
                         ", FLUX.2 klein or dev, or Chroma")
    unet = parts.get("unet")
    kind = getattr(getattr(unet, "config", None), "addition_embed_type", None)
    raise ValueError(
        f"unsupported model: a UNet with addition_embed_type={kind!r} and "
        f"{'a' if parts.get('text_encoder_2') is not None else 'no'} second text encoder is neither"
        " Stable Diffusion 1.x/2.x nor SDXL"
    )


def get(name: str) -> Family:
    """A family by name ("sd", "sdxl", "sd3", "flux", "qwen-image", "flux2-klein", "flux2-dev", "chroma")."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}: use one of {', '.join(FAMILIES)}") from None
