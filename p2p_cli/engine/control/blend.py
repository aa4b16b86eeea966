"""Local blend (paper sec. 3.2, "local editing"): keep the source's latents outside the edited words' mask.

The target's word mask comes from its cross maps as used, i.e. as edited: inside the cross window they are the
source's maps through the mapper, reweighted by the equalizer (the store records them so, see store.py), as in the
reference, where the target's own unedited maps would give larger masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p2p_cli.engine.control.store import AttentionStore


def word_mask(maps: torch.Tensor, tokens: torch.Tensor, threshold: torch.Tensor, size: tuple[int, int], pool: bool) -> torch.Tensor:
    """Binary mask (n, 1, h, w) where the summed maps of the chosen tokens exceed threshold x their max.

    maps (n, hb, wb, L) cross-attention averages; tokens (n, L) 0/1; threshold (n,).
    """
    m = (maps * tokens[:, None, None, :]).sum(-1)[:, None]  # (n, 1, hb, wb)
    if pool:
        m = F.max_pool2d(m, 3, stride=1, padding=1)
    m = F.interpolate(m, size=size, mode="nearest")  # (n, 1, h, w)
    m = m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return m > threshold[:, None, None, None]


class LocalBlend:
    """After each step from `start`, x_edit := x_src + mask * (x_edit - x_src) for the targets that ask for it."""

    def __init__(self, blend: dict[str, torch.Tensor], store: AttentionStore, side: int, n_targets: int,
                 places: tuple[str, ...] = ("down", "up"), source_of: torch.Tensor | None = None):
        self.b = blend  # tensors from EditPlan.blend (n, L) / (n,)
        # each target's source row (several recipes in one batch: [sources..., targets..., baselines...])
        self.source_of = torch.zeros(n_targets, dtype=torch.long) if source_of is None else source_of
        self.g = int(self.source_of.max()) + 1 if n_targets else 1
        self.places = places  # the layers read: the UNet's down and up blocks, or a transformer's joint blocks
        self.store = store
        self.side = side
        self.n = n_targets
        self.last_mask: torch.Tensor | None = None  # (n, 1, h, w) float, the mask of the latest step

    def mask(self, size: tuple[int, int]) -> torch.Tensor:
        """The current mask per target, (n, 1, h, w) float in {0, 1}."""
        maps = self.store.mean_maps("cross", self.side, self.places)  # (B, hb, wb, L)
        src = maps.index_select(0, self.source_of.to(maps.device))
        tgt = maps[self.g : self.g + self.n]
        b = self.b
        mask = word_mask(src, b["src_tokens"], b["threshold"], size, True)
        mask |= word_mask(tgt, b["tgt_tokens"], b["threshold"], size, True)
        sub = word_mask(src, b["sub_src_tokens"], b["sub_threshold"], size, False)
        sub |= word_mask(tgt, b["sub_tgt_tokens"], b["sub_threshold"], size, False)
        return (mask & ~sub).float()

    def __call__(self, step: int, x: torch.Tensor) -> torch.Tensor:
        """Blend the target rows G..G+n-1 of x (B, C, h, w) after sampling step `step`."""
        mask = self.mask(tuple(x.shape[-2:]))
        self.last_mask = mask
        on = (self.b["active"] & (self.b["start"] <= step))[:, None, None, None]  # (n, 1, 1, 1)
        src, tgt = x.index_select(0, self.source_of.to(x.device)), x[self.g : self.g + self.n]
        blended = torch.where(on, src + mask.to(x.dtype) * (tgt - src), tgt)
        return torch.cat([x[: self.g], blended, x[self.g + self.n :]])
