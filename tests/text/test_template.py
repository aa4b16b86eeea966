"""Words -> token positions through a chat template (Qwen-Image's), with an offline Qwen2-format BPE tokenizer:
the system prefix is skipped, multi-piece words map to all their pieces, the suffix is no word."""

from __future__ import annotations

import pytest

from lab.arch import qwen_tokenizer
from p2p_cli.text.template import QWEN_IMAGE_DROP as DROP
from p2p_cli.text.template import QWEN_IMAGE_TEMPLATE as TEMPLATE
from p2p_cli.text.mappers import refine_map, replace_map
from p2p_cli.text.template import TemplateTokenizer
from p2p_cli.text.tokens import PromptError, PromptTooLong, find_tokens, token_ids, word_spans

SOURCE = "a painting of a squirrel eating a burger"


@pytest.fixture(scope="module")
def qwen():
    return qwen_tokenizer()


@pytest.fixture(scope="module")
def tok(qwen):
    return TemplateTokenizer(qwen, TEMPLATE, DROP, 64)


def test_the_template_prefix_is_dropped_and_the_suffix_trails(qwen, tok):
    full = qwen(TEMPLATE.format(SOURCE)).input_ids
    ids = token_ids(tok, SOURCE)
    assert ids == full[DROP:]  # what the pipeline keeps: the system prefix is not part of the sequence
    assert tok.prompt_lead == 0 and tok.prompt_trail == 5  # <|im_end|> \n <|im_start|> assistant \n
    assert qwen.decode(full[:DROP]).endswith("<|im_start|>user\n")
    assert qwen.decode(ids[-5:]) == "<|im_end|>\n<|im_start|>assistant\n"


def test_words_map_to_all_their_pieces_and_nothing_of_the_template(qwen, tok):
    spans = word_spans(tok, SOURCE)
    assert [s.word for s in spans] == SOURCE.split()
    ids = token_ids(tok, SOURCE)
    squirrel = find_tokens(tok, SOURCE, "squirrel")
    assert len(squirrel) > 1  # the small BPE splits it
    assert qwen.decode([ids[p] for p in squirrel]) == " squirrel"
    assert qwen.decode([ids[p] for p in find_tokens(tok, SOURCE, "burger")]) == " burger"
    assert find_tokens(tok, SOURCE, "a#1") == [0]
    covered = {p for s in spans for p in s.positions}
    assert covered == set(range(len(ids) - tok.prompt_trail))  # every prompt token is a word's; the suffix none
    for special in ("system", "user", "assistant", "im_end"):
        with pytest.raises(PromptError):
            find_tokens(tok, SOURCE, special)


def test_a_prompt_too_long_for_the_text_length_is_the_usual_error(qwen):
    short = TemplateTokenizer(qwen, TEMPLATE, DROP, 12)
    token_ids(short, "a red circle")
    with pytest.raises(PromptTooLong, match="at most 12"):
        token_ids(short, SOURCE)


def test_prompts_that_join_the_template_are_refused(qwen):
    joining = TemplateTokenizer(qwen, "<|im_start|>user\nred ci{}<|im_end|>", 1, 64)
    token_ids(joining, " big circle")
    with pytest.raises(PromptError, match="join the template"):
        token_ids(joining, "rcle")  # "circle" is one token: half template, half prompt


def test_a_tokenizer_that_splits_the_prefix_into_fewer_tokens_than_dropped_is_refused(qwen):
    with pytest.raises(ValueError, match="drops"):
        TemplateTokenizer(qwen, TEMPLATE, DROP + 1, 64)


def test_replace_maps_words_and_the_suffix_one_to_one_and_no_padding(tok):
    target = "a painting of a cat eating a burger"
    m = replace_map(tok, SOURCE, target)
    n_s, n_t = len(token_ids(tok, SOURCE)), len(token_ids(tok, target))
    sq, cat = find_tokens(tok, SOURCE, "squirrel"), find_tokens(tok, target, "cat")
    assert len(cat) == 1 and len(sq) > 1
    assert (m.mapper[sq][:, cat] == 1 / len(cat)).all()
    shift = len(sq) - len(cat)
    for j in range(cat[0] + 1, n_t):  # later words and the template's suffix shift one to one
        assert m.mapper[j + shift, j] == 1
    assert m.mapper[:, n_t:].sum() == 0  # masked padding: nothing is moved onto it
    assert (m.mapper[:, :n_t].sum(0) > 0).all()  # every real target token takes some source token
    r = refine_map(tok, SOURCE, "a painting of a squirrel eating a big burger")
    assert r.mapper[:, len(token_ids(tok, "a painting of a squirrel eating a big burger")):].sum() == 0
    assert n_s > n_t
