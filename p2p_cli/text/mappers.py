"""Token mappers from a source prompt to a target prompt (paper section 3.2: word swap and prompt refinement).

A mapper M (L, L) moves the source's cross-attention maps onto the target's tokens, and `aligned` (L,)
says which target tokens take them. With A of shape (..., pixels, L), the edited branch uses:

    A_edit = aligned * (A_src @ M) + (1 - aligned) * A_target_own

Column j of M holds the weights of the source tokens that target token j takes (sum 1 where aligned).
replace: identity except at swapped words; tokens after a swap shift with the token-count difference.
refine: global alignment of the token ids; inserted target tokens have a zero column and aligned 0.
Positions after the target's end token (padding) take the source's same position, j -> j, in both, as the
reference does (its refine mapper continues with len(target) + arange, its replace mapper with the identity).
No real target token is moved by this: it only decides which source maps the target's padding columns get, which
is the source's padding when the source is no longer than the target (and the source's own words and end token
at those positions when it is longer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from p2p_cli.text.align import global_align
from p2p_cli.text.tokens import PromptError, WordSpan, lead_tokens, token_ids, trail_tokens, word_spans


@dataclass(frozen=True)
class TokenMap:
    """A source -> target token mapper and which target tokens it feeds."""

    mapper: torch.Tensor  # (L, L) float32, A_edit = A_src @ mapper
    aligned: torch.Tensor  # (L,) float32, 1 where the target token's map comes from the source


def identity_map(max_len: int = 77) -> TokenMap:
    """The mapper that changes nothing (reweight alone)."""
    return TokenMap(torch.eye(max_len, dtype=torch.float32), torch.ones(max_len, dtype=torch.float32))


def _pad_tail(mapper: torch.Tensor, n_target: int, tokenizer: Any) -> None:
    """Target padding positions j >= n_target take source position j (in place on mapper (L, L)); none where the
    denoiser masks the padding out (a chat template's: text/template.py), so nothing is moved onto it."""
    if getattr(tokenizer, "masked_padding", False):
        return
    tail = torch.arange(n_target, mapper.shape[0])
    mapper[tail, tail] = 1.0


def _segments(spans: list[WordSpan], n_ids: int, lead: int, trail: int) -> list[list[int]]:
    """Token positions cut as [start], gap, word, gap, word, ..., gap, [end] (gaps: punctuation, maybe empty;
    [start] is empty for a tokenizer without a start token, T5; [end] is a chat template's whole suffix)."""
    segments, after = [list(range(lead))], lead
    for span in spans:
        segments += [list(range(after, span.positions[0])), list(span.positions)]
        after = span.positions[-1] + 1
    return segments + [list(range(after, n_ids - trail)), list(range(n_ids - trail, n_ids))]


def replace_map(tokenizer: Any, source: str, target: str) -> TokenMap:
    """Word-swap mapper: words compared position by position, swapped ones spread 1/len(target tokens)."""
    max_len = tokenizer.model_max_length
    ids_s, ids_t = token_ids(tokenizer, source), token_ids(tokenizer, target)
    spans_s, spans_t = word_spans(tokenizer, source), word_spans(tokenizer, target)
    lead, trail = lead_tokens(tokenizer), trail_tokens(tokenizer)
    if len(spans_s) != len(spans_t):
        raise PromptError(
            f"replace swaps words one for one, but the source has {len(spans_s)} words and the target "
            f"{len(spans_t)}: use `type: refine` to add or remove words"
        )
    mapper = torch.zeros(max_len, max_len, dtype=torch.float32)  # (L source, L target)
    aligned = torch.ones(max_len, dtype=torch.float32)  # (L,)
    for seg_s, seg_t in zip(_segments(spans_s, len(ids_s), lead, trail), _segments(spans_t, len(ids_t), lead, trail)):
        if not seg_t:
            continue
        if not seg_s:  # punctuation only the target has: it keeps its own map
            aligned[seg_t] = 0.0
        elif len(seg_s) == len(seg_t):  # same token count (unchanged word, or equal-length swap): one to one
            mapper[seg_s, seg_t] = 1.0
        else:  # each source token spreads 1/t over the target's t tokens
            mapper[torch.tensor(seg_s)[:, None], torch.tensor(seg_t)[None, :]] = 1.0 / len(seg_t)
    _pad_tail(mapper, len(ids_t), tokenizer)
    return TokenMap(mapper, aligned)


def refine_map(tokenizer: Any, source: str, target: str) -> TokenMap:
    """Refinement mapper: target tokens aligned to source tokens (global alignment); inserted ones unaligned."""
    max_len = tokenizer.model_max_length
    ids_s, ids_t = token_ids(tokenizer, source), token_ids(tokenizer, target)
    mapper = torch.zeros(max_len, max_len, dtype=torch.float32)  # (L source, L target)
    aligned = torch.ones(max_len, dtype=torch.float32)  # (L,)
    for j, i in enumerate(global_align(ids_s, ids_t)):
        if i is None:
            aligned[j] = 0.0
        else:
            mapper[i, j] = 1.0
    _pad_tail(mapper, len(ids_t), tokenizer)
    return TokenMap(mapper, aligned)
