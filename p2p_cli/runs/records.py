"""What a run leaves beside its folders: the exit codes, `--resume`'s check of a finished folder, OUT/index.jsonl,
OUT/failures.jsonl and the end-of-run tally. Every many-recipe path (`p2p edit`, `p2p dataset`, `p2p eval
pie-bench`) writes them the same way."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2  # a run's codes: 2 invalid input, 1 a failure while running


class UsageError(ValueError):
    """A request that cannot work as a whole (clashing recipes, two stdin recipes, an unwritable --out): exit 2,
    before any model loads."""


class InvalidRecipes(Exception):
    """Recipes that cannot run, each already reported (its RecipeError in `errors`): exit 2, before any model
    loads."""

    def __init__(self, errors: list):
        super().__init__(f"{len(errors)} invalid recipe(s)")
        self.errors = errors


def recorded_digest(record: dict) -> str | None:
    """The fingerprint a record holds (`input_sha256`: run.json of p2p edit, a dataset pair's pair.json)."""
    return record.get("input_sha256")


def resume_state(folder: Path, digest: str, record_file: str = "run.json",
                 read: Callable[[dict], str | None] = recorded_digest) -> str | None:
    """"finished" (the folder's record holds this fingerprint and every file it lists is there, of its size),
    "damaged" (this work's folder with a file missing or changed: --resume makes it again in its place) or None
    (another work's folder, an unreadable record, or none)."""
    from p2p_cli.files.outputs import intact, read_record

    record = read_record(folder, record_file)
    if record is None or read(record) != digest:
        return None
    return "finished" if intact(folder, record) else "damaged"



def write_lines(path: Path, rows: list[dict]) -> Path:
    """A JSON-lines file written whole (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_index(entries: list[dict], out: Path) -> Path:
    """OUT/index.jsonl: one line per recipe, in command-line order (entries carry their "index")."""
    return write_lines(Path(out) / "index.jsonl", sorted(entries, key=lambda e: e["index"]))


def line_number(label: str) -> int:
    """The line of "path#k" (a manifest's k-th recipe, a pairs file's k-th line)."""
    return int(label.rsplit("#", 1)[1])


def is_manifest_line(label: str) -> bool:
    """Whether a label names one item of a file of several ("path#k": a YAML stream or JSON lines)."""
    head, sep, tail = label.rpartition("#")
    return bool(sep and head and tail.isdigit())


def invalid_row(err) -> dict:
    """failures.jsonl's line for a manifest line that could not run (a RecipeError whose source is "path#k")."""
    return {"recipe": err.source, "line": line_number(err.source), "status": "invalid", "exit": EXIT_INVALID,
            "problems": err.problems}


def failed_row(label: str, code: int = EXIT_FAILED, error: str | None = None) -> dict:
    """failures.jsonl's line for a manifest line that failed while running."""
    row = {"recipe": label, "line": line_number(label), "status": "failed", "exit": code}
    return row if error is None else {**row, "error": error}


def write_failures(out: Path, failures: list[dict]) -> Path:
    """OUT/failures.jsonl: one line per manifest line that was invalid or failed, in file order."""
    return write_lines(Path(out) / "failures.jsonl", sorted(failures, key=lambda f: (f["recipe"].rsplit("#", 1)[0],
                                                                                     f.get("line", 0))))


@dataclass
class Tally:
    """What one process did: items done, kept (--resume) and failed, pictures written, seconds of work."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    pictures: int = 0
    seconds: float = 0.0

    @staticmethod
    def total(parts: list[Tally]) -> Tally:
        """The launch's tally: sums, and the longest process's seconds (they run side by side)."""
        return Tally(sum(p.done for p in parts), sum(p.skipped for p in parts), sum(p.failed for p in parts),
                     sum(p.pictures for p in parts), max((p.seconds for p in parts), default=0.0))

    def line(self) -> str:
        """"3 done, 1 skipped (finished earlier), 1 failed; 9 pictures in 4.2 s, 2.1 pictures/s"."""
        rate = self.pictures / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.done} done, {self.skipped} skipped (finished earlier), {self.failed} failed; {self.pictures}"
                f" picture{'s' if self.pictures != 1 else ''} in {self.seconds:.1f} s, {rate:.2f} pictures/s")
