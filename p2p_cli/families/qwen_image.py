"""Qwen-Image (QwenImagePipeline): QwenImageTransformer2DModel, dual-stream MMDiT blocks over a Qwen2.5-VL text
sequence.

- Text sequence, as QwenImagePipeline builds it: the prompt formatted into a chat template, the language model's last
  hidden states, the template's first 34 tokens (the system prefix) dropped; what is left is the prompt's tokens
  and the template's suffix. The pipeline pads a batch to its longest prompt and masks the padding out; here every
  row is planned and encoded on the text length (`max_sequence_length`, 512 by default: the pipeline's own limit)
  with the same mask, and a run then drops the positions no row attends to (`text_used`: the longest prompt of the
  run, the negative prompt included), so the image tokens see exactly what the pipeline's see at its cost. Words
  map through text/template.py.
- The language model is causal: a swapped word changes the hidden states of every later token. A replace edit
  still maps every position, as for T5 (docs/families.md says why).
- Latents: 16 channels, packed 2x2 for the transformer (as FLUX.1); the pipeline draws its noise (1, 1, C, h, w)
  with a frame axis, the same numbers as the (1, C, h, w) draw. The VAE is a video VAE: one frame, its latents
  normalised by the config's per-channel mean and std.
- Guidance: true classifier-free guidance over the negative prompt (`true_cfg_scale`, 4.0 by default), the
  combined prediction rescaled to the conditional one's norm per patch, as the pipeline does; guidance 1 runs no
  unconditional batch (the pipeline without a negative prompt).
- Flow matching: sigmas linspace(1, 1/T, T) with the resolution-dependent shift mu, as the pipeline.
"""

from __future__ import annotations

from typing import Any

import torch

from p2p_cli.families.base import Conditioning, Geometry
from p2p_cli.families.flow import FlowFamily
from p2p_cli.families.flux import Flux, pack, unpack
from p2p_cli.text.template import QWEN_IMAGE_DROP as DROP
from p2p_cli.family_defaults import FAMILY_DEFAULTS
from p2p_cli.text.template import QWEN_IMAGE_TEMPLATE as TEMPLATE
from p2p_cli.text.template import QWEN_IMAGE_TEXT_LENGTH as TEXT_LENGTH
from p2p_cli.text.template import TemplateTokenizer

TOKENIZER_LIMIT = 1024  # QwenImagePipeline's tokenizer_max_length
MASK = "encoder_hidden_states_mask"


class QwenImage(FlowFamily):
    name = "qwen-image"
    defaults = FAMILY_DEFAULTS["qwen-image"]
    joint_layout = "qwen"

    def text_length(self, model: Any) -> int:
        return int(model.options.get("max_sequence_length", TEXT_LENGTH))

    def text_parts(self, model: Any) -> list:
        length = self.text_length(model)
        cached = getattr(model.tokenizer, "_p2p_template", None)
        if cached is None or cached.model_max_length != length:
            cached = TemplateTokenizer(model.tokenizer, TEMPLATE, DROP, length)
            model.tokenizer._p2p_template = cached
        return [cached]

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        enc = model.tokenizer([TEMPLATE.format(p) for p in prompts], max_length=TOKENIZER_LIMIT + DROP, padding=True,
                              truncation=True, return_tensors="pt").to(model.device)
        hidden = model.text_encoder(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                                    output_hidden_states=True).hidden_states[-1]
        length = self.text_length(model)
        out = hidden.new_zeros(len(prompts), length, hidden.shape[-1])
        mask = torch.zeros(len(prompts), length, device=model.device)
        for row, (h, m) in enumerate(zip(hidden, enc.attention_mask.bool())):
            kept = h[m][DROP:][:length]
            out[row, : len(kept)], mask[row, : len(kept)] = kept, 1
        return Conditioning(out.to(model.dtype), {MASK: mask})

    def text_used(self, cond: Conditioning) -> int | None:
        return int(cond.added[MASK].sum(1).max())

    def denoise(self, model: Any, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        out = model.transformer(
            hidden_states=pack(x.to(model.dtype)), timestep=t.reshape(1).expand(b).to(model.dtype) / 1000,
            encoder_hidden_states=cond.hidden.to(model.dtype), encoder_hidden_states_mask=cond.added[MASK].bool(),
            img_shapes=[[(1, h // 2, w // 2)]] * b, attention_kwargs=attention_kwargs, return_dict=False)[0]
        return unpack(out.float(), (h, w))

    def guide(self, uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        """The pipeline's true CFG: the combination rescaled to the conditional prediction's norm per 2x2 patch."""
        combined = pack(uncond + guidance * (cond - uncond))
        norm = pack(cond).norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True)
        return unpack(combined * norm, cond.shape[-2:])

    def latent_channels(self, model: Any) -> int:
        return model.transformer.config.in_channels // 4

    def native_side(self, model: Any) -> int:
        return 128  # QwenImagePipeline's default_sample_size: 1024 px

    def downsampling(self, model: Any) -> int:
        return 2  # the 2x2 packing

    def blocks(self, model: Any) -> list[tuple[int, str]]:
        return [(i, f"transformer_blocks.{i}.attn") for i in range(len(model.transformer.transformer_blocks))]

    def scheduler_kwargs(self, model: Any, steps: int, latent_hw: tuple[int, int]) -> dict:
        return Flux.scheduler_kwargs(self, model, steps, latent_hw)  # the same sigmas and shift rule

    def vae_scale(self, model: Any) -> int:
        return 2 ** len(model.vae.config.temperal_downsample)

    def vae_width(self, model: Any) -> int:
        return model.vae.config.base_dim

    def _stats(self, model: Any, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = model.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        return (torch.tensor(cfg.latents_mean).view(shape).to(z.device, z.dtype),
                torch.tensor(cfg.latents_std).view(shape).to(z.device, z.dtype))

    def to_pixels(self, model: Any, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(model, z)
        return model.vae.decode(z[:, :, None] * std + mean, return_dict=False)[0][:, :, 0]

    def to_latent(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        mean = model.vae.encode(x[:, :, None]).latent_dist.mean.float()
        m, s = self._stats(model, mean)
        return ((mean - m) / s)[:, :, 0]

    @staticmethod
    def matches(parts: dict) -> bool:
        return type(parts.get("transformer")).__name__.startswith("QwenImageTransformer")


FAMILY = QwenImage()
