"""Prompt -> token ids and the token positions of each word, for CLIP's BPE and T5's SentencePiece alike.

Positions are those of the padded sequence the text encoder reads: with CLIP position 0 is the start token and
the first word starts at 1; T5 has no start token, so its first word starts at 0 (`lead_tokens`). Both end with
one end token; a prompt read through a chat template (text/template.py) ends with the template's suffix
(`trail_tokens`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import regex

from p2p_cli.text.words import WORD_PATTERN, split_words

# CLIP's pre-tokenisation pieces (openai/CLIP simple_tokenizer.py); BPE never crosses a piece.
_CLIP_PIECE = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WORD = regex.compile(WORD_PATTERN)  # words.split_words' pattern, with spans
_OCCURRENCE = re.compile(r"^(.*)#\s*(\d+)\s*$", re.DOTALL)


class PromptError(ValueError):
    """A prompt that cannot be used as asked (too long, a missing word, mismatched words)."""


class PromptTooLong(PromptError):
    """The prompt has more tokens than the text encoder takes."""

    def __init__(self, n_tokens: int, max_len: int):
        self.n_tokens, self.max_len = n_tokens, max_len
        super().__init__(
            f"the prompt has {n_tokens} tokens with start and end; the model takes at most {max_len}: shorten it"
        )


class WordNotFound(PromptError):
    """A word (or phrase, or word#k) that the prompt does not have."""

    def __init__(self, word: str, prompt_words: list[str], occurrences: int = 0):
        self.word, self.prompt_words, self.occurrences = word, list(prompt_words), occurrences
        listed = ", ".join(prompt_words) if prompt_words else "(none)"
        if occurrences:
            base = word.rsplit("#", 1)[0].strip()
            times = "once" if occurrences == 1 else f"{occurrences} times"
            head = f'"{word}" does not exist: "{base}" occurs {times} in the prompt'
        else:
            head = f'"{word}" is not in the prompt'
        close = [] if occurrences else difflib.get_close_matches(word.lower(), prompt_words, n=1, cutoff=0.6)
        super().__init__(f"{head}; its words are: {listed}" + (f'; did you mean "{close[0]}"?' if close else ""))


@dataclass(frozen=True)
class WordSpan:
    """One word of a prompt and its token positions in the padded sequence (CLIP: 0 = start token)."""

    word: str  # as split_words gives it (lower case, no punctuation)
    index: int  # its number among the prompt's words, from 0
    occurrence: int  # 1 for the first time this word appears, 2 for the second...
    positions: tuple[int, ...]  # token positions, the first word starts at 1 (CLIP) or 0 (T5)


def lead_tokens(tokenizer: Any) -> int:
    """How many special tokens come before a prompt's first token: 1 for CLIP (<|startoftext|>), 0 for T5 and for
    a chat template whose prefix the pipeline drops."""
    if (lead := getattr(tokenizer, "prompt_lead", None)) is not None:
        return lead
    return len(tokenizer("", add_special_tokens=True, verbose=False).input_ids) - 1


def trail_tokens(tokenizer: Any) -> int:
    """How many tokens come after a prompt's last token: 1 (the end token), or a chat template's suffix."""
    return getattr(tokenizer, "prompt_trail", 1)


def token_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt with start and end tokens, no padding; PromptTooLong when they do not fit."""
    ids = list(tokenizer(prompt, add_special_tokens=True, truncation=False, verbose=False).input_ids)
    if len(ids) > tokenizer.model_max_length:
        raise PromptTooLong(len(ids), tokenizer.model_max_length)
    return ids


def _offsets_fast(tokenizer: Any, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and character spans of the prompt's tokens (without start/end) from a fast tokenizer."""
    enc = tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False, return_offsets_mapping=True)
    return list(enc.input_ids), [tuple(o) for o in enc.offset_mapping]


