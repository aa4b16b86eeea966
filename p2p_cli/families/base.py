"""What every model family gives the engine: conditioning for a batch of prompts, the denoiser call, decoding.

The engine (plan, control, attention store, local blend, sampler, outputs) is shared. A family adapter holds
only what differs between backbones (see docs/families.md):
- encode: prompts -> a `Conditioning`, the text sequence the cross-attention layers read plus whatever extra
  per-row conditioning the denoiser takes (SDXL: pooled text embedding and size/crop ids);
- denoise: one call of the denoiser over a batch with the control's inputs;
- the VAE's dtype rule (SDXL decodes in float32 when the model runs in fp16, as diffusers does);
- per-family defaults (guidance).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from p2p_cli.family_defaults import FAMILY_DEFAULTS


@dataclass
class Conditioning:
    """Per-row conditioning of a batch: what the denoiser gets besides the latent and the timestep.

    hidden (B, L, D) is the text sequence the cross-attention layers attend to (token positions are the
    tokenizer's: position 0 is the start token); added holds extra per-row tensors keyed as the denoiser
    names them (SDXL: text_embeds (B, P) and time_ids (B, 6)); empty for SD 1.x/2.x.
    """

    hidden: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.hidden.shape[0]

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Rows of several conditionings, in order."""
        keys = parts[0].added.keys()
        return Conditioning(torch.cat([p.hidden for p in parts]),
                            {k: torch.cat([p.added[k] for p in parts]) for k in keys})

    def repeat(self, n: int) -> Conditioning:
        """A one-row conditioning as n identical rows."""
        if len(self) != 1:
            raise ValueError(f"repeat needs a one-row conditioning, not {len(self)} rows")
        return Conditioning(self.hidden.expand(n, -1, -1),
                            {k: v.expand(n, *v.shape[1:]) for k, v in self.added.items()})

    def first(self, length: int) -> Conditioning:
        """The rows on their first `length` text positions (extra tensors with a text axis cut with them)."""
        n = self.hidden.shape[1]
        added = {k: v[:, :length] if v.dim() == 2 and v.shape[1] == n else v for k, v in self.added.items()}
        return Conditioning(self.hidden[:, :length], added)

    def with_hidden(self, hidden: torch.Tensor) -> Conditioning:
        """The same extra conditioning with another text sequence (null-text inversion's per-step embedding)."""
        return replace(self, hidden=hidden)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Conditioning:
        return Conditioning(self.hidden.to(device, dtype), {k: v.to(device, dtype) for k, v in self.added.items()})


@dataclass(frozen=True)
class Geometry:
    """The pictures' size and SDXL's micro-conditioning ids, (height, width) and (top, left) in pixels."""

    size: tuple[int, int]
    original_size: tuple[int, int] | None = None  # None: the picture's size
    crop_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None  # None: the picture's size
    shift: float | None = None  # flow-matching families: the recipe's sampler shift (None: the family's)


class Family:
    """The SD 1.x/2.x behaviour; subclasses override what their backbone does differently."""

    name = "sd"
    defaults = FAMILY_DEFAULTS["sd"]  # label, guidance, windows, sampler, ...: p2p_cli/family_defaults.py
    denoiser = "unet"  # the component that denoises: "unet", or "transformer" (joint attention, flow matching)

    @property
    def label(self) -> str:
        return self.defaults.label

    @property
    def default_guidance(self) -> float:
        return self.defaults.guidance

    @property
    def default_self_replace(self) -> float | None:
        """The self window's end when a recipe sets none (None: the recipe's 0.4)."""
        return self.defaults.self_replace

    @property
    def default_self_blocks(self) -> tuple[int, ...] | None:
        """Joint families: the blocks whose image-image attention a target takes (None: every block)."""
        return self.defaults.self_blocks

    @property
    def sampler(self) -> str:
        """"ddim" (our DDIM over the scheduler's alphas) or "flow" (Euler over the family's sigmas)."""
        return self.defaults.sampler

    @property
    def cfg(self) -> bool:
        """Guidance > 1 runs classifier-free guidance over an unconditional batch (FLUX.1: distilled, no batch)."""
        return self.defaults.cfg

    @property
    def uses_micro_conditioning(self) -> bool:
        """SDXL's size and crop ids."""
        return self.defaults.micro_conditioning

    def text_used(self, cond: Conditioning) -> int | None:
        """How many leading text positions any row attends to, when the rest is masked-out padding the run may
        drop; None: every position counts (CLIP's and T5's padding are real tokens)."""
        return None

    def unconditional(self, model: Any) -> bool:
        """Whether guidance > 1 runs an unconditional batch (False for guidance-distilled models)."""
        return self.cfg

    def text_parts(self, model: Any) -> list:
        """The tokenizers of the text sequence the denoiser reads, in order (an int: positions no tokenizer
        reads, zeros); each with model_max_length = its number of positions. The plan maps words per part."""
        return [model.tokenizer]

    def with_guidance(self, model: Any, cond: Conditioning, guidance: float) -> Conditioning:
        """The conditioning with the run's guidance where the denoiser takes it as an input (FLUX.1-dev)."""
        return cond

    def latent_channels(self, model: Any) -> int:
        """Channels of the (unpacked) latent."""
        return model.unet.config.in_channels

    def native_side(self, model: Any) -> int:
        """The latent side the denoiser was trained at."""
        side = model.unet.config.sample_size
        return side if isinstance(side, int) else side[0]

    def downsampling(self, model: Any) -> int:
        """How much the denoiser shrinks the latent (picture sides must be multiples of VAE factor x this)."""
        return 2 ** (len(model.unet.config.block_out_channels) - 1)

    def encode(self, model: Any, prompts: list[str], geometry: Geometry) -> Conditioning:
        """Conditioning (B rows) for the prompts, as diffusers' pipeline of this family computes it."""
        raise NotImplementedError

    def encode_negative(self, model: Any, negative_prompt: str, n: int, geometry: Geometry) -> Conditioning:
        """The unconditional rows for classifier-free guidance."""
        return self.encode(model, [negative_prompt], geometry).repeat(n)

    def denoise(self, model: Any, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        """The denoiser's output for a batch x (R, C, h, w) at timestep t, float32."""
        added = {k: v.to(model.dtype) for k, v in cond.added.items()} or None
        return model.unet(x.to(model.dtype), t, encoder_hidden_states=cond.hidden.to(model.dtype),
                          added_cond_kwargs=added, cross_attention_kwargs=attention_kwargs).sample.float()

    def vae_dtype(self, model_dtype: torch.dtype, vae_config: Any) -> torch.dtype:
        """The dtype the VAE runs in when the model runs in model_dtype."""
        return model_dtype

    def vae_scale(self, model: Any) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(model.vae.config.block_out_channels) - 1)

    def vae_width(self, model: Any) -> int:
        """Channels of the VAE's widest-resolution layers (the memory estimate's decoder activations)."""
        return model.vae.config.block_out_channels[0]

    def to_pixels(self, model: Any, z: torch.Tensor) -> torch.Tensor:
        """Pictures (N, 3, H, W) in [-1, 1] of latents (N, C, h, w) in the VAE's dtype, as the pipeline decodes."""
        cfg = model.vae.config
        return model.vae.decode(z / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)).sample

    def to_latent(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        """Latents (N, C, h, w), float32, of pictures (N, 3, H, W) in [-1, 1]: the VAE posterior mean, scaled."""
        cfg = model.vae.config
        mean = model.vae.encode(x).latent_dist.mean.float()
        return (mean - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor

    def guide(self, uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        """Classifier-free guidance of the denoiser's (R, C, h, w) outputs."""
        return uncond + guidance * (cond - uncond)

    def check_prompt(self, model: Any, prompt: str) -> str | None:
        """A problem with a prompt that the plan's tokenizer cannot see (a second tokenizer), or None."""
        return None
