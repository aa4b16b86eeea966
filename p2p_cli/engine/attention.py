"""diffusers attention processors that apply Prompt-to-Prompt control: fused (SDPA) and explicit.

Installed per layer by module path with unet.set_attn_processor. Each sampling step hands every layer
cross_attention_kwargs["p2p"], that step's tensors made once before sampling (Control.step_inputs): the step
as a 0-dim long tensor and the step's value gates and row map already in the UNet's layout and dtype, so a
layer adds few operations, nothing syncs and torch.compile sees no new constants. The control acts on the
conditional half of the batch only.

Attention stores record, per conditional row, the probabilities that row used: for an edited target that is its
edited cross maps (inside the cross window the source's, mapped and reweighted) and, where self-attention is
injected, the source's self maps; as the reference, whose store holds a view of the maps the edit then overwrites.
The fused path computes probabilities only in the layers a store wants, so only those pay for editing them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from p2p_cli.engine.control.edits import (
    edit_cross_explicit,
    edit_cross_gated,
    fused_gates,
    mapped_values,
)
from p2p_cli.engine.control.store import AttentionStore
from p2p_cli.engine.layers import LayerInfo, layer_infos


@dataclass
class Control:
    """Everything the processors read during one run: plan tensors, batch layout, mode, stores."""

    n_prompts: int  # B: prompts in the batch, [source, targets..., baselines...]
    n_targets: int  # n: controlled targets, rows 1..n
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

    def __post_init__(self) -> None:
        self.g_src, self.g_own = fused_gates(self.alpha, self.equalizer, self.aligned)  # (T, n, L) each
        self.mapper_v = self.mapper.to(self.dtype)

    def step_inputs(self) -> list[dict[str, torch.Tensor]]:
        """Per sampling step, what the layers read (cross_attention_kwargs["p2p"]), each its own tensor:

        step (0-dim long); v_gate (R, 1, L, 1): 1 except g_own on the targets' conditional rows;
        src_gate (n, 1, L, 1): g_src; self_rows (R,): the row whose queries and keys each row takes in
        self-injected layers (the source's cond row for an injected target, else its own). R = UNet batch rows.
        When the fused path has stores (they record edited probabilities, float32; set them before this call):
        probs_map (n, 1, L, L): the mapper with column j scaled by g_src[j]; probs_own (n, 1, 1, L): g_own.
        """
        rows_total = self.n_prompts * (2 if self.guided else 1)
        c0, n = self.cond, self.n_targets
        device = self.alpha.device
        out = []
        for i in range(self.alpha.shape[0]):
            v_gate = torch.ones(rows_total, self.alpha.shape[-1], device=device)
            v_gate[c0 + 1 : c0 + 1 + n] = self.g_own[i]
            self_rows = torch.arange(rows_total, device=device)
            self_rows[c0 + 1 : c0 + 1 + n] = torch.where(self.self_gate[i] > 0, c0, self_rows[c0 + 1 : c0 + 1 + n])
            out.append({
                "step": torch.tensor(i, device=device),
                "v_gate": v_gate[:, None, :, None].to(self.dtype),
                "src_gate": self.g_src[i][:, None, :, None].to(self.dtype).contiguous(),
                "self_rows": self_rows,
            })
            if self.stores and not self.explicit:
                out[-1]["probs_map"] = (self.mapper * self.g_src[i][:, None, :])[:, None].float()
                out[-1]["probs_own"] = self.g_own[i][:, None, None, :].float().contiguous()
        return out

    @property
    def cond(self) -> int:
        """Row of the source's conditional branch in the UNet batch."""
        return self.n_prompts if self.guided else 0

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


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)  # (batch, heads, seq, d)