def _offsets_by_piece(tokenizer: Any, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and character spans by tokenizing CLIP's pre-tokenisation pieces one at a time."""
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    for m in _CLIP_PIECE.finditer(prompt):
        piece_ids = tokenizer(m.group(0), add_special_tokens=False, truncation=False, verbose=False).input_ids
        texts = [tokenizer.decode([i]).strip() for i in piece_ids]
        if "".join(texts) == m.group(0).lower():  # each token's own characters
            ends = [m.start() + sum(map(len, texts[: k + 1])) for k in range(len(texts))]
            spans += [(end - len(text), end) for text, end in zip(texts, ends)]
        else:  # a character split over tokens: they all share the piece's span
            spans += [m.span()] * len(piece_ids)
        ids += piece_ids
    return ids, spans


def _token_offsets(tokenizer: Any, prompt: str, ids: list[int]) -> list[tuple[int, int]]:
    """Character span in `prompt` of each token between the lead tokens and the end; checked against `ids`."""
    try:
        inner, spans = _offsets_fast(tokenizer, prompt)
    except NotImplementedError:  # a slow (pure Python) tokenizer has no offsets
        inner, spans = _offsets_by_piece(tokenizer, prompt)
    if inner != ids[lead_tokens(tokenizer) : len(ids) - trail_tokens(tokenizer)]:
        raise AssertionError(f"cannot locate the tokens of {prompt!r}: tokenizing it in pieces gives other ids")
    return spans


def word_spans(tokenizer: Any, prompt: str) -> list[WordSpan]:
    """One WordSpan per split_words() word, in order; a token goes to the word it overlaps most (a word that none
    has gets the tokens it overlaps: "^_^" is one token, which its three words share)."""
    ids = token_ids(tokenizer, prompt)
    offsets = _token_offsets(tokenizer, prompt, ids)
    lead = lead_tokens(tokenizer)
    words = [(m.group(0).lower(), m.start(), m.end()) for m in _WORD.finditer(prompt)]
    if [w for w, _, _ in words] != split_words(prompt):
        raise AssertionError(f"word pattern out of step with split_words for {prompt!r}")
    owned: list[list[int]] = [[] for _ in words]
    for pos, (start, end) in enumerate(offsets, start=lead):
        end = max(end, start + 1)  # an empty span still sits at a character
        overlaps = [min(end, e) - max(start, s) for _, s, e in words]
        best = max(range(len(words)), key=lambda k: (overlaps[k], -k), default=None)
        if best is not None and overlaps[best] > 0:
            owned[best].append(pos)  # otherwise punctuation: no word's token
    for k, (_, s, e) in enumerate(words):
        if not owned[k]:  # a token spanning several words ("^_^" is one token): each of them has it
            owned[k] = [pos for pos, (start, end) in enumerate(offsets, start=lead)
                        if min(max(end, start + 1), e) > max(start, s)]
        if not owned[k]:
            raise PromptError(f'"{words[k][0]}" gives no tokens (the tokenizer drops it): remove it from the prompt')
    spans, seen = [], {}
    for k, ((word, _, _), positions) in enumerate(zip(words, owned)):
        if positions != list(range(positions[0], positions[-1] + 1)):
            raise AssertionError(f"cannot map the tokens of {prompt!r} to its words (word {word!r}: {positions})")
        if spans and positions[0] < spans[-1].positions[0]:
            raise AssertionError(f"tokens of {prompt!r} out of order at word {word!r}")
        seen[word] = seen.get(word, 0) + 1
        spans.append(WordSpan(word, k, seen[word], tuple(positions)))
    return spans


def find_tokens(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Sorted token positions of a word, a phrase of consecutive words, or "word#k" (k-th occurrence, from 1)."""
    spans = word_spans(tokenizer, prompt)
    prompt_words = [s.word for s in spans]
    wanted, k = word.strip(), None
    if m := _OCCURRENCE.match(wanted):
        wanted, k = m.group(1), int(m.group(2))
        if k < 1:
            raise PromptError(f'"{word.strip()}": occurrences count from 1')
    phrase = split_words(wanted)
    n = len(phrase)
    starts = [i for i in range(len(spans) - n + 1) if n and prompt_words[i : i + n] == phrase]
    if not starts:
        raise WordNotFound(word.strip(), prompt_words)
    if k is not None:
        if k > len(starts):
            raise WordNotFound(word.strip(), prompt_words, occurrences=len(starts))
        starts = [starts[k - 1]]
    return sorted({p for i in starts for s in spans[i : i + n] for p in s.positions})
