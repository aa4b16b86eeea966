"""An edit dataset on disk, in the layout the Hugging Face `datasets` library loads as it is (its `imagefolder`
builder, 3.4 or later: a metadata column named `<column>_file_name` is an image column):

    OUT/metadata.jsonl                one line per kept sample: input_file_name, edited_file_name, the captions,
                                      the edit's type and windows, seed, pair and sample numbers, every score
    OUT/pairs/000003/input-1.png      the pictures of pair 3's kept samples (the source row, the edit)
    OUT/pairs/000003/edited-1.png
    OUT/pairs/000003/pair.json        every sample of the pair (kept or not) with its seed, windows and scores

Each pair's folder appears whole or not at all (files/outputs.atomic_folder), and pair.json records what made it
(input_sha256), so a resumed run keeps the pairs it finished. metadata.jsonl is made from the pair folders once
every pair is done, written whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from p2p_cli.files.outputs import atomic_folder, intact, read_record, write_record

PAIRS = "pairs"
RECORD = "pair.json"
METADATA = "metadata.jsonl"


def pair_folder(out: str | Path, index: int) -> Path:
    return Path(out) / PAIRS / f"{index:06d}"


def finished_pair(folder: Path, digest: str) -> dict | None:
    """The pair's record when `folder` holds a finished run of exactly this pair and these settings (every file
    it lists there, of its size), else None."""
    record = _same_pair(folder, digest)
    return record if record is not None and intact(folder, record) else None


def _same_pair(folder: Path, digest: str) -> dict | None:
    record = read_record(folder, RECORD)
    return record if record is not None and record.get("input_sha256") == digest else None


def write_pair(folder: Path, record: dict, pictures: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a pair's folder whole: its pictures (file name -> (3, H, W) tensor in [0, 1]) and pair.json."""
    from p2p_cli.render.images import save_png

    with atomic_folder(folder, overwrite) as tmp:
        for name, picture in pictures.items():
            save_png(picture, tmp / name)
        write_record(tmp, RECORD, record)
    return folder


def metadata_rows(record: dict, out: str | Path) -> list[dict]:
    """The dataset's rows for one pair's record: its kept samples, every key on every row (as a table needs)."""
    base = f"{PAIRS}/{record['index']:06d}"
    rows = []
    for sample in record["samples"]:
        if not sample["kept"]:
            continue
        rows.append({"input_file_name": f"{base}/{sample['input']}", "edited_file_name": f"{base}/{sample['edited']}",
                     "source": record["source"], "target": record["target"], "edit_type": sample["type"],
                     "cross_window": sample["cross_window"], "self_window": sample["self_window"],
                     "seed": sample["seed"], "pair": record["index"], "sample": sample["sample"], **sample["scores"]})
    return rows


def assemble(out: str | Path, pairs: list[tuple[int, str]]) -> tuple[Path, int]:
    """OUT/metadata.jsonl from the finished folders of `pairs` ((index, input_sha256), in order), written whole;
    returns its path and the number of rows. A pair without a finished folder adds nothing."""
    rows = []
    for index, digest in sorted(pairs):
        record = finished_pair(pair_folder(out, index), digest)
        if record is not None:
            rows += metadata_rows(record, out)
    path = Path(out) / METADATA
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{METADATA}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)
    return path, len(rows)
