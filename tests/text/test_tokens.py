"""Prompt -> token ids and word positions with the real CLIP tokenizer."""

from __future__ import annotations

import pytest

from p2p_cli.text import tokens
from p2p_cli.text.tokens import (
    PromptError,
    PromptTooLong,
    WordNotFound,
    WordSpan,
    find_tokens,
    token_ids,
    word_spans,
)
from p2p_cli.text.words import split_words

PROMPTS = [
    "a photo of a squirrel eating a burger",
    "a photo of a lasagne eating a burger",
    "A (Bicycle), don't   squirrel's ice-cream 3d café!",
    "a plate of croutons, lasagne and a hotdog.",
    "  Leading and trailing spaces   ",
    "the dog's DOG-house; a dog — and another Dog?!",
    "ein Bär im Café, naïve Œuvre, İstanbul",
    "snake_case words, it’s fine... (really) [yes] {ok}",
    "2 cats and 13 dogs at 3:45pm",
    "a-,-b x\u200by",
    "red car, red car, red CAR",
    "a 🐱 on a mat, 👨‍👩‍👧 ❤️ $5 🇫🇷🐶",
]


def test_token_ids_have_start_and_end(tokenizer):
    assert token_ids(tokenizer, "a photo of a squirrel eating a burger") == [
        49406, 320, 1125, 539, 320, 14004, 4371, 320, 6548, 49407,
    ]


def test_exactly_77_tokens_is_fine_78_is_too_long(tokenizer):
    assert len(token_ids(tokenizer, "cat " * 75)) == 77
    assert len(word_spans(tokenizer, "cat " * 75)) == 75
    with pytest.raises(PromptTooLong) as err:
        token_ids(tokenizer, "cat " * 76)
    assert str(err.value) == "the prompt has 78 tokens with start and end; the model takes at most 77: shorten it"
    assert (err.value.n_tokens, err.value.max_len) == (78, 77)
    assert isinstance(err.value, PromptError) and isinstance(err.value, ValueError)
    with pytest.raises(PromptTooLong):
        word_spans(tokenizer, "cat " * 76)


def test_word_spans_of_a_hard_prompt(tokenizer):
    # tokens: a ( bicycle ), don 't squirrel 's ice - cream 3 d café !
    spans = word_spans(tokenizer, "A (Bicycle), don't   squirrel's ice-cream 3d café!")
    assert spans == [
        WordSpan("a", 0, 1, (1,)),
        WordSpan("bicycle", 1, 1, (3,)),
        WordSpan("don't", 2, 1, (5, 6)),
        WordSpan("squirrel's", 3, 1, (7, 8)),
        WordSpan("ice-cream", 4, 1, (9, 10, 11)),
        WordSpan("3d", 5, 1, (12, 13)),
        WordSpan("café", 6, 1, (14,)),
    ]


def test_word_spans_multi_token_words_and_repeats(tokenizer):
    spans = word_spans(tokenizer, "a photo of a lasagne eating a croutons")
    assert [(s.word, s.occurrence, s.positions) for s in spans] == [
        ("a", 1, (1,)), ("photo", 1, (2,)), ("of", 1, (3,)), ("a", 2, (4,)),
        ("lasagne", 1, (5, 6)), ("eating", 1, (7,)), ("a", 3, (8,)), ("croutons", 1, (9, 10, 11)),
    ]
    assert [s.index for s in spans] == list(range(8))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_every_token_in_at_most_one_word_and_only_punctuation_left_out(tokenizer, prompt):
    ids = token_ids(tokenizer, prompt)
    spans = word_spans(tokenizer, prompt)
    assert [s.word for s in spans] == split_words(prompt)
    owned = [p for s in spans for p in s.positions]
    assert len(owned) == len(set(owned))
    assert all(1 <= p <= len(ids) - 2 for p in owned)
    for p in set(range(1, len(ids) - 1)) - set(owned):
        text = tokenizer.decode([ids[p]])
        assert not any(c.isalnum() for c in text), (p, text)
    for s in spans:  # a word made of letters, digits, ' and - decodes back to itself (less punctuation)
        if all(c.isalnum() or c in "'-" for c in s.word):
            text = tokenizer.decode([ids[p] for p in s.positions])
            assert "".join(c for c in text if c.isalnum() or c in "'-") == s.word


@pytest.mark.parametrize("prompt", PROMPTS)
def test_piece_by_piece_ids_concatenate_to_the_prompt_ids(tokenizer, prompt):
    ids, spans = tokens._offsets_by_piece(tokenizer, prompt)
    assert ids == token_ids(tokenizer, prompt)[1:-1]
    assert len(spans) == len(ids)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_piece_fallback_gives_the_same_spans_as_offsets(tokenizer, prompt, monkeypatch):
    fast = word_spans(tokenizer, prompt)

    def no_offsets(*args):
        raise NotImplementedError

    monkeypatch.setattr(tokens, "_offsets_fast", no_offsets)
    assert word_spans(tokenizer, prompt) == fast


