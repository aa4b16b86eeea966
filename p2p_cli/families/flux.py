"""FLUX.1 (dev, schnell): FluxTransformer2DModel, double-stream then single-stream joint-attention blocks.

- Text sequence: T5's last hidden states (max_sequence_length positions: 512 for dev, 256 for schnell), planned
  with the T5 tokenizer; CLIP-L gives only the pooled embedding (`pooled_projections`).
- Latents are packed into 2x2 patches (B, h/2 * w/2, 4C) for the transformer and unpacked after each call, so
  the engine (blend, masks, inversion) keeps working on (B, C, h, w); image token ids carry the patch grid,
  text ids are zeros, as FluxPipeline sets them.
- Joint attention: double-stream blocks concatenate [text; image], single-stream blocks already hold one
  [text; image] sequence; both get the engine's joint processor. Blocks are numbered double first, then single.
- Guidance: FLUX.1-dev is guidance-distilled: the recipe's `guidance` (default 3.5, diffusers') is an input
  of the transformer and there is no unconditional batch; schnell has no guidance input and ignores it.
- Flow matching: sigmas linspace(1, 1/T, T) with the resolution-dependent shift mu, as FluxPipeline.
- Self (image-image) injection defaults to Stable Flow's "vital layers" of FLUX.1-dev (Avrahami et al.,
  CVPR 2025): blocks 0, 1, 17, 18, 25, 28, 53, 54, 56 of the 57 (19 double + 38 single).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from p2p_cli.families.base import Conditioning, Geometry
from p2p_cli.families.flow import FlowFamily, calculate_shift, double_and_single_blocks, sized, t5_ids
from p2p_cli.families.sd import tokenize
from p2p_cli.family_defaults import FAMILY_DEFAULTS



def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C), as FluxPipeline._pack_latents."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, h/2 * w/2, 4C) -> (B, C, h, w), as FluxPipeline._unpack_latents."""
    b, _, c4 = x.shape
    h, w = hw
    return x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h * w, 3) position ids of the packed image tokens: (0, row, column)."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(device=device, dtype=dtype)


class Flux(FlowFamily):
    name = "flux"
    defaults = FAMILY_DEFAULTS["flux"]

    def t5_length(self, model: Any) -> int:
        default = 512 if model.transformer.config.guidance_embeds else 256  # dev 512, schnell 256
        return int(model.options.get("max_sequence_length", default))

    def text_parts(self, model: Any) -> list:
        return [sized(model.tokenizer_2, self.t5_length(model))]

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        ids = t5_ids(model.tokenizer_2, prompts, self.t5_length(model)).to(model.device)
        hidden = model.text_encoder_2(ids, output_hidden_states=False)[0]
        clip = tokenize(sized(model.tokenizer, 77), prompts).input_ids.to(model.device)
        pooled = model.text_encoder(clip, output_hidden_states=False).pooler_output
        return Conditioning(hidden.to(model.dtype), {"pooled_projections": pooled.to(model.dtype)})

    def with_guidance(self, model: Any, cond: Conditioning, guidance: float) -> Conditioning:
        if not model.transformer.config.guidance_embeds:
            return cond
        return Conditioning(cond.hidden, {**cond.added, "guidance": torch.full((len(cond),), float(guidance),
                                                                                device=cond.hidden.device)})

    def denoise(self, model: Any, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        guidance = cond.added.get("guidance")
        out = model.transformer(
            hidden_states=pack(x.to(model.dtype)), timestep=t.reshape(1).expand(b).to(model.dtype) / 1000,
            guidance=None if guidance is None else guidance.float(),
            pooled_projections=cond.added["pooled_projections"].to(model.dtype),
            encoder_hidden_states=cond.hidden.to(model.dtype),
            txt_ids=torch.zeros(cond.hidden.shape[1], 3, device=x.device, dtype=model.dtype),
            img_ids=image_ids(h // 2, w // 2, x.device, model.dtype),
            joint_attention_kwargs=attention_kwargs, return_dict=False)[0]
        return unpack(out.float(), (h, w))

    def latent_channels(self, model: Any) -> int:
        return model.transformer.config.in_channels // 4

    def native_side(self, model: Any) -> int:
        return 128  # FluxPipeline's default_sample_size: 1024 px

    def downsampling(self, model: Any) -> int:
        return 2  # the 2x2 packing

    def blocks(self, model: Any) -> list[tuple[int, str]]:
        return double_and_single_blocks(model.transformer)

    def scheduler_kwargs(self, model: Any, steps: int, latent_hw: tuple[int, int]) -> dict:
        config = model.scheduler.config
        h, w = self.token_grid(model, latent_hw)
        kwargs = {"mu": calculate_shift(h * w, config, 1.15)} if config.get("use_dynamic_shifting", False) else {}
        if not config.get("use_flow_sigmas", False):
            kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
        return kwargs

    @staticmethod
    def matches(parts: dict) -> bool:
        return type(parts.get("transformer")).__name__.startswith("FluxTransformer")


FAMILY = Flux()
