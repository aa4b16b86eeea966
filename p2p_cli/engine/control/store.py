"""The attention store: per layer, the conditional branch's head-averaged maps summed over steps.

The maps are the ones each row used (the processors hand over edited probabilities): a target's cross maps as
edited (inside the cross window the source's maps through the mapper, reweighted) and the source's self maps
where self-attention is injected; the source's and the baselines' rows are their own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from p2p_cli.engine.layers import LayerInfo


class AttentionStore:
    """Sums of the cond-branch maps, (B, Q, K) per layer, weighted per step (1 by default)."""

    def __init__(self, wants: Callable[[LayerInfo, int], bool], step_weights: torch.Tensor):
        self.wants = wants  # (layer, side) -> record this layer?
        self.step_weights = step_weights  # (T,) float: 0 leaves a step out
        self.sums: dict[str, torch.Tensor] = {}
        self.layers: dict[str, LayerInfo] = {}
        self.shapes: dict[str, tuple[int, int]] = {}

    def prepare(self, layers: dict[LayerInfo, tuple[int, int]], rows: int, text_length: int,
                device: torch.device) -> None:
        """Zero sums (rows, Q, K) for every wanted layer not stored yet, given each layer's (h, w).

        Made before sampling, so every step sees the same dict and a compiled UNet is traced once.
        """
        for layer, hw in layers.items():
            if layer.name in self.sums or not self.wants(layer, max(hw)):
                continue
            keys = text_length if layer.is_cross else hw[0] * hw[1]
            self.sums[layer.name] = torch.zeros(rows, hw[0] * hw[1], keys, device=device)
            self.layers[layer.name] = layer
            self.shapes[layer.name] = hw

    def add(self, layer: LayerInfo, hw: tuple[int, int], probs: torch.Tensor, step: torch.Tensor) -> None:
        """Accumulate probs (B, heads, Q, K) of one layer at step (0-dim long tensor)."""
        maps = probs.float().mean(1) * self.step_weights.index_select(0, step.reshape(1))[0]  # (B, Q, K)
        if layer.name in self.sums:
            self.sums[layer.name] += maps
        else:  # a layer prepare() was not told about
            self.sums[layer.name] = maps
            self.layers[layer.name] = layer
            self.shapes[layer.name] = hw

    def average(self, name: str) -> torch.Tensor:
        """The step-average of one layer's maps, (B, Q, K)."""
        return self.sums[name] / self.step_weights.sum().clamp_min(1e-12)

    def select(self, kind: str, side: int | None = None, places: tuple[str, ...] = ("down", "up")) -> list[str]:
        """Names of stored layers of a kind ("cross"/"self"), optionally of one side (max of h, w), in places (a
        transformer's joint layers belong to every place)."""
        return [
            n for n, info in self.layers.items()
            if info.kind == kind and (info.place in places or info.place == "joint")
            and (side is None or max(self.shapes[n]) == side)
        ]

    def mean_maps(self, kind: str, side: int, places: tuple[str, ...] = ("down", "up")) -> torch.Tensor:
        """Average over the selected layers (and heads, steps): (B, h, w, K)."""
        names = self.select(kind, side, places)
        if not names:
            raise ValueError(f"no stored {kind}-attention layers of side {side} in {places}")
        h, w = self.shapes[names[0]]
        maps = torch.stack([self.average(n) for n in names]).mean(0)  # (B, Q, K)
        return maps.reshape(maps.shape[0], h, w, maps.shape[-1])
