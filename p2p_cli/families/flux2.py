"""FLUX.2 [klein] (Flux2KleinPipeline) and FLUX.2 [dev] (Flux2Pipeline): Flux2Transformer2DModel, double- then
single-stream blocks over a language model's text sequence (klein: Qwen3; dev: Mistral Small 3.1). [dev] is klein
with another text path and a guidance input; the notes below are klein's, `Flux2Dev` says what differs.

- Text sequence, as Flux2KleinPipeline builds it: the prompt rendered by the tokenizer's own chat template (one
  user message, the assistant turn opened, thinking off), padded to 512 tokens (`max_sequence_length`), and the
  hidden states of Qwen3 layers 9, 18 and 27 joined along the features. Nothing is dropped and nothing is masked
  in the transformer: the template's prefix is read as lead tokens (no word of the prompt, never edited or
  shown), its suffix as the end, the padding as padding (its states are real, as T5's), all through
  text/template.py.
- Latents: the pipeline draws its noise already in 2x2 patches, (1, 4C, H/16, W/16), and samples there; the VAE's
  batch norm normalises latents in that patched space. So the engine's latent is the patched one (128 channels,
  16 pixels per cell, one token per cell): the seed's draw is the pipeline's, local blend and masks work on the
  token grid. Decoding un-normalises, un-patches and runs the VAE, as the pipeline.
- Guidance: classifier-free over an empty negative prompt (the pipeline always uses ""; a recipe's negative
  prompt is used as given), 4.0 by default; guidance-distilled klein models (`is_distilled` in model_index.json)
  run no unconditional batch, as the pipeline.
- Flow matching: sigmas linspace(1, 1/T, T) with the pipeline's empirical mu (image tokens and step count).
- Blocks: double-stream ([text; image], FLUX.1's processor layout) then single-stream (one fused QKV+MLP
  projection): both get the engine's joint control.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from p2p_cli.families.base import Conditioning, Geometry
from p2p_cli.families.flow import FlowFamily, double_and_single_blocks
from p2p_cli.families.flux import Flux
from p2p_cli.family_defaults import FAMILY_DEFAULTS
from p2p_cli.text.template import TemplateTokenizer, chat_template

TEXT_LENGTH = 512  # Flux2KleinPipeline's max_sequence_length
KLEIN_LAYERS = (9, 18, 27)  # its text_encoder_out_layers
DEV_LAYERS = (10, 20, 30)  # Flux2Pipeline's


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) patched latents -> (B, h * w, C) tokens, as Flux2KleinPipeline._pack_latents."""
    return x.flatten(2).transpose(1, 2)


def unpack(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw)


