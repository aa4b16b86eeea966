"""Replace and refine mappers: exact entries, the shifted tail after unequal swaps, padding (j -> j)."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.text.mappers import TokenMap, identity_map, refine_map, replace_map
from p2p_cli.text.tokens import PromptError, PromptTooLong, token_ids

L = 77
SQUIRREL = "a photo of a squirrel eating a burger"  # S a photo of a squirrel eating a burger E: 10 tokens
LASAGNE = "a photo of a lasagne eating a burger"  # lasagne = lasag ne: 11 tokens
CROUTONS = "a photo of a croutons eating a burger"  # croutons = cr out ons: 12 tokens


def expected(entries: dict[tuple[int, int], float], n_target: int) -> torch.Tensor:
    """A (L, L) mapper from explicit (source, target) entries plus target padding j -> j (the reference's)."""
    m = torch.zeros(L, L)
    for (i, j), v in entries.items():
        m[i, j] = v
    for j in range(n_target, L):
        m[j, j] = 1.0
    return m


def diagonal(*positions: int) -> dict[tuple[int, int], float]:
    return {(p, p): 1.0 for p in positions}


def test_identity_map():
    tm = identity_map()
    assert isinstance(tm, TokenMap)
    assert tm.mapper.dtype == torch.float32 and tm.mapper.shape == (L, L)
    assert torch.equal(tm.mapper, torch.eye(L)) and torch.equal(tm.aligned, torch.ones(L))
    assert identity_map(5).mapper.shape == (5, 5)


@pytest.mark.parametrize("prompt", [SQUIRREL, "A (Bicycle), don't   squirrel's ice-cream 3d café!", "lasagne"])
def test_same_prompt_gives_identity(tokenizer, prompt):
    for build in (replace_map, refine_map):
        tm = build(tokenizer, prompt, prompt)
        assert torch.equal(tm.mapper, torch.eye(L)), build.__name__
        assert torch.equal(tm.aligned, torch.ones(L)), build.__name__


def test_replace_equal_token_counts_is_identity(tokenizer):
    tm = replace_map(tokenizer, "a cat eating a burger", "a dog eating a pizza")
    assert torch.equal(tm.mapper, torch.eye(L))


def test_replace_one_token_to_two_shifts_the_tail(tokenizer):
    tm = replace_map(tokenizer, SQUIRREL, LASAGNE)
    entries = diagonal(0, 1, 2, 3, 4) | {(5, 5): 0.5, (5, 6): 0.5}
    entries |= {(6, 7): 1.0, (7, 8): 1.0, (8, 9): 1.0, (9, 10): 1.0}  # eating a burger <end>, one to the right
    assert torch.equal(tm.mapper, expected(entries, 11))
    assert torch.equal(tm.aligned, torch.ones(L))
    a_src = torch.arange(3 * L, dtype=torch.float32).reshape(3, L)  # (pixels, L), distinct columns
    a_edit = a_src @ tm.mapper  # (pixels, L)
    assert torch.equal(a_edit[:, 7], a_src[:, 6])  # target "eating" takes source "eating"
    assert torch.equal(a_edit[:, 10], a_src[:, 9])  # end token takes end token
    assert torch.equal(a_edit[:, 5], 0.5 * a_src[:, 5])  # lasag: half of squirrel


def test_replace_two_tokens_to_one_shifts_the_tail_back(tokenizer):
    tm = replace_map(tokenizer, LASAGNE, SQUIRREL)
    entries = diagonal(0, 1, 2, 3, 4) | {(5, 5): 1.0, (6, 5): 1.0}
    entries |= {(7, 6): 1.0, (8, 7): 1.0, (9, 8): 1.0, (10, 9): 1.0}
    assert torch.equal(tm.mapper, expected(entries, 10))
    assert tm.mapper[:, 76].nonzero().flatten().tolist() == [76]


def test_replace_two_tokens_to_three(tokenizer):
    tm = replace_map(tokenizer, LASAGNE, CROUTONS)
    entries = diagonal(0, 1, 2, 3, 4) | {(i, j): 1 / 3 for i in (5, 6) for j in (5, 6, 7)}
    entries |= {(7, 8): 1.0, (8, 9): 1.0, (9, 10): 1.0, (10, 11): 1.0}
    assert torch.equal(tm.mapper, expected(entries, 12))


def test_replace_two_swaps_accumulate_the_shift(tokenizer):
    # S a squirrel eating a burger E (7) -> S a lasag ne eating a cr out ons E (10)
    tm = replace_map(tokenizer, "a squirrel eating a burger", "a lasagne eating a croutons")
    entries = diagonal(0, 1) | {(2, 2): 0.5, (2, 3): 0.5, (3, 4): 1.0, (4, 5): 1.0}
    entries |= {(5, 6): 1 / 3, (5, 7): 1 / 3, (5, 8): 1 / 3, (6, 9): 1.0}
    assert torch.equal(tm.mapper, expected(entries, 10))


def test_replace_column_sums(tokenizer):
    tm = replace_map(tokenizer, "a squirrel eating a burger", "a lasagne eating a croutons")
    sums = tm.mapper.sum(0)  # (L,) per target token
    want = torch.ones(L)
    want[[2, 3]] = 1 / 2  # one source token spread over two
    want[[6, 7, 8]] = 1 / 3
    assert torch.allclose(sums, want)
    assert torch.allclose(tm.mapper[:7].sum(1), torch.ones(7))  # every real source token keeps its mass


def test_replace_punctuation(tokenizer):
    # S a cat , sleeping . E (7) -> S a dog , sleeping E (6): the source's "." has no counterpart
    tm = replace_map(tokenizer, "a cat, sleeping.", "a dog, sleeping")
    entries = diagonal(0, 1, 2, 3, 4) | {(6, 5): 1.0}
    assert torch.equal(tm.mapper, expected(entries, 6))
    assert torch.equal(tm.aligned, torch.ones(L))
    # S a cat E (4) -> S a dog ! E (5): the target's "!" keeps its own map
    tm = replace_map(tokenizer, "a cat", "a dog!")
    assert torch.equal(tm.mapper, expected(diagonal(0, 1, 2) | {(3, 4): 1.0}, 5))
    want = torch.ones(L)
    want[3] = 0.0
    assert torch.equal(tm.aligned, want)


def test_replace_needs_the_same_word_count(tokenizer):
    with pytest.raises(PromptError, match=r"source has 2 words and the target 3: use `type: refine`"):
        replace_map(tokenizer, "a cat", "a red cat")


def test_too_long_prompts_are_refused(tokenizer):
    with pytest.raises(PromptTooLong):
        replace_map(tokenizer, "cat " * 76, "dog " * 76)
    with pytest.raises(PromptTooLong):
        refine_map(tokenizer, "a cat", "cat " * 76)
    assert refine_map(tokenizer, "cat " * 75, "cat " * 75).mapper.shape == (L, L)


def test_refine_insertion_in_the_middle(tokenizer):
    # S a photo of a squirrel E (7) -> S a photo of a red squirrel E (8)
    tm = refine_map(tokenizer, "a photo of a squirrel", "a photo of a red squirrel")
    entries = diagonal(0, 1, 2, 3, 4) | {(5, 6): 1.0, (6, 7): 1.0}
    assert torch.equal(tm.mapper, expected(entries, 8))
    want = torch.ones(L)
    want[5] = 0.0
    assert torch.equal(tm.aligned, want)


def test_refine_insertion_at_the_start(tokenizer):
    tm = refine_map(tokenizer, "cat on a mat", "a cat on a mat")
    entries = diagonal(0) | {(i, i + 1): 1.0 for i in range(1, 6)}
    assert torch.equal(tm.mapper, expected(entries, 7))
    assert tm.aligned[:8].tolist() == [1, 0, 1, 1, 1, 1, 1, 1]


def test_refine_insertion_at_the_end_multi_token(tokenizer):
    # S a plate E (4) -> S a plate of lasag ne E (7)
    tm = refine_map(tokenizer, "a plate", "a plate of lasagne")
    assert torch.equal(tm.mapper, expected(diagonal(0, 1, 2) | {(3, 6): 1.0}, 7))
    assert tm.aligned[:8].tolist() == [1, 1, 1, 0, 0, 0, 1, 1]


def test_refine_removal(tokenizer):
    # S a big red car E (6) -> S a red car E (5)
    tm = refine_map(tokenizer, "a big red car", "a red car")
    entries = diagonal(0, 1) | {(3, 2): 1.0, (4, 3): 1.0, (5, 4): 1.0}
    assert torch.equal(tm.mapper, expected(entries, 5))
    assert torch.equal(tm.aligned, torch.ones(L))


def test_refine_repeated_word_takes_the_nearest_copy(tokenizer):
    # S a dog and a cat E (7) -> S a cat E (4): "a" is the one before "cat"
    tm = refine_map(tokenizer, "a dog and a cat", "a cat")
    entries = {(0, 0): 1.0, (4, 1): 1.0, (5, 2): 1.0, (6, 3): 1.0}
    assert torch.equal(tm.mapper, expected(entries, 4))


@pytest.mark.parametrize(
    "source, target",
    [
        ("a photo of a squirrel", "a watercolor painting of a squirrel, at night"),
        ("a cat, a dog and a bird", "a bird"),
        ("lasagne", "croutons and lasagne on a plate"),
    ],
)
def test_refine_column_sums_follow_aligned(tokenizer, source, target):
    tm = refine_map(tokenizer, source, target)
    assert torch.equal(tm.mapper.sum(0), tm.aligned)  # 1 where aligned, 0 for inserted tokens


@pytest.mark.parametrize(
    "build, source, target, n_source, n_target",
    [
        (refine_map, "a photo of a house on a mountain", "a photo of a house on a mountain at fall", 10, 12),
        (refine_map, "a photo of a squirrel", "a photo of a red squirrel", 7, 8),
        (refine_map, "lasagne", "croutons and lasagne on a plate", 4, 11),
        (refine_map, "a big red car", "a red car", 6, 5),  # source longer: target pad 5 reads the source's end
        (refine_map, "a dog and a cat", "a cat", 7, 4),  # target pads 4-6 read the source's "a cat" and end
        (replace_map, SQUIRREL, LASAGNE, 10, 11),
        (replace_map, LASAGNE, SQUIRREL, 11, 10),
        (replace_map, "a squirrel eating a burger", "a lasagne eating a croutons", 7, 10),
    ],
)
def test_padding_tail_is_the_reference_identity(tokenizer, build, source, target, n_source, n_target):
    """Target position j past the target's tokens reads source position j (the reference's mapper[j] = j for
    refine, its identity for replace); the target's real tokens do not read the source's padding at all."""
    assert (len(token_ids(tokenizer, source)), len(token_ids(tokenizer, target))) == (n_source, n_target)
    tm = build(tokenizer, source, target)
    assert torch.equal(tm.mapper[:, n_target:], torch.eye(L)[:, n_target:])  # column j: a single 1, at row j
    assert torch.equal(tm.aligned[n_target:], torch.ones(L - n_target))
    assert not tm.mapper[n_source:, :n_target].any()  # real target tokens read only real source positions
    a_src = torch.rand(3, L)  # (pixels, L)
    a_other = a_src.clone()
    a_other[:, n_source:] = torch.rand(3, L - n_source)  # another source padding
    assert torch.equal((a_src @ tm.mapper)[:, :n_target], (a_other @ tm.mapper)[:, :n_target])
    assert torch.equal((a_src @ tm.mapper)[:, n_target:], a_src[:, n_target:])
