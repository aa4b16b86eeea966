"""Global (Needleman-Wunsch) alignment of two token-id sequences, for refine edits (paper section 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

MATCH, MISMATCH, GAP = 1, -1, 0  # the reference scores (algorithm.md, "Edit types": refine)


def global_align(source: Sequence[int], target: Sequence[int]) -> list[int | None]:
    """For each target index, the aligned source index, or None where the target token is inserted.

    Traceback from the end, at each cell taking the first optimal step of: diagonal match, up (source
    token deleted), left (target token inserted), diagonal mismatch (a substitution: None). So, among
    equal-scoring alignments, a repeated token pairs with the latest copy it can.
    """
    n, m = len(source), len(target)
    score = [[GAP * (i + j) if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]  # (n+1, m+1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1][j - 1] + (MATCH if source[i - 1] == target[j - 1] else MISMATCH)
            score[i][j] = max(diag, score[i - 1][j] + GAP, score[i][j - 1] + GAP)
    aligned: list[int | None] = [None] * m
    i, j = n, m
    while i > 0 or j > 0:
        here = score[i][j]
        if i and j and source[i - 1] == target[j - 1] and here == score[i - 1][j - 1] + MATCH:
            aligned[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif i and here == score[i - 1][j] + GAP:
            i -= 1
        elif j and here == score[i][j - 1] + GAP:
            j -= 1
        else:  # substitution, only optimal with other scores: the target token is not aligned
            i, j = i - 1, j - 1
    return aligned