def token_ids(h: int, w: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(h * w, 4) image ids (0, row, column, 0) and (length, 4) text ids (0, 0, 0, position), as the pipeline."""
    image = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    text = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))
    return image.to(device), text.to(device)


class Flux2Klein(FlowFamily):
    name = "flux2-klein"
    defaults = FAMILY_DEFAULTS["flux2-klein"]
    joint_layout = "flux2"
    layers = KLEIN_LAYERS  # the pipeline's default text_encoder_out_layers
    add_special_tokens = True  # as the pipeline tokenizes the rendered template

    def text_tokenizer(self, model: Any) -> Any:
        """The tokenizer proper (a processor's, as FLUX.2 [dev]'s PixtralProcessor holds one)."""
        return getattr(model.tokenizer, "tokenizer", model.tokenizer)

    def text_length(self, model: Any) -> int:
        return int(model.options.get("max_sequence_length", TEXT_LENGTH))

    def template(self, model: Any) -> str:
        return chat_template(model.tokenizer, enable_thinking=False)

    def text_parts(self, model: Any) -> list:
        length = self.text_length(model)
        tokenizer = self.text_tokenizer(model)
        cached = getattr(tokenizer, "_p2p_template", None)
        if cached is None or cached.model_max_length != length:
            if getattr(tokenizer, "padding_side", "right") != "right":
                raise ValueError("this FLUX.2 tokenizer pads on the left: word positions would move with the"
                                 " prompt's length, which p2p does not support")
            cached = TemplateTokenizer(tokenizer, self.template(model), 0, length, self.add_special_tokens)
            cached.masked_padding = False  # the transformer reads the padding's states
            tokenizer._p2p_template = cached
        return [cached]

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        template = self.template(model)
        length = self.text_length(model)
        tokenizer = self.text_tokenizer(model)
        enc = [tokenizer(template.replace("{}", p, 1), return_tensors="pt", padding="max_length", truncation=True,
                         max_length=length, add_special_tokens=self.add_special_tokens) for p in prompts]
        out = model.text_encoder(input_ids=torch.cat([e.input_ids for e in enc]).to(model.device),
                                 attention_mask=torch.cat([e.attention_mask for e in enc]).to(model.device),
                                 output_hidden_states=True, use_cache=False)
        layers = tuple(model.options.get("text_encoder_out_layers", self.layers))
        hidden = torch.stack([out.hidden_states[k] for k in layers], dim=1)  # (B, layers, L, D)
        return Conditioning(hidden.permute(0, 2, 1, 3).flatten(2).to(model.dtype))

    def unconditional(self, model: Any) -> bool:
        return self.cfg and not model.options.get("is_distilled", False)

    def denoise(self, model: Any, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        img_ids, txt_ids = token_ids(h, w, cond.hidden.shape[1], x.device)
        guidance = cond.added.get("guidance")  # FLUX.2 [dev]'s, float32 as the pipeline passes it
        out = model.transformer(
            hidden_states=pack(x.to(model.dtype)), timestep=t.reshape(1).expand(b).to(model.dtype) / 1000,
            guidance=None if guidance is None else guidance.float(), encoder_hidden_states=cond.hidden.to(model.dtype),
            txt_ids=txt_ids, img_ids=img_ids,
            joint_attention_kwargs=attention_kwargs, return_dict=False)[0]
        return unpack(out.float(), (h, w))

    def latent_channels(self, model: Any) -> int:
        return model.transformer.config.in_channels

    def native_side(self, model: Any) -> int:
        return 64  # Flux2KleinPipeline's default_sample_size 128 VAE cells, 2x2 patched: 1024 px

    def downsampling(self, model: Any) -> int:
        return 1  # the latent is already patched: one token per cell

    def vae_scale(self, model: Any) -> int:
        return 2 ** len(model.vae.config.block_out_channels)  # the VAE's 8 times the 2x2 patch

    def blocks(self, model: Any) -> list[tuple[int, str]]:
        return double_and_single_blocks(model.transformer)

    def scheduler_kwargs(self, model: Any, steps: int, latent_hw: tuple[int, int]) -> dict:
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

        config = model.scheduler.config
        kwargs = {"mu": compute_empirical_mu(latent_hw[0] * latent_hw[1], steps)} \
            if config.get("use_dynamic_shifting", False) else {}
        if not config.get("use_flow_sigmas", False):
            kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
        return kwargs

    def _bn(self, model: Any, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = model.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(z.device, z.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + model.vae.config.batch_norm_eps).to(z.device, z.dtype)
        return mean, std

    def to_pixels(self, model: Any, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._bn(model, z)
        z = z * std + mean
        b, c4, h, w = z.shape
        z = z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)
        return model.vae.decode(z, return_dict=False)[0]

    def to_latent(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        z = model.vae.encode(x).latent_dist.mode().float()
        b, c, h, w = z.shape
        z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        mean, std = self._bn(model, z)
        return (z - mean) / std

    @staticmethod
    def matches(parts: dict) -> bool:
        return (type(parts.get("transformer")).__name__.startswith("Flux2Transformer")
                and type(parts.get("text_encoder")).__name__.startswith("Qwen3"))


class Flux2Dev(Flux2Klein):
    """FLUX.2 [dev] (Flux2Pipeline): klein's transformer, latents and sampler; what differs is the text path and
    the guidance.

    - Text sequence: the prompt as the user message after the pipeline's system message (`system_messages.py`),
      rendered by the processor's chat template with no generation prompt (Mistral's `<s>[SYSTEM_PROMPT]...
      [/SYSTEM_PROMPT][INST]{prompt}[/INST]`), tokenized without adding special tokens (the template holds `<s>`),
      padded to 512; the hidden states of Mistral layers 10, 20 and 30 joined. The `<s>` and system prefix are
      lead tokens (no word), `[/INST]` the end, as klein's template through text/template.py.
    - Guidance: guidance-distilled: the recipe's `guidance` (4.0 by default, the pipeline's) is an input of the
      transformer's guidance embedding and there is no unconditional batch or negative prompt, as the pipeline.
    """

    name = "flux2-dev"
    defaults = FAMILY_DEFAULTS["flux2-dev"]
    layers = DEV_LAYERS
    add_special_tokens = False  # the processor's apply_chat_template adds none to a text that starts with <s>

    def template(self, model: Any) -> str:
        from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

        return chat_template(self.text_tokenizer(model), system=model.options.get("system_message", SYSTEM_MESSAGE))

    def check_prompt(self, model: Any, prompt: str) -> str | None:
        if "[IMG]" in prompt:  # format_input drops it: the pipeline would read other positions than the plan's
            return 'Flux2Pipeline removes "[IMG]" from a prompt before reading it: remove it from the prompt'
        return None

    with_guidance = Flux.with_guidance  # the guidance as an input where the transformer embeds it

    @staticmethod
    def matches(parts: dict) -> bool:
        return (type(parts.get("transformer")).__name__.startswith("Flux2Transformer")
                and type(parts.get("text_encoder")).__name__.startswith("Mistral3"))


FAMILY = Flux2Klein()
DEV = Flux2Dev()