class P2PAttnProcessor:
    """Attention with P2P control for one layer; plain SDPA when no step inputs are given."""

    def __init__(self, layer: LayerInfo, control: Control):
        self.layer = layer
        self.control = control

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 p2p: dict[str, torch.Tensor] | None = None, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, _, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        elif encoder_hidden_states is None:
            context = hidden_states
        q = _split_heads(query, attn.heads)  # (batch, heads, Q, d)
        k = _split_heads(attn.to_k(context), attn.heads)  # (batch, heads, K, d)
        v = _split_heads(attn.to_v(context), attn.heads)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)

        if p2p is None or attention_mask is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=attn.scale)
        else:
            out = self._controlled(q, k, v, attn.scale, p2p)

        out = out.transpose(1, 2).reshape(batch, -1, q.shape[1] * q.shape[-1]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _controlled(self, q, k, v, scale: float, p2p: dict[str, torch.Tensor]) -> torch.Tensor:
        ctl, layer = self.control, self.layer
        step = p2p["step"]
        hw = ctl.layer_hw(q.shape[2])
        c0, n = ctl.cond, ctl.n_targets
        rows = slice(c0 + 1, c0 + 1 + n)  # the targets' conditional rows
        stores = [s for s in ctl.stores if s.wants(layer, max(hw))]
        inject_self = not layer.is_cross and max(hw) <= ctl.self_max_res

        if not (ctl.explicit or stores):
            return self._fused(q, k, v, scale, p2p, rows, inject_self)
        probs = torch.softmax((q[c0:] @ k[c0:].transpose(-1, -2)).float() * scale, dim=-1)  # (B, heads, Q, K)
        probs = self._used(probs, p2p, inject_self)
        for store in stores:  # what each row used, as the reference's store (edited in place) holds
            store.add(layer, hw, probs, step)
        if not ctl.explicit:
            return self._fused(q, k, v, scale, p2p, rows, inject_self)
        cond_out = probs.to(v.dtype) @ v[c0:]
        if c0 == 0:
            return cond_out
        uncond_out = F.scaled_dot_product_attention(q[:c0], k[:c0], v[:c0], scale=scale)
        return torch.cat([uncond_out, cond_out])

    def _used(self, probs: torch.Tensor, p2p: dict[str, torch.Tensor], inject_self: bool) -> torch.Tensor:
        """The conditional rows' probabilities (B, heads, Q, K) as each row uses them at this step (in place).

        The targets' rows are edited: cross layers as edit_cross_explicit says (inside the cross window the
        source's maps through the mapper, reweighted), injected self layers take the source's maps. The source
        and the baselines keep their own. This is what the explicit path multiplies with V, and what every
        attention store records (local blend's masks and the attention pictures read the maps a row used).
        The explicit path edits in the reference's form from the plan's tensors (the fused path's oracle); the
        fused path, which only needs them for its stores, from its step inputs (gates folded into the mapper,
        the row map of its self injection): fewer operator calls, the same maths.
        """
        ctl, layer = self.control, self.layer
        n = ctl.n_targets
        a_src, a_tgt = probs[0], probs[1 : 1 + n]
        if layer.is_cross and ctl.explicit:
            step = p2p["step"].reshape(1)
            probs[1 : 1 + n] = edit_cross_explicit(a_src, a_tgt, ctl.mapper, ctl.aligned, ctl.equalizer,
                                                   ctl.alpha.index_select(0, step)[0])
        elif layer.is_cross:
            probs[1 : 1 + n] = edit_cross_gated(a_src, a_tgt, p2p["probs_map"], p2p["probs_own"])
        elif inject_self and ctl.explicit:
            gate = ctl.self_gate.index_select(0, p2p["step"].reshape(1))[0][:, None, None, None]  # (n, 1, 1, 1)
            probs[1 : 1 + n] = torch.where(gate > 0, a_src.expand_as(a_tgt), a_tgt)
        elif inject_self:  # each row takes the maps of the row whose queries and keys it uses
            probs = probs.index_select(0, p2p["self_rows"][ctl.cond :] - ctl.cond)
        return probs

    def _fused(self, q, k, v, scale: float, p2p: dict[str, torch.Tensor], rows: slice,
               inject_self: bool) -> torch.Tensor:
        ctl = self.control
        c0 = ctl.cond
        if not self.layer.is_cross:
            if inject_self:  # injected targets take the source's queries and keys: one gather each
                q, k = q.index_select(0, p2p["self_rows"]), k.index_select(0, p2p["self_rows"])
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
        out = F.scaled_dot_product_attention(q, k, v * p2p["v_gate"], scale=scale)
        n = ctl.n_targets
        src_q = q[c0 : c0 + 1].expand(n, -1, -1, -1)
        src_k = k[c0 : c0 + 1].expand(n, -1, -1, -1)
        mapped = mapped_values(v[rows], ctl.mapper_v, p2p["src_gate"])
        out[rows].add_(F.scaled_dot_product_attention(src_q, src_k, mapped, scale=scale))
        return out


@contextlib.contextmanager
def controlled(unet, control: Control) -> Iterator[None]:
    """Install P2P processors on every attention layer of unet for the duration of the block."""
    previous = unet.attn_processors
    unet.set_attn_processor({name: P2PAttnProcessor(info, control) for name, info in layer_infos(unet).items()})
    try:
        yield
    finally:
        unet.set_attn_processor(previous)
