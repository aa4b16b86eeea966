"""The Prompt-to-Prompt edit of one attention layer (paper sec. 3.2), in two equivalent forms.

Explicit form (the reference approach, and our test oracle), on probabilities A = softmax(Q K^T / sqrt(d)):
    A_edit  = aligned * (A_src @ M) + (1 - aligned) * A_tgt          # replace / refine (M: mapper)
    A_edit *= c                                                       # reweight (equalizer)
    A_final = alpha * A_edit + (1 - alpha) * A_tgt                     # per-step, per-token gate
Fused form: every step above is linear in A, so A_final @ V needs no probabilities at all:
    A_final @ V = SDPA(Q_src, K_src, M @ (g_src * V_tgt)) + SDPA(Q_tgt, K_tgt, g_own * V_tgt)
    g_src = alpha * c * aligned,   g_own = alpha * c * (1 - aligned) + (1 - alpha)
Self-attention injection replaces the target's maps by the source's: A_src @ V_tgt = SDPA(Q_src, K_src, V_tgt).
Where probabilities are stored on the fused path, the same gates edit them: A_final = A_src @ (M g_src) + A_tgt g_own.
"""

from __future__ import annotations

import torch


def fused_gates(alpha: torch.Tensor, equalizer: torch.Tensor, aligned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value gates of the fused form from alpha (T, n, L), equalizer (n, L), aligned (n, L) -> two (T, n, L)."""
    ca = equalizer[None] * alpha  # (T, n, L)
    return ca * aligned[None], ca * (1 - aligned[None]) + (1 - alpha)


def edit_cross_explicit(
    a_src: torch.Tensor,  # (n, heads, Q, L) each target's source's probabilities
    a_tgt: torch.Tensor,  # (n, heads, Q, L) each target's own probabilities
    mapper: torch.Tensor,  # (n, L, L)
    aligned: torch.Tensor,  # (n, L)
    equalizer: torch.Tensor,  # (n, L)
    alpha: torch.Tensor,  # (n, L) this step's gate
) -> torch.Tensor:
    """Edited cross-attention probabilities of the targets, (n, heads, Q, L), as the reference computes them."""
    mapped = torch.matmul(a_src, mapper[:, None])  # (n, heads, Q, L)
    al = aligned[:, None, None, :]
    edit = (al * mapped + (1 - al) * a_tgt) * equalizer[:, None, None, :]
    gate = alpha[:, None, None, :]
    return gate * edit + (1 - gate) * a_tgt


def moved_columns(mapper: torch.Tensor) -> torch.Tensor:
    """The target positions (L,) where some target's mapper column is not the identity's (n, L, L): the only
    columns of A_src @ M that differ from A_src. Few in a word swap, the shifted tail in a refinement; the long
    padding of a T5 sequence never."""
    eye = torch.eye(mapper.shape[-1], device=mapper.device, dtype=mapper.dtype)
    return (mapper != eye).any(dim=1).any(dim=0).nonzero().flatten()


def map_columns(a_src: torch.Tensor, mapper: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """A_src @ M for (n, heads, Q, L) maps, computing only the columns `cols` (moved_columns(M)); the others are
    A_src's own: Q x L x |cols| operations instead of Q x L x L (L = 333 for SD3, 512 for FLUX)."""
    out = a_src.clone() if a_src.is_contiguous() else a_src.contiguous()
    if cols.numel():
        out[..., cols] = torch.matmul(a_src, mapper[:, None, :, :].index_select(-1, cols))
    return out


def edit_cross_gated(
    a_src: torch.Tensor,  # (n, heads, Q, L) each target's source's probabilities
    a_tgt: torch.Tensor,  # (n, heads, Q, L) each target's own probabilities
    src_map: torch.Tensor,  # (n, 1, L, L) the mapper, column j times g_src[j] of this step
    own_gate: torch.Tensor,  # (n, 1, 1, L) g_own of this step
) -> torch.Tensor:
    """edit_cross_explicit with the step's gates folded in: (A_src @ M) * g_src + A_tgt * g_own, (n, heads, Q, L)."""
    return torch.matmul(a_src, src_map) + a_tgt * own_gate


def mapped_values(v_tgt: torch.Tensor, mapper: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """M @ (gate * V) per target: v_tgt (n, heads, L, d), mapper (n, L, L), gate (n, 1, L, 1) -> (n, heads, L, d).

    mapper and gate in v_tgt's dtype (the processors make them so once per run).
    """
    return torch.einsum("nij,nhjd->nhid", mapper, v_tgt * gate)
