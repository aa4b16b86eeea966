"""Stable Diffusion XL: two CLIP text encoders, a pooled embedding and size/crop ids, as diffusers does it.

- Text sequence: the penultimate hidden states of CLIP-L and OpenCLIP-bigG, joined along the feature axis
  (B, 77, 768 + 1280). Both tokenizers are the same BPE; only their padding token differs ("!" in the
  second), after the end token, so every word sits at the same position in both and one plan serves both.
- Extra conditioning per row: the second encoder's pooled (projected) embedding and six ids
  (original size, crop top-left, target size; defaults: the picture's size and 0, 0).
- Unconditional rows: with an empty negative prompt, zeros (diffusers' `force_zeros_for_empty_prompt`, on
  for the SDXL base model), else the negative prompt encoded like a prompt.
- The VAE decodes in float32 when the model runs in fp16 and the VAE asks for it (`force_upcast`), as
  diffusers' pipeline does: SDXL's VAE overflows in fp16 (black or NaN pictures).
- Default guidance 5.0 (diffusers' SDXL default).
"""

from __future__ import annotations

from typing import Any

import torch

from p2p_cli.families.base import Conditioning, Family, Geometry
from p2p_cli.families.sd import tokenize
from p2p_cli.family_defaults import FAMILY_DEFAULTS


class StableDiffusionXL(Family):
    name = "sdxl"
    defaults = FAMILY_DEFAULTS["sdxl"]

    def _hidden_and_pooled(self, model: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], None
        for tokenizer, encoder in ((model.tokenizer, model.text_encoder), (model.tokenizer_2, model.text_encoder_2)):
            ids = tokenize(tokenizer, prompts).input_ids.to(model.device)
            out = encoder(ids, output_hidden_states=True)
            if out[0].ndim == 2:  # the projected pooled embedding (CLIPTextModelWithProjection)
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        if pooled is None:
            raise ValueError("SDXL's second text encoder must give a pooled embedding (CLIPTextModelWithProjection)")
        return torch.cat(hidden, dim=-1), pooled

    def time_ids(self, geometry: Geometry, rows: int) -> torch.Tensor:
        """(rows, 6): original size, crop top-left, target size, as diffusers' _get_add_time_ids."""
        size = geometry.size
        ids = [*(geometry.original_size or size), *geometry.crop_top_left, *(geometry.target_size or size)]
        return torch.tensor([ids], dtype=torch.float32).expand(rows, -1)

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        hidden, pooled = self._hidden_and_pooled(model, prompts)
        return Conditioning(hidden.to(model.dtype), {
            "text_embeds": pooled.to(model.dtype),
            "time_ids": self.time_ids(geometry, len(prompts)).to(model.device, model.dtype),
        })

    def encode_negative(self, model: Any, negative_prompt: str, n: int, geometry: Geometry) -> Conditioning:
        one = self.encode(model, [negative_prompt], geometry)
        if not negative_prompt and model.options.get("force_zeros_for_empty_prompt", True):
            one = Conditioning(torch.zeros_like(one.hidden),
                               {"text_embeds": torch.zeros_like(one.added["text_embeds"]),
                                "time_ids": one.added["time_ids"]})
        return one.repeat(n)

    def vae_dtype(self, model_dtype: torch.dtype, vae_config: Any) -> torch.dtype:
        if model_dtype == torch.float16 and getattr(vae_config, "force_upcast", False):
            return torch.float32
        return model_dtype

    def check_prompt(self, model: Any, prompt: str) -> str | None:
        """Both tokenizers must put every token at the same position (they share one BPE)."""
        first = model.tokenizer(prompt).input_ids
        second = model.tokenizer_2(prompt).input_ids
        if first != second:
            return ("the two SDXL tokenizers split this prompt differently, so word positions would not agree;"
                    " this model's tokenizer_2 is not the BPE of its tokenizer")
        return None

    @staticmethod
    def matches(parts: dict) -> bool:
        unet = parts.get("unet")
        return (unet is not None and parts.get("text_encoder_2") is not None
                and getattr(unet.config, "addition_embed_type", None) == "text_time")


FAMILY = StableDiffusionXL()
