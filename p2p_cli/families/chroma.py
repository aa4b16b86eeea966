"""Chroma (ChromaPipeline): ChromaTransformer2DModel, FLUX.1's double- then single-stream blocks with the modulation
pruned to one timestep approximator; FLUX.1's adapter with what differs.

- Text sequence: T5's last hidden states over `max_sequence_length` positions (512), T5 run with the tokenizer's
  attention mask (unlike FLUX.1); no CLIP and no pooled embedding. Words are planned on the T5 tokenizer as for FLUX.1.
- Attention mask: ChromaPipeline keeps the prompt's tokens, its end token and one padding token (positions
  0..n where n tokens are real), appends ones for the image tokens, and each block hands the transformer's
  attention processors the outer product mask x mask (B, 1, S, S). In diffusers 0.42.1 that mask is float (the
  text encoder's dtype), which SDPA *adds* to the scores: padding is not cut off, it scores 1 lower than the kept
  positions, in every row the mask keeps, and the padding's own queries see no bias. The engine's processor
  applies the block's mask exactly as SDPA reads it (float added, boolean masked; engine/joint_attention.py), so
  the pictures are the pipeline's, and tests/families/test_chroma.py checks them against it, so a future diffusers
  that passes a boolean mask shows up there. (Chroma's authors meant a boolean mask: diffusers issues #12116,
  #13619.)
- The mask and word-level control: the control edits an image query's probabilities after the mask has shaped
  them (P and S are each row's own masked softmax). Inside the cross window a target's aligned positions take the
  source's probabilities through the mapper, so the source's mask rules them: past its own words a target of
  another length reads what the source's positions there got (a word, the end token, or padding scored 1 lower),
  as the mappers do for every family; refine's inserted words and every position outside the window keep the
  target's own mask. Every padding position is read (`text_used` is None): none is dropped from a run.
- Guidance: true classifier-free guidance over the negative prompt (default "", 5.0 as the pipeline); guidance 1
  runs no unconditional batch, as the pipeline.
- Latents: FLUX.1's 16 channels packed 2x2, the (1, C, h, w) draw, the VAE's shift and scale; flow matching with
  sigmas linspace(1, 1/T, T) and the resolution-dependent mu, as ChromaPipeline (which always passes its sigmas).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from p2p_cli.families.base import Conditioning, Geometry
from p2p_cli.families.flow import calculate_shift, sized
from p2p_cli.families.flux import Flux, image_ids, pack, unpack
from p2p_cli.family_defaults import FAMILY_DEFAULTS

TEXT_LENGTH = 512  # ChromaPipeline's max_sequence_length
MASK = "attention_mask"


class Chroma(Flux):
    name = "chroma"
    defaults = FAMILY_DEFAULTS["chroma"]

    def t5_length(self, model: Any) -> int:
        return int(model.options.get("max_sequence_length", TEXT_LENGTH))

    def text_parts(self, model: Any) -> list:
        return [sized(model.tokenizer, self.t5_length(model))]

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        enc = model.tokenizer(prompts, padding="max_length", max_length=self.t5_length(model), truncation=True,
                              return_tensors="pt")
        real = enc.attention_mask.to(model.device)
        hidden = model.text_encoder(enc.input_ids.to(model.device), output_hidden_states=False, attention_mask=real)[0]
        kept = torch.arange(real.shape[1], device=model.device)[None] <= real.sum(1, keepdim=True)  # + 1 padding
        return Conditioning(hidden.to(model.dtype), {MASK: kept.to(model.text_encoder.dtype)})

    def with_guidance(self, model: Any, cond: Conditioning, guidance: float) -> Conditioning:
        return cond  # no guidance input: true CFG

    def denoise(self, model: Any, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        text = cond.added[MASK].to(model.dtype)
        mask = torch.cat([text, text.new_ones(b, (h // 2) * (w // 2))], dim=1)  # as _prepare_attention_mask
        out = model.transformer(
            hidden_states=pack(x.to(model.dtype)), timestep=t.reshape(1).expand(b).to(model.dtype) / 1000,
            encoder_hidden_states=cond.hidden.to(model.dtype),
            txt_ids=torch.zeros(cond.hidden.shape[1], 3, device=x.device, dtype=model.dtype),
            img_ids=image_ids(h // 2, w // 2, x.device, model.dtype), attention_mask=mask,
            joint_attention_kwargs=attention_kwargs, return_dict=False)[0]
        return unpack(out.float(), (h, w))

    def scheduler_kwargs(self, model: Any, steps: int, latent_hw: tuple[int, int]) -> dict:
        h, w = self.token_grid(model, latent_hw)
        mu = calculate_shift(h * w, model.scheduler.config, 1.15)
        return {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": mu}

    @staticmethod
    def matches(parts: dict) -> bool:
        return type(parts.get("transformer")).__name__.startswith("ChromaTransformer")


FAMILY = Chroma()
