"""Needleman-Wunsch alignment of token ids (match +1, mismatch -1, gap 0)."""

from __future__ import annotations

import random

from p2p_cli.text.align import global_align

S, E = 49406, 49407


def lcs_length(a: list[int], b: list[int]) -> int:
    """Longest common subsequence, the best score with these weights."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev, row = row, [0]
        for j, y in enumerate(b):
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
    return row[-1]


def test_identical_sequences_align_one_to_one():
    assert global_align([S, 1, 2, 3, E], [S, 1, 2, 3, E]) == [0, 1, 2, 3, 4]


def test_insertions_at_start_middle_and_end():
    assert global_align([S, 1, 2, E], [S, 9, 1, 2, E]) == [0, None, 1, 2, 3]
    assert global_align([S, 1, 2, E], [S, 1, 9, 8, 2, E]) == [0, 1, None, None, 2, 3]
    assert global_align([S, 1, 2, E], [S, 1, 2, 9, E]) == [0, 1, 2, None, 3]


def test_removal_and_substitution():
    assert global_align([S, 1, 2, 3, E], [S, 1, 3, E]) == [0, 1, 3, 4]
    assert global_align([S, 1, 2, 3, E], [S, 1, 9, 3, E]) == [0, 1, None, 3, 4]  # 2 -> 9: not aligned


def test_repeated_token_pairs_with_the_latest_copy():
    # "a dog and a cat" -> "a cat": the target's "a" is the one before "cat"
    assert global_align([S, 1, 7, 8, 1, 5, E], [S, 1, 5, E]) == [0, 4, 5, 6]
    # no diagonal: deleting the source token wins over inserting the target one
    assert global_align([S, 1, 2, E], [S, 2, 1, E]) == [0, None, 1, 3]


def test_empty_sides():
    assert global_align([], []) == []
    assert global_align([1, 2], []) == []
    assert global_align([], [1, 2]) == [None, None]


def test_random_alignments_are_optimal_and_valid():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(4) for _ in range(rng.randrange(9))]
        b = [rng.randrange(4) for _ in range(rng.randrange(9))]
        got = global_align(a, b)
        pairs = [(i, j) for j, i in enumerate(got) if i is not None]
        assert all(a[i] == b[j] for i, j in pairs)
        assert [i for i, _ in pairs] == sorted({i for i, _ in pairs})  # increasing, no source used twice
        assert len(pairs) == lcs_length(a, b)
        assert got == global_align(a, b)
