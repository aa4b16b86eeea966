"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, its last hidden states as the text sequence."""

from __future__ import annotations

from typing import Any


from p2p_cli.families.base import Conditioning, Family, Geometry
from p2p_cli.family_defaults import FAMILY_DEFAULTS

# DDIM as used for SD v1.x (algorithm.md, "Batch and guidance").
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def tokenize(tokenizer: Any, prompts: list[str]) -> Any:
    """Token ids padded to the tokenizer's length, as diffusers' pipelines tokenize."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt")


class StableDiffusion(Family):
    name = "sd"
    defaults = FAMILY_DEFAULTS["sd"]

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        """(B, 77, D): the text encoder's last hidden states, as StableDiffusionPipeline computes them."""
        tok = tokenize(model.tokenizer, prompts)
        use_mask = getattr(model.text_encoder.config, "use_attention_mask", False)
        mask = tok.attention_mask.to(model.device) if use_mask else None
        hidden = model.text_encoder(tok.input_ids.to(model.device), attention_mask=mask)[0]
        return Conditioning(hidden.to(model.dtype))

    @staticmethod
    def matches(parts: dict) -> bool:
        unet = parts.get("unet")
        return unet is not None and parts.get("text_encoder_2") is None and not _text_time(unet)


def _text_time(unet: Any) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


FAMILY = StableDiffusion()
