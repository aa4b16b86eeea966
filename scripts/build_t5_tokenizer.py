"""Build the small T5-style (SentencePiece Unigram) tokenizer the tests use, offline, with `tokenizers`.

SD3 and FLUX read T5's SentencePiece tokens; the real T5 vocabulary cannot be downloaded here, so tests use a
Unigram model of the same kind (Metaspace pre-tokenizer, "</s>" appended, "<pad>" padding, no start token)
scored on a few hundred captions (the `tokenizers` trainer keeps only characters on a corpus this small, so
the pieces' log-probabilities are set from word counts here). It splits words differently from CLIP's BPE (whole words, "▁" prefixes,
pieces), which is what the word -> token mapping must handle.

    python scripts/build_t5_tokenizer.py   # writes lab/assets/t5_tokenizer/
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

OUT = Path(__file__).resolve().parent.parent / "lab" / "assets" / "t5_tokenizer"

SIZES = ["small", "big", "tiny", "large"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "brown"]
SHAPES = ["circle", "square", "triangle", "cat", "dog", "house", "car", "tree", "bird", "flower"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the center", "in the top left"]
EXTRA = ["a photo of", "a painting of", "sitting on a", "next to a", "with a", "in the snow", "at sunset",
         "watercolor", "oil painting", "background", "pizza", "mushrooms", "lemon", "cake", "bicycle", "river"]


def captions() -> list[str]:
    lines = [f"a {s} {c} {sh} {p} on a {b} background"
             for s, c, sh, p, b in itertools.islice(itertools.product(SIZES, COLOURS, SHAPES, PLACES, COLOURS[6:8]),
                                                     0, None, 7)]
    lines += [f"{e} a {c} {sh}" for e, c, sh in itertools.product(EXTRA, COLOURS, SHAPES)]
    return lines


def build() -> Tokenizer:
    """A Unigram model whose pieces are the captions' words ("▁red"), a few endings and every single character,
    scored by log frequency (whole words most likely), so known words are one piece and others split."""
    words = Counter(w for line in captions() for w in line.lower().split())
    total = sum(words.values())
    pieces = {f"▁{w}": math.log(n / total) for w, n in words.items()}
    for ending in ("s", "es", "ing", "ed", "er", "y", "ly"):
        pieces.setdefault(ending, math.log(1 / total) - 1)
    for char in "▁abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;()\"&/#":
        pieces.setdefault(char, math.log(1 / total) - 4)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + sorted(pieces.items(), key=lambda kv: -kv[1])
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return tok


def main() -> None:
    from transformers import T5TokenizerFast

    fast = T5TokenizerFast(tokenizer_object=build(), eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)
    print(OUT, len(fast))


if __name__ == "__main__":
    main()
