"""Splitting prompts into words the way users name them in recipes."""

from __future__ import annotations

import re

_WORD = re.compile(r"[\w'’-]+", re.UNICODE)


def split_words(prompt: str) -> list[str]:
    """Lower-cased words of a prompt; punctuation next to a word ("bicycle,") is not part of it."""
    return [m.group(0).lower() for m in _WORD.finditer(prompt)]


def same_words(a: str, b: str) -> bool:
    """True when two prompts have the same words (case and punctuation ignored)."""
    return split_words(a) == split_words(b)
