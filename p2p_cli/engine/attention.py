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
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from p2p_cli.engine.control.edits import (
    edit_cross_explicit,
    edit_cross_gated,
    mapped_values,
)
from p2p_cli.engine.control.run import Control
from p2p_cli.engine.layers import LayerInfo, layer_infos


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
        c0 = ctl.cond
        rows = ctl.targets  # the targets' conditional rows
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
        g, n = ctl.n_sources, ctl.n_targets
        a_src, a_tgt = ctl.sources_of_targets(probs), probs[g : g + n]
        if layer.is_cross and ctl.explicit:
            step = p2p["step"].reshape(1)
            probs[g : g + n] = edit_cross_explicit(a_src, a_tgt, ctl.mapper, ctl.aligned, ctl.equalizer,
                                                   ctl.alpha.index_select(0, step)[0])
        elif layer.is_cross:
            probs[g : g + n] = edit_cross_gated(a_src, a_tgt, p2p["probs_map"], p2p["probs_own"])
        elif inject_self and ctl.explicit:
            gate = ctl.self_gate.index_select(0, p2p["step"].reshape(1))[0][:, None, None, None]  # (n, 1, 1, 1)
            probs[g : g + n] = torch.where(gate > 0, a_src, a_tgt)
        elif inject_self:  # each row takes the maps of the row whose queries and keys it uses
            probs = probs.index_select(0, p2p["self_rows"][ctl.cond :] - ctl.cond)
        return probs

    def _fused(self, q, k, v, scale: float, p2p: dict[str, torch.Tensor], rows: slice,
               inject_self: bool) -> torch.Tensor:
        ctl = self.control
        if not self.layer.is_cross:
            if inject_self:  # injected targets take the source's queries and keys: one gather each
                q, k = q.index_select(0, p2p["self_rows"]), k.index_select(0, p2p["self_rows"])
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
        out = F.scaled_dot_product_attention(q, k, v * p2p["v_gate"], scale=scale)
        src_q = ctl.sources_of_targets(q, ctl.cond)
        src_k = ctl.sources_of_targets(k, ctl.cond)
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
