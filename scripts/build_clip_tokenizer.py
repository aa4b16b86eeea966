"""Derive CLIP's BPE tokenizer files (vocab.json, merges.txt) from OpenAI's bpe_simple_vocab_16e6.txt.gz.

The .gz ships inside the PyPI package clip-anytorch (MIT, (c) 2021 OpenAI). Fetch it once, without
its dependencies, and run this script; the derived files live in p2p_cli/assets/clip_tokenizer/:

    pip download --no-deps clip-anytorch -d /tmp/clip && unzip -o /tmp/clip/*.whl -d /tmp/clip
    python scripts/build_clip_tokenizer.py /tmp/clip/clip/bpe_simple_vocab_16e6.txt.gz

Vocabulary order: the 256 byte symbols, the same with "</w>", one entry per merge, then
<|startoftext|> and <|endoftext|> (49408 entries).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "p2p_cli" / "assets" / "clip_tokenizer"
N_MERGES = 49152 - 256 - 2


def byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: printable bytes map to themselves, the rest to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    ordered = printable + [b for b in range(256) if b not in printable]
    return [table[b] for b in ordered]


def main(gz_path: str) -> None:
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    print(f"wrote {OUT} ({len(vocab)} tokens, {len(merges)} merges)")


if __name__ == "__main__":
    main(sys.argv[1])