def test_mismatched_pieces_raise_instead_of_guessing(tokenizer, monkeypatch):
    monkeypatch.setattr(tokens, "_offsets_fast", lambda tok, prompt: ([320], [(0, 1)]))
    with pytest.raises(AssertionError, match="cannot locate the tokens"):
        word_spans(tokenizer, "a cat")


def test_find_tokens_single_word_case_and_punctuation(tokenizer):
    prompt = "A Painting of a LION, riding a (Bicycle)."
    # tokens: a painting of a lion , riding a ( bicycle ).
    assert find_tokens(tokenizer, prompt, "lion") == [5]
    assert find_tokens(tokenizer, prompt, "Lion") == [5]
    assert find_tokens(tokenizer, prompt, "Bicycle,") == [10]
    assert find_tokens(tokenizer, prompt, "  painting ") == [2]


def test_find_tokens_multi_token_word_and_phrase(tokenizer):
    prompt = "a plate of croutons, lasagne and a hotdog"
    # tokens: a plate of cr out ons , lasag ne and a hotdog
    assert find_tokens(tokenizer, prompt, "croutons") == [4, 5, 6]
    assert find_tokens(tokenizer, prompt, "lasagne") == [8, 9]
    assert find_tokens(tokenizer, prompt, "plate of croutons") == [2, 3, 4, 5, 6]
    assert find_tokens(tokenizer, prompt, "croutons lasagne") == [4, 5, 6, 8, 9]  # the comma is no word's


def test_find_tokens_repeats_and_occurrence(tokenizer):
    prompt = "a cat and a cat, then a Cat"
    # tokens: a cat and a cat , then a cat
    assert find_tokens(tokenizer, prompt, "cat") == [2, 5, 9]
    assert find_tokens(tokenizer, prompt, "cat#1") == [2]
    assert find_tokens(tokenizer, prompt, "cat#2") == [5]
    assert find_tokens(tokenizer, prompt, "CAT#3") == [9]
    assert find_tokens(tokenizer, prompt, "a cat#2") == [4, 5]
    assert find_tokens(tokenizer, prompt, "a") == [1, 4, 8]


def test_word_not_found_names_the_word_and_lists_the_prompt(tokenizer):
    with pytest.raises(WordNotFound) as err:
        find_tokens(tokenizer, "a painting of a squirrel", "dog")
    assert str(err.value) == '"dog" is not in the prompt; its words are: a, painting, of, a, squirrel'
    assert err.value.word == "dog"
    assert err.value.prompt_words == ["a", "painting", "of", "a", "squirrel"]
    with pytest.raises(WordNotFound, match='"squirrel painting" is not in the prompt'):
        find_tokens(tokenizer, "a painting of a squirrel", "squirrel painting")
    with pytest.raises(WordNotFound):
        find_tokens(tokenizer, "a painting of a squirrel", ",")


def test_occurrence_too_large_says_how_many(tokenizer):
    with pytest.raises(WordNotFound) as err:
        find_tokens(tokenizer, "a cat and a cat", "cat#3")
    assert str(err.value) == '"cat#3" does not exist: "cat" occurs 2 times in the prompt; its words are: a, cat, and, a, cat'
    assert err.value.occurrences == 2
    with pytest.raises(WordNotFound, match='"dog" occurs once'):
        find_tokens(tokenizer, "a dog", "dog#2")
    with pytest.raises(PromptError, match="from 1"):
        find_tokens(tokenizer, "a dog", "dog#0")


def test_emoji_and_symbols_are_words_that_can_be_named(tokenizer):
    prompt = "a 🐱 on a mat, 👨‍👩‍👧 ❤️ $5 🇫🇷🐶"
    assert split_words(prompt) == ["a", "🐱", "on", "a", "mat", "👨\u200d👩\u200d👧", "❤️", "$", "5", "🇫🇷", "🐶"]
    assert find_tokens(tokenizer, prompt, "🐱") == [2]
    assert find_tokens(tokenizer, prompt, "👨‍👩‍👧") == [7, 8, 9, 10]  # one family, four byte tokens
    assert find_tokens(tokenizer, prompt, "🐶") == [find_tokens(tokenizer, prompt, "🇫🇷")[-1] + 1]
    with pytest.raises(WordNotFound, match="its words are: a, 🐱, on, a, mat, "):
        find_tokens(tokenizer, prompt, "🦊")


def test_a_token_shared_by_several_words_belongs_to_each(tokenizer):
    spans = word_spans(tokenizer, "a ^_^ face")
    assert [s.word for s in spans] == ["a", "^", "_", "^", "face"]
    assert spans[1].positions == spans[2].positions == spans[3].positions == (2,)
    assert find_tokens(tokenizer, "a ^_^ face", "face") == [3]
