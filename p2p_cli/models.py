"""Model components: the Model bundle every stage uses; loading from hub ids, local folders, the bundled model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Model:
    """The Stable Diffusion parts the engine needs, on one device and dtype."""

    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    scheduler: Any  # diffusers DDIMScheduler (only its config is used)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    id: str = "components"  # hub id, local path or "bundled:shapes"
    revision: str | None = None  # hub commit, when known

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_size(self) -> tuple[int, int]:
        """The (height, width) in pixels the UNet was trained at."""
        side = self.unet.config.sample_size
        side = side if isinstance(side, int) else side[0]
        return side * self.vae_scale, side * self.vae_scale

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Model:
        """Move every network to device/dtype (in place) and return self."""
        self.device, self.dtype = torch.device(device), dtype
        for net in (self.unet, self.vae, self.text_encoder):
            net.to(device=self.device, dtype=dtype)
        return self


def from_components(parts: dict, id: str = "components", device: str = "cpu", dtype=torch.float32) -> Model:
    """A Model from a dict of diffusers/transformers parts (as arch.tiny_components() returns)."""
    return Model(**parts, id=id).to(device, dtype)
