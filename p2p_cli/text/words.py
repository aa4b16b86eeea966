"""Splitting prompts into words the way users name them in recipes."""

from __future__ import annotations

import regex

# A word is a run of letters, digits, marks, "_", apostrophes and hyphens, or one character that is none of these
# nor a space, punctuation or a control character (an emoji, a symbol such as "$" or "+") with what joins it into
# one visible character (a grapheme cluster: variation selectors, skin tones, zero-width joiners, flags): every
# character the tokenizer turns into tokens, except punctuation, belongs to a word that can be named.
WORD_PATTERN = r"[\w'’-]+|(?=[^\s\p{P}\p{L}\p{N}\p{M}\p{C}_'’-])\X"
_WORD = regex.compile(WORD_PATTERN)


def split_words(prompt: str) -> list[str]:
    """Lower-cased words of a prompt; punctuation next to a word ("bicycle,") is not part of it; an emoji or
    another symbol ("🐱", "$") is a word of its own."""
    return [m.group(0).lower() for m in _WORD.finditer(prompt)]


def same_words(a: str, b: str) -> bool:
    """True when two prompts have the same words (case and punctuation ignored)."""
    return split_words(a) == split_words(b)
