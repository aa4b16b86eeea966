"""Control: everything the attention processors read during one run (the plan's tensors on the device, the
batch layout, the mode, the stores), and each sampling step's inputs made once before sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from p2p_cli.engine.control.edits import fused_gates
from p2p_cli.engine.control.store import AttentionStore


@dataclass
class Control:
    """Everything the processors read during one run: plan tensors, batch layout, mode, stores."""

    n_prompts: int  # B: prompts in the batch, [sources..., targets..., baselines...]
    n_targets: int  # n: controlled targets, rows G..G+n-1 (G sources: one, or one per recipe batched together)
    guided: bool  # UNet batch is [uncond x B, cond x B] when True, [cond x B] otherwise
    latent_hw: tuple[int, int]
    mapper: torch.Tensor  # (n, L, L)
    aligned: torch.Tensor  # (n, L)
    equalizer: torch.Tensor  # (n, L)
    alpha: torch.Tensor  # (T, n, L) cross gate per step and token
    self_gate: torch.Tensor  # (T, n) 1 where the target takes the source's self-attention
    self_max_res: int  # self injection only in layers with max(h, w) <= this
    explicit: bool = False
    stores: list[AttentionStore] = field(default_factory=list)
    dtype: torch.dtype = torch.float32  # the UNet's: the fused path's gates and mapper are made in it once
    joint: bool = False  # a transformer's joint attention (engine/joint_attention.py)
    self_blocks: frozenset = frozenset()  # joint: the blocks whose image-image attention targets take
    text_mass: str = "self-window"  # joint: whose text share an edited row keeps (Recipe.text_mass_rule)
    source_of: torch.Tensor | None = None  # (n,) long: each target's source among the G sources; None: all 0

    def __post_init__(self) -> None:
        if self.source_of is None:
            self.source_of = torch.zeros(self.n_targets, dtype=torch.long, device=self.alpha.device)
        self.n_sources = int(self.source_of.max()) + 1 if self.n_targets else 1
        self.g_src, self.g_own = fused_gates(self.alpha, self.equalizer, self.aligned)  # (T, n, L) each
        self.mapper_v = self.mapper.to(self.dtype)
        if self.joint:  # the gates without reweighting: the text mass the image block leaves (joint_attention.py)
            self.m_src, self.m_own = fused_gates(self.alpha, torch.ones_like(self.equalizer), self.aligned)

    def step_inputs(self) -> list[dict[str, torch.Tensor]]:
        """Per sampling step, what the layers read (cross_attention_kwargs["p2p"]), each its own tensor:

        step (0-dim long); v_gate (R, 1, L, 1): 1 except g_own on the targets' conditional rows;
        src_gate (n, 1, L, 1): g_src; self_rows (R,): the row whose queries and keys each row takes in
        self-injected layers (the source's cond row for an injected target, else its own). R = UNet batch rows.
        When the fused path has stores (they record edited probabilities, float32; set them before this call):
        probs_map (n, 1, L, L): the mapper with column j scaled by g_src[j]; probs_own (n, 1, 1, L): g_own.
        """
        rows_total = self.n_prompts * (2 if self.guided else 1)
        c0, g, n = self.cond, self.n_sources, self.n_targets
        device = self.alpha.device
        out = []
        for i in range(self.alpha.shape[0]):
            v_gate = torch.ones(rows_total, self.alpha.shape[-1], device=device)
            v_gate[c0 + g : c0 + g + n] = self.g_own[i]
            self_rows = torch.arange(rows_total, device=device)
            self_rows[c0 + g : c0 + g + n] = torch.where(self.self_gate[i] > 0, c0 + self.source_of,
                                                         self_rows[c0 + g : c0 + g + n])
            out.append({
                "step": torch.tensor(i, device=device),
                "v_gate": v_gate[:, None, :, None].to(self.dtype),
                "src_gate": self.g_src[i][:, None, :, None].to(self.dtype).contiguous(),
                "self_rows": self_rows,
            })
            if self.joint:
                out[-1].update(self._joint_inputs(i))
            if self.stores and not self.explicit:
                out[-1]["probs_map"] = (self.mapper * self.g_src[i][:, None, :])[:, None].float()
                out[-1]["probs_own"] = self.g_own[i][:, None, None, :].float().contiguous()
        return out

    def _joint_inputs(self, i: int) -> dict[str, torch.Tensor]:
        """A joint layer's step inputs: own_gate (n, 1, L, 1) g_own; mass_src (n, 1, L): per source key, the
        unweighted text mass it carries to the target through the mapper (M @ g_src without factors); mass_own
        (n, 1, L): g_own without factors; inject (n, 1, 1, 1) bool: the self window is open; own_mass (n, 1, 1, 1)
        bool: the row keeps its own text share at this step (text_mass "target", or "self-window" once the window
        has closed)."""
        inject = (self.self_gate[i] > 0)[:, None, None, None]
        own_mass = {"source": torch.zeros_like(inject), "target": torch.ones_like(inject),
                    "self-window": ~inject}[self.text_mass]
        return {
            "own_gate": self.g_own[i][:, None, :, None].to(self.dtype).contiguous(),
            "mass_src": (self.mapper @ self.m_src[i][:, :, None])[:, None, :, 0].to(self.dtype).contiguous(),
            "mass_own": self.m_own[i][:, None, :].to(self.dtype).contiguous(),
            "inject": inject,
            "own_mass": own_mass,
        }

    @property
    def cond(self) -> int:
        """Row of the (first) source's conditional branch in the UNet batch."""
        return self.n_prompts if self.guided else 0

    @property
    def targets(self) -> slice:
        """The targets' conditional rows in the denoiser's batch."""
        start = self.cond + self.n_sources
        return slice(start, start + self.n_targets)

    def sources_of_targets(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Each target's source row of x (rows counted from `start`), (n, ...): a view when there is one source."""
        if self.n_sources == 1:
            return x[start : start + 1].expand(self.n_targets, *x.shape[1:])
        return x.index_select(0, self.source_of + start)

    def layer_hw(self, tokens: int) -> tuple[int, int]:
        """(h, w) of a layer with `tokens` image positions, derived from the latent size."""
        lh, lw = self.latent_hw
        return self._downscaled(math.isqrt((lh * lw) // tokens))

    def side_hw(self, side: int) -> tuple[int, int]:
        """(h, w) of a layer whose longer side is `side`."""
        return self._downscaled(max(self.latent_hw) // side)

    def _downscaled(self, factor: int) -> tuple[int, int]:
        lh, lw = self.latent_hw
        return lh // factor, lw // factor
