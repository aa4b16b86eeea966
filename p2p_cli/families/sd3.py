"""Stable Diffusion 3 / 3.5: an MMDiT (SD3Transformer2DModel) over one text sequence from three encoders.

- Text sequence, as StableDiffusion3Pipeline builds it: the penultimate hidden states of CLIP-L and CLIP-G
  (77 positions each) joined along the feature axis and zero-padded to T5's width, then T5's last hidden states
  (max_sequence_length positions, 256 by default; zeros when the model has no T5) after them: 77 + 256
  positions. The plan maps words on the CLIP part with the CLIP tokenizer and on the T5 part with T5's.
- Extra conditioning per row: both CLIP encoders' pooled (projected) embeddings joined (`pooled_projections`).
- Joint attention in every block: [image; text] queries and keys under one softmax (the engine's joint
  processor). SD3.5's extra image-only attention (`attn2` of dual-attention blocks) is left uncontrolled.
- Flow matching with the scheduler's fixed shift (3.0 for SD3), CFG, default guidance 7.0 (diffusers').
- Self (image-image) injection defaults to every block; see docs/families.md for the choice.
"""

from __future__ import annotations

from typing import Any

import torch

from p2p_cli.families.base import Conditioning, Geometry
from p2p_cli.families.flow import FlowFamily, calculate_shift, sized, t5_ids
from p2p_cli.families.sd import tokenize
from p2p_cli.family_defaults import FAMILY_DEFAULTS

T5_LENGTH = 256  # StableDiffusion3Pipeline's default max_sequence_length


class StableDiffusion3(FlowFamily):
    name = "sd3"
    defaults = FAMILY_DEFAULTS["sd3"]
    joint_layout = "sd3"

    def t5_length(self, model: Any) -> int:
        return int(model.options.get("max_sequence_length", T5_LENGTH))

    def text_parts(self, model: Any) -> list:
        t5 = self.t5_length(model)
        return [model.tokenizer, sized(model.tokenizer_3, t5) if model.text_encoder_3 is not None else t5]

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        hidden, pooled = [], []
        length = model.tokenizer.model_max_length
        for tokenizer, encoder in ((model.tokenizer, model.text_encoder), (model.tokenizer_2, model.text_encoder_2)):
            ids = tokenize(sized(tokenizer, length), prompts).input_ids.to(model.device)
            out = encoder(ids, output_hidden_states=True)
            pooled.append(out[0])
            hidden.append(out.hidden_states[-2])
        clip = torch.cat(hidden, dim=-1)
        width = model.transformer.config.joint_attention_dim
        if model.text_encoder_3 is None:
            t5 = torch.zeros(len(prompts), self.t5_length(model), width, device=model.device, dtype=clip.dtype)
        else:
            t5 = model.text_encoder_3(t5_ids(model.tokenizer_3, prompts, self.t5_length(model)).to(model.device))[0]
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return Conditioning(torch.cat([clip, t5.to(clip.dtype)], dim=-2).to(model.dtype),
                            {"pooled_projections": torch.cat(pooled, dim=-1).to(model.dtype)})

    def denoise(self, model: Any, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        return model.transformer(
            hidden_states=x.to(model.dtype), timestep=t.reshape(1).expand(x.shape[0]).to(model.dtype),
            encoder_hidden_states=cond.hidden.to(model.dtype),
            pooled_projections=cond.added["pooled_projections"].to(model.dtype),
            joint_attention_kwargs=attention_kwargs, return_dict=False)[0].float()

    def blocks(self, model: Any) -> list[tuple[int, str]]:
        return [(i, f"transformer_blocks.{i}.attn") for i in range(len(model.transformer.transformer_blocks))]

    def scheduler_kwargs(self, model: Any, steps: int, latent_hw: tuple[int, int]) -> dict:
        config = model.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return {}
        h, w = self.token_grid(model, latent_hw)
        return {"mu": calculate_shift(h * w, config, 1.16)}

    def check_prompt(self, model: Any, prompt: str) -> str | None:
        """Both CLIP tokenizers must put every token at the same position (one plan serves both)."""
        if model.tokenizer(prompt).input_ids != model.tokenizer_2(prompt).input_ids:
            return ("the two CLIP tokenizers of this SD3 model split this prompt differently, so word positions"
                    " would not agree")
        return None

    @staticmethod
    def matches(parts: dict) -> bool:
        return type(parts.get("transformer")).__name__.startswith("SD3Transformer")


FAMILY = StableDiffusion3()
