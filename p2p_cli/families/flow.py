"""What SD3 and FLUX share: a transformer with joint text/image attention, sampled by flow matching.

- The denoiser is `model.transformer`; its attention layers are joint (one softmax over text and image keys),
  named per block; the engine's joint processors apply the control (engine/joint_attention.py).
- Sampling is the Euler ODE over the sigmas diffusers' FlowMatchEulerDiscreteScheduler computes for the family
  (`scheduler_kwargs`): x <- x + (sigma_next - sigma) * v. The initial noise is N(0, 1) at sigma 1.
- Words map to token positions per tokenizer: CLIP's BPE and T5's SentencePiece split words differently, so each
  part of the text sequence is planned with its own tokenizer (`text_parts`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from p2p_cli.families.base import Family


def sized(tokenizer: Any, length: int) -> Any:
    """The tokenizer with model_max_length = the positions its part of the text sequence has (T5's is set by the
    pipeline's max_sequence_length, not by the tokenizer's own limit)."""
    if tokenizer.model_max_length == length:
        return tokenizer
    out = copy.copy(tokenizer)
    out.model_max_length = length
    return out


def t5_ids(tokenizer: Any, prompts: list[str], length: int) -> torch.Tensor:
    """T5 token ids padded to length, as diffusers' SD3 and FLUX pipelines tokenize."""
    return tokenizer(prompts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True,
                     return_tensors="pt").input_ids


def calculate_shift(seq_len: int, config: Any, default_max_shift: float) -> float:
    """The resolution-dependent shift mu: linear in the image's token count, as diffusers computes it."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", default_max_shift)
    m = (max_shift - base_shift) / (max_len - base_len)
    return seq_len * m + base_shift - m * base_len


def double_and_single_blocks(transformer: Any) -> list[tuple[int, str]]:
    """(block number, attention module path) of a FLUX-style transformer: the double-stream blocks, then the
    single-stream ones, numbered in that order (FLUX.1 and FLUX.2)."""
    double = [f"transformer_blocks.{i}.attn" for i in range(len(transformer.transformer_blocks))]
    single = [f"single_transformer_blocks.{i}.attn" for i in range(len(transformer.single_transformer_blocks))]
    return list(enumerate(double + single))


class FlowFamily(Family):
    """A joint-attention transformer sampled by flow matching (SD3, FLUX)."""

    denoiser = "transformer"
    patch = 2
    joint_layout = "flux"  # which diffusers attention processor the engine's joint one stands in for: sd3, flux, qwen

    def latent_channels(self, model: Any) -> int:
        return model.transformer.config.in_channels

    def native_side(self, model: Any) -> int:
        return model.transformer.config.sample_size

    def downsampling(self, model: Any) -> int:
        return model.transformer.config.patch_size

    def token_grid(self, model: Any, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the transformer's image tokens for a latent size."""
        p = self.downsampling(model)
        return latent_hw[0] // p, latent_hw[1] // p

    def blocks(self, model: Any) -> list[tuple[int, str]]:
        """(block number, attention module path) of every joint attention layer, in order."""
        raise NotImplementedError

    def self_blocks(self, model: Any, wanted: list[int] | None) -> frozenset[int]:
        """The blocks whose image-image attention a target takes from the source: the recipe's, else the
        family's default (those of them this model has)."""
        count = len(self.blocks(model))
        chosen = wanted if wanted is not None else self.default_self_blocks
        return frozenset(range(count)) if chosen is None else frozenset(b for b in chosen if b < count)

    def scheduler_kwargs(self, model: Any, steps: int, latent_hw: tuple[int, int]) -> dict:
        """What the family's pipeline passes to FlowMatchEulerDiscreteScheduler.set_timesteps."""
        raise NotImplementedError

    def scheduler(self, model: Any, shift: float | None) -> Any:
        """The model's scheduler, or a copy with a fixed shift (sigma -> shift s / (1 + (shift - 1) s), no
        resolution-dependent shift) when the recipe sets `shift`."""
        if shift is None:
            return model.scheduler
        config = {**model.scheduler.config, "shift": float(shift), "use_dynamic_shifting": False}
        return type(model.scheduler).from_config(config)

    def vae_dtype(self, model_dtype: torch.dtype, vae_config: Any) -> torch.dtype:
        return model_dtype
