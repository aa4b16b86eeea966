"""The one loop every many-recipe path runs: `p2p edit` (runs/edits.py), `p2p dataset` and `p2p.dataset`
(runs/datasets.py) and `p2p eval pie-bench` (pie_bench.py).

A run is a list of Work items, each writing one folder. In order: each process takes its share (launch.shard),
`--resume` marks the folders a finished run left (resume), the loop loads each model once (ModelCache, keyed by
the model's identity, dropped after the last work that needs it), runs each work through the caller's `do`, and
records a failure on the work without stopping the others; `settle` gathers what every process did, writes
OUT/index.jsonl and OUT/failures.jsonl on rank 0 and totals the tally."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_cli.runs.launch import gather
from p2p_cli.runs.records import (EXIT_OK, Tally, failed_row, is_manifest_line, recorded_digest, resume_state,
                                  write_failures, write_index)

Report = Callable[[BaseException, "str | None"], int]  # (error, where) -> exit code; the caller says it


@dataclass
class Work:
    """One item of a run and where it stands: its label (a recipe file, "path#k" for a manifest's k-th line, an
    entry id), the folder it writes and the fingerprint of what makes it (`--resume` compares it)."""

    label: str
    folder: Path
    digest: str | None = None
    index: int = 0  # its place in the whole run (every process's), for index.jsonl
    done: bool = False
    code: int = EXIT_OK
    kept: bool = False  # --resume (or a rerun) found its folder finished
    replace: bool = False  # its folder is there but damaged, or --overwrite: written again in its place
    pictures: int = 0
    error: BaseException | None = None

    @property
    def key(self) -> Hashable:
        """The model it runs on: works with one key share one loaded model (None: the run's one model)."""
        return None

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def cost(self) -> int:
        """What it costs to run, relative to the others (launch.shard balances it)."""
        return 1

    def fail(self, code: int, err: BaseException | None = None) -> None:
        self.done, self.code, self.error = True, code, err


def resume(works: list[Work], *, resume: bool, overwrite: bool, keep_finished: bool = False,
           record_file: str = "run.json", read: Callable[[dict], str | None] = recorded_digest) -> None:
    """Mark each work's folder: `kept` when a finished run of the same fingerprint is there (with --resume, or
    always with keep_finished: `p2p edit` keeps a rerun's finished folders), `replace` when it is there but lacks a
    file (--resume). With --overwrite neither: every folder is made again. Marking a kept work done is the caller's
    choice (PIE-Bench scores it again)."""
    for work in works:
        if overwrite:
            continue
        state = resume_state(work.folder, work.digest, record_file, read) if work.digest else None
        if state == "finished" and (resume or keep_finished):
            work.kept = True
        elif state == "damaged" and resume:
            work.replace = True


class ModelCache:
    """Each model loaded once, by `load(work)`, for every work of its key; dropped after the key's last work, so
    that the next model loads into freed memory."""

    def __init__(self, works: list[Work], load: Callable[[Work], Any] | None = None, model: Any = None):
        self.load = load
        self.models: dict[Hashable, Any] = {} if model is None else {None: model}
        self.left = Counter(work.key for work in works if not work.done)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.models

    def get(self, work: Work) -> Any:
        if work.key not in self.models:
            self.models[work.key] = self.load(work)
        return self.models[work.key]

    def release(self, work: Work) -> None:
        self.left[work.key] -= 1
        if self.left[work.key] <= 0 and self.load is not None:
            self.models.pop(work.key, None)


def run(works: list[Work], do: Callable[[list[Work], Any], None], *, models: ModelCache, report: Report,
        loaded: Callable[[Work, Any], None] | None = None, group: Callable[[Work], list[Work]] | None = None,
        on_done: Callable[[Work], None] | None = None) -> None:
    """Run every work not done, in order. A model that fails to load fails every work of its key (one report);
    loaded(work, model) hears each newly loaded model (to check every recipe on it before any sampling). group(work)
    names the works that run with it in one batch (itself first). do(works, model) runs them and marks them done;
    an error it raises fails those of them not done (report(err, label)), and the run goes on. A closed stdout
    (BrokenPipeError) and interrupts stop the run."""
    for work in works:
        if work.done:
            continue
        if work.key not in models:
            try:
                model = models.get(work)
            except BrokenPipeError:
                raise
            except Exception as err:  # every work of this model fails the same way
                code = report(err, None)
                for other in works:
                    if other.key == work.key and not other.done:
                        other.fail(code, err)
                        models.release(other)
                        if on_done is not None:
                            on_done(other)
                continue
            if loaded is not None:
                loaded(work, model)
        model = models.get(work)
        members = group(work) if group is not None and not work.done else [work]
        try:
            if not work.done:
                do(members, model)
        except BrokenPipeError:
            raise
        except Exception as err:  # these works fail, the others go on (interrupts are not Exceptions)
            for member in members:
                if not member.done:
                    member.fail(report(err, member.label), err)
        for member in members:
            models.release(member)
            if on_done is not None:
                on_done(member)


@dataclass
class Settled:
    """The end of a run: this process's tally, the launch's total, its failure lines and every process's
    `extra` (every process has them; rank 0 wrote the files)."""

    tally: Tally
    total: Tally | None = None
    failures: list[dict] = field(default_factory=list)
    extras: list[Any] = field(default_factory=list)


def settle(works: list[Work], out: Path, *, rank: int, world: int, started: float, invalid: list[dict] = (),
           index: bool = False, extra: Any = None, error_text: Callable[[BaseException], str] | None = None) -> Settled:
    """Gather what every process did (each calls it once, when its works are done): rank 0 writes OUT/index.jsonl
    (index, under a launcher), OUT/failures.jsonl (the manifest lines that were `invalid`, every process lists the
    same, and those that failed) and returns the total tally. error_text: failures.jsonl gives each failure's
    error."""
    tally = Tally(done=sum(1 for w in works if w.code == EXIT_OK and w.done and not w.kept),
                  skipped=sum(w.kept for w in works), failed=sum(1 for w in works if w.code != EXIT_OK),
                  pictures=sum(w.pictures for w in works), seconds=time.perf_counter() - started)
    entries = [{"index": w.index, "name": w.name, "out": str(w.folder), "rank": rank,
                "status": "kept" if w.kept else "ok" if w.code == EXIT_OK else "failed", "exit": w.code}
               for w in works] if index else []
    failed = [failed_row(w.label, w.code, None if error_text is None or w.error is None else error_text(w.error))
              for w in works if is_manifest_line(w.label) and w.code != EXIT_OK]
    parts = gather({"entries": entries, "failures": failed, "tally": tally, "extra": extra}, world)
    settled = Settled(tally, extras=[part["extra"] for part in parts])
    settled.failures = list(invalid) + [f for part in parts for f in part["failures"]]
    settled.total = Tally.total([part["tally"] for part in parts])
    settled.total.failed += len(invalid)
    if rank == 0:
        if index and world > 1:
            write_index([e for part in parts for e in part["entries"]], out)
        if settled.failures:
            write_failures(out, settled.failures)
    return settled
