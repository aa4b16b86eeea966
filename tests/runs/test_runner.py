"""The one runner (p2p_cli/runs/runner.py), without a model: what `p2p edit`, `p2p dataset` and PIE-Bench rely on
from it. Each model loaded once and dropped after its last work; a failure stays with its work; --resume keeps
finished folders and makes damaged ones again; failures.jsonl and the tally count what happened."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2p_cli.files.outputs import SIZES
from p2p_cli.runs import runner
from p2p_cli.runs.records import EXIT_FAILED, EXIT_INVALID, EXIT_OK, Tally


@dataclass
class Keyed(runner.Work):
    model: str = "a"

    @property
    def key(self):
        return self.model


def works(tmp_path: Path, models: str) -> list[Keyed]:
    return [Keyed(f"m.jsonl#{i + 1}", tmp_path / f"w{i}", index=i, model=m) for i, m in enumerate(models)]


class Loads:
    """A loader that records each load and which models are held when it loads."""

    def __init__(self, fail: set[str] = frozenset()):
        self.loads, self.fail, self.cache = [], fail, None

    def __call__(self, work):
        if work.key in self.fail:
            raise OSError(f"no weights for {work.key}")
        self.loads.append((work.key, sorted(self.cache.models)))
        return f"model {work.key}"


def run(items, loads, do=None, **kwargs):
    reports = []
    cache = runner.ModelCache(items, loads)
    loads.cache = cache

    def report(err, where):
        reports.append((type(err).__name__, where))
        return EXIT_FAILED

    def default(members, model):
        for work in members:
            assert model == f"model {work.key}"
            work.done, work.pictures = True, 2

    runner.run(items, do or default, models=cache, report=report, **kwargs)
    return reports


def test_each_model_loads_once_and_is_dropped_after_its_last_work(tmp_path):
    items, loads = works(tmp_path, "aabba"), Loads()
    run(items, loads)
    # "a" is needed again after "b": it stays loaded until its last work; "b" loads beside it, then is dropped
    assert loads.loads == [("a", []), ("b", ["a"])]
    assert all(w.done and w.code == EXIT_OK and w.pictures == 2 for w in items)
    assert loads.cache.models == {}


def test_a_model_that_fails_to_load_fails_its_works_alone_with_one_report(tmp_path):
    items, loads = works(tmp_path, "abab"), Loads(fail={"a"})
    reports = run(items, loads)
    assert reports == [("OSError", None)]
    assert [w.code for w in items] == [EXIT_FAILED, EXIT_OK, EXIT_FAILED, EXIT_OK]
    assert isinstance(items[0].error, OSError)


def test_a_failing_work_fails_alone_and_names_itself(tmp_path):
    items = works(tmp_path, "aaa")

    def do(members, model):
        for work in members:
            if work.index == 1:
                raise ValueError("diverged")
            work.done = True

    reports = run(items, Loads(), do)
    assert reports == [("ValueError", "m.jsonl#2")]
    assert [w.code for w in items] == [EXIT_OK, EXIT_FAILED, EXIT_OK]


def test_a_closed_stdout_stops_the_run(tmp_path):
    items = works(tmp_path, "aa")

    def do(members, model):
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        run(items, Loads(), do)
    assert not items[1].done


def test_a_group_runs_in_one_call_and_each_member_is_heard(tmp_path):
    items, calls, heard = works(tmp_path, "aaa"), [], []

    def do(members, model):
        calls.append([w.index for w in members])
        for work in members:
            work.done = True

    run(items, Loads(), do, group=lambda work: items[work.index:work.index + 2],
        on_done=lambda work: heard.append(work.index))
    assert calls == [[0, 1], [2]] and heard == [0, 1, 2]


def test_a_model_problem_found_on_loading_stops_that_work_before_it_runs(tmp_path):
    items, ran = works(tmp_path, "aa"), []

    def loaded(work, model):
        items[1].fail(EXIT_INVALID)

    def do(members, model):
        ran.extend(w.index for w in members)
        for work in members:
            work.done = True

    run(items, Loads(), do, loaded=loaded)
    assert ran == [0] and items[1].code == EXIT_INVALID


def finished_folder(folder: Path, digest: str, picture: bytes = b"png") -> None:
    folder.mkdir(parents=True)
    (folder / "source.png").write_bytes(picture)
    (folder / "run.json").write_text(json.dumps({"input_sha256": digest, SIZES: {"source.png": len(picture)}}))


def test_resume_keeps_finished_folders_and_replaces_damaged_ones(tmp_path):
    items = works(tmp_path, "aaaa")
    for work, digest in zip(items, ["d0", "d1", "d2", "d3"]):
        work.digest = digest
    finished_folder(items[0].folder, "d0")
    finished_folder(items[1].folder, "d1")
    (items[1].folder / "source.png").write_bytes(b"p")  # lost bytes: damaged
    finished_folder(items[2].folder, "another recipe")  # someone else's folder: neither
    runner.resume(items, resume=True, overwrite=False)
    assert [(w.kept, w.replace) for w in items] == [(True, False), (False, True), (False, False), (False, False)]

    again = works(tmp_path, "aaaa")
    for work, digest in zip(again, ["d0", "d1", "d2", "d3"]):
        work.digest = digest
    runner.resume(again, resume=False, overwrite=False)  # without --resume: nothing is kept
    assert not any(w.kept or w.replace for w in again)
    runner.resume(again, resume=False, overwrite=False, keep_finished=True)  # `p2p edit`'s rerun keeps finished
    assert [w.kept for w in again] == [True, False, False, False]


def test_settle_writes_failures_and_counts_what_happened(tmp_path):
    items = works(tmp_path, "aaa")
    items[0].done, items[0].pictures = True, 3
    items[1].fail(EXIT_FAILED, ValueError("diverged"))
    items[2].done = items[2].kept = True
    invalid = [{"recipe": "m.jsonl#4", "line": 4, "status": "invalid", "exit": EXIT_INVALID, "problems": ["x"]}]
    settled = runner.settle(items, tmp_path, rank=0, world=1, started=0.0, invalid=invalid, error_text=str)
    rows = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert rows == [{"recipe": "m.jsonl#2", "line": 2, "status": "failed", "exit": EXIT_FAILED, "error": "diverged"},
                    invalid[0]]
    assert (settled.total.done, settled.total.skipped, settled.total.failed, settled.total.pictures) == (1, 1, 2, 3)
    assert isinstance(settled.tally, Tally) and not (tmp_path / "index.jsonl").exists()  # one process: no index
