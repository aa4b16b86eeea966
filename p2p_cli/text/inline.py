"""Inline edits: one line of text that expands to a recipe, for quick work and shell loops.

    a painting of a [squirrel->lion] eating a burger           replace: source "squirrel", target "lion"
    a painting of a [squirrel->lion|tiger] eating a burger     two edits, one per alternative
    a house [->in winter]                                      refine: words added
    a [big->] house                                            refine: words removed
    a (smiling:5) bunny doll                                   reweight "smiling" x5 (negative factors too)
    a (fluffy:2) [cat->dog] on a mat                           replace, with "fluffy" reweighted in the target
    a [cat->(dog:2)] on a mat                                  replace, with the new word reweighted

The syntax cannot be mistaken for plain text: an edit is square brackets holding "->", a weight is
parentheses holding a word, a colon and a number, as web UIs write weights (mapped here to Prompt-to-Prompt's
attention reweighting, which also takes negative factors). Any other bracket is an error, so a typo is
never sent to the model as literal text.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_TOKEN = re.compile(r"\[([^\[\]]*)\]|\(([^()\[\]:]+):\s*(" + _NUMBER + r")\s*\)")
_WEIGHT = re.compile(r"^\(([^()\[\]:]+):\s*(" + _NUMBER + r")\s*\)$")


class InlineError(ValueError):
    """An inline edit that cannot be read; the message shows where and the syntax."""


HELP = ('write edits as [old->new] (several targets: [old->a|b]; add words: [->new]; remove: [old->]) and'
        ' weights as (word:1.5)')


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def is_inline(text: str) -> bool:
    """Whether a prompt uses the inline syntax at all."""
    return bool(re.search(r"\[[^\[\]]*->[^\[\]]*\]|\([^()\[\]:]+:\s*[-+]?(?:\d+\.?\d*|\.\d+)\s*\)", text))


def expand(text: str, name: str | None = None) -> dict[str, Any]:
    """The recipe (a dict, as a YAML file would give) an inline prompt stands for; InlineError if malformed."""
    if not text.strip():
        raise InlineError("the prompt is empty")
    pieces: list[tuple[str, Any]] = []  # ("text", str) | ("swap", (old, [new...])) | ("weight", (word, factor))
    pos = 0
    for m in _TOKEN.finditer(text):
        before = text[pos:m.start()]
        _check_plain(before, text, pos)
        pieces.append(("text", before))
        if m.group(1) is not None:
            inner = m.group(1)
            if "->" not in inner:
                raise InlineError(f"[{inner}] at character {m.start() + 1} is not an edit: {HELP}")
            old, new = inner.split("->", 1)
            if "->" in new:
                raise InlineError(f"[{inner}] at character {m.start() + 1} has two arrows: {HELP}")
            alternatives, alt_weights = [], []
            for alt in (_clean(a) for a in new.split("|")):
                w = _WEIGHT.match(alt)
                alternatives.append(_clean(w.group(1)) if w else alt)
                alt_weights.append({_clean(w.group(1)): float(w.group(2))} if w else {})
                if not w and re.search(r"[()]", alt):
                    raise InlineError(f"[{inner}] at character {m.start() + 1}: write a weighted word as"
                                      f" [old->(new:2)]; {HELP}")
            if re.search(r"[()]", old):
                raise InlineError(f"[{inner}] at character {m.start() + 1}: weights go on the new words; {HELP}")
            if not _clean(old) and not any(alternatives):
                raise InlineError(f"[{inner}] at character {m.start() + 1} changes nothing: {HELP}")
            twice = [a for k, a in enumerate(alternatives) if a in alternatives[:k]]
            if twice:
                what = f"'{twice[0]}'" if twice[0] else "the removal"
                raise InlineError(f"[{inner}] at character {m.start() + 1} offers {what} twice: each alternative"
                                  f" makes an edit, so give different ones; {HELP}")
            pieces.append(("swap", (_clean(old), alternatives, alt_weights)))
        else:
            word, factor = _clean(m.group(2)), float(m.group(3))
            if "->" in word:  # (red->blue:2): an arrow outside [ ], not a weighted word
                raise InlineError(f"'->' at character {m.start() + m.group(2).index('->') + 2} is outside [ ]: {HELP}")
            if not word:
                raise InlineError(f"a weight at character {m.start() + 1} names no word: {HELP}")
            pieces.append(("weight", (word, factor)))
        pos = m.end()
    _check_plain(text[pos:], text, pos)
    pieces.append(("text", text[pos:]))

    swaps = [p for kind, p in pieces if kind == "swap"]
    counts = {len(alts) for _, alts, _ in swaps if len(alts) > 1}
    if len(counts) > 1:
        raise InlineError(f"edits offer different numbers of alternatives ({', '.join(map(str, sorted(counts)))});"
                          " give each [old->a|b] the same number, or one")
    n_targets = counts.pop() if counts else 1
    weights = {w: f for kind, (w, f) in ((k, p) for k, p in pieces if k == "weight")}
    if not swaps and not weights:
        raise InlineError(f"no inline edit in the prompt: {HELP}")

    def render(which: int | None) -> str:
        out = []
        for kind, p in pieces:
            if kind == "text":
                out.append(p)
            elif kind == "weight":
                out.append(p[0])
            else:
                old, alts, _ = p
                out.append(old if which is None else alts[which if len(alts) > 1 else 0])
        return _clean(" ".join(x.strip() for x in out if x.strip()))

    source = render(None)
    if not source:
        raise InlineError("the source prompt is empty: put the source's words outside or before the ->")
    edits = []
    for k in range(n_targets if swaps else 1):
        target = render(k) if swaps else source
        if not target:
            raise InlineError("a target prompt is empty")
        edit: dict[str, Any] = {"target": target}
        factors = dict(weights)
        if swaps:
            same_count = all(old and all(alts) and len(old.split()) == len(
                (alts[k] if len(alts) > 1 else alts[0]).split()) for old, alts, _ in swaps)
            edit["type"] = "replace" if same_count else "refine"
            for _, alts, alt_weights in swaps:
                factors.update(alt_weights[k if len(alts) > 1 else 0])
        else:
            edit["type"] = "reweight"
        if factors:
            edit["reweight"] = factors
        edits.append(edit)
    words = re.findall(r"[\w'-]+", source)
    default = "-".join(words[:8])[:48].strip("-").lower() or "inline"
    return {"name": name or default, "source": source, "edits": edits}


def _check_plain(part: str, text: str, offset: int) -> None:
    """Text between inline pieces: a stray bracket or arrow is an error, not literal text."""
    for i, ch in enumerate(part):
        if ch in "[]":
            raise InlineError(f"unmatched or malformed '{ch}' at character {offset + i + 1}: {HELP}")
    if "->" in part:
        raise InlineError(f"'->' at character {offset + part.index('->') + 1} is outside [ ]: {HELP}")
    m = re.search(r"\([^()\s]+\s*:[^()]*\)", part)
    if m:
        raise InlineError(f"a weight at character {offset + m.start() + 1} is malformed: {HELP}")
