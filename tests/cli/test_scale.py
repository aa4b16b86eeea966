"""Many recipes: each launched process takes a balanced, deterministic share; --resume keeps finished folders;
under torchrun, rank 0 writes one index.jsonl of everything done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


SOURCE = "a painting of a squirrel eating a burger"


def write(tmp_path: Path, name: str, **top) -> Path:
    data = {"name": name, "source": SOURCE, "steps": 2, "size": 128,
            "edits": [{"target": "a painting of a lion eating a burger"}], **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_resume_keeps_finished_folders_and_runs_the_rest(cli, tiny_model_dir, tmp_path):
    a, b = write(tmp_path, "a"), write(tmp_path, "b")
    out = tmp_path / "out"
    assert cli("edit", a, b, "--model", tiny_model_dir, "--out", out).exit_code == 0
    before = (out / "a" / "grid.png").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "b")  # as if the run had died before b
    again = cli("edit", a, b, "--model", tiny_model_dir, "--out", out, "--resume")
    assert again.exit_code == 0, again.output
    assert f"kept {out / 'a'}/ (finished earlier: --resume)" in again.stdout
    assert (out / "b" / "run.json").exists() and (out / "a" / "grid.png").stat().st_mtime_ns == before
    changed = write(tmp_path, "a", seed=5)  # another recipe under the same name is not "finished"
    third = cli("edit", changed, "--model", tiny_model_dir, "--out", out, "--resume")
    assert third.exit_code == 1 and "already exists" in third.stderr


def test_torchrun_splits_the_recipes_and_rank_0_writes_the_index(cli, tiny_model_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    paths = [str(write(tmp_path, name, steps=steps)) for name, steps in (("x", 2), ("y", 3), ("z", 2))]
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", "-m", "p2p_cli", "edit",
                           *paths, "--model", str(tiny_model_dir), "--out", str(out), "--quiet", "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [e["name"] for e in index] == ["x", "y", "z"] and {e["status"] for e in index} == {"ok"}
    assert {e["rank"] for e in index} == {0, 1}  # both processes worked
    alone = tmp_path / "alone"  # the same recipes in one process (this one), on as many threads: the same pixels
    assert cli("edit", *paths, "--model", tiny_model_dir, "--out", alone, "--quiet", "--threads", "1").exit_code == 0
    from PIL import Image

    for name in "xyz":
        assert (out / name / "run.json").exists()
        for picture in ("source.png", "edit-1.png"):
            assert Image.open(out / name / picture).tobytes() == Image.open(alone / name / picture).tobytes()


def test_a_manifest_runs_its_good_lines_and_lists_the_bad_ones(cli, tiny_model_dir, tmp_path):
    line = {"source": SOURCE, "steps": 2, "size": 128, "edits": [{"target": "a painting of a lion eating a burger"}]}
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text("\n".join(json.dumps(d) for d in [
        {**line, "name": "one"},
        {**line, "name": "two", "edits": [{"target": "a painting of a lion eating a burger", "cross_replace": 3}]},
        {**line, "name": "three"},
    ]) + "\n")
    out = tmp_path / "out"
    result = cli("edit", manifest, "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert f"error: {manifest}#2: invalid recipe" in result.stderr
    assert (out / "one" / "run.json").exists() and (out / "three" / "run.json").exists()
    assert not (out / "two").exists()
    [failure] = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["recipe"] == f"{manifest}#2" and failure["line"] == 2 and failure["status"] == "invalid"
    assert any("cross_replace" in p for p in failure["problems"])
    single = write(tmp_path, "bad", steps=0)  # one recipe per file: invalid input stops everything, exit 2
    assert cli("edit", single, "--model", tiny_model_dir, "--out", tmp_path / "o2").exit_code == 2


def test_manifest_lines_need_a_name_of_their_own(cli, tiny_model_dir, tmp_path):
    line = {"source": SOURCE, "steps": 2, "size": 128, "edits": [{"target": "a painting of a lion eating a burger"}]}
    manifest = tmp_path / "many.jsonl"
    manifest.write_text("\n".join([json.dumps({**line, "name": "one"}), json.dumps(line), "",
                                   json.dumps({**line, "name": "one", "seed": 3}), json.dumps({**line, "name": "two"})])
                        + "\n")
    other = write(tmp_path, "two")  # a file of its own before the manifest takes the name first
    out = tmp_path / "out"
    result = cli("edit", other, manifest, "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert f"error: {manifest}#2: invalid recipe" in result.stderr
    assert 'name: required in a file of several recipes' in result.stderr and '"name": "many-2"' in result.stderr
    assert f"{manifest}#4: invalid recipe" in result.stderr and f"'one' is also the name of {manifest}#1" in result.stderr
    assert f"{manifest}#5: invalid recipe" in result.stderr and f"'two' is also the name of {other}" in result.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["one", "two"]
    assert json.loads((out / "one" / "run.json").read_text())["recipe"]["seed"] == 8888  # the first "one" ran
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["line"], f["status"]) for f in failures] == [(2, "invalid"), (4, "invalid"), (5, "invalid")]


@pytest.mark.slow  # long; make test-slow
def test_under_torchrun_every_processs_failures_reach_failures_jsonl(tiny_model_dir, tmp_path):
    """A manifest's line that fails on rank 1 (its folder is taken) and an invalid line: rank 0 writes both to
    failures.jsonl, the invalid line is reported once, and each process and the whole launch end with a tally."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    line = {"source": SOURCE, "steps": 1, "size": 128, "edits": [{"target": "a painting of a lion eating a burger"}]}
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text("\n".join(json.dumps(d) for d in [
        {**line, "name": "y", "steps": 2}, {**line, "name": "x"}, {**line, "name": "z"}, {**line, "steps": 0},
    ]) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "z").write_text("not a folder")  # z fails: a file is in its place (shard: y on rank 0, x, z on rank 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29518", "-m", "p2p_cli", "edit",
                           str(manifest), "--model", str(tiny_model_dir), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode != 0
    index = {e["name"]: e for e in map(json.loads, (out / "index.jsonl").read_text().splitlines())}
    assert index["z"]["rank"] == 1 and index["z"]["status"] == "failed" and index["x"]["status"] == "ok"
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["line"], f["status"]) for f in failures] == [(3, "failed"), (4, "invalid")]
    assert done.stderr.count(f"error: {manifest}#4: invalid recipe") == 1
    assert "process 1 of 2: 2/2 recipes (1 failed), 2 pictures, " in done.stderr  # a line per recipe, no live bar
    assert "process 1 of 2: 1 done, 0 skipped (finished earlier), 1 failed; 2 pictures in " in done.stderr
    assert "all 2 processes: 2 done, 0 skipped (finished earlier), 2 failed; 4 pictures in " in done.stderr


@pytest.mark.slow  # long (a subprocess or more); `make test-slow` runs it
def test_sigterm_then_resume_finishes_without_rewriting_finished_folders(tiny_model_dir, tmp_path):
    """A real SIGTERM after the first recipe's folder; --resume keeps what was finished (same files, untouched)
    and writes the rest."""
    import signal
    import time

    line = {"source": SOURCE, "size": 128, "edits": [{"target": "a painting of a lion eating a burger"}]}
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text("\n".join(json.dumps({**line, "name": n, "steps": s}) for n, s in
                                  (("a", 2), ("b", 25), ("c", 25))) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": str(Path(__file__).parents[2])}
    args = [sys.executable, "-m", "p2p_cli", "edit", str(manifest), "--model", str(tiny_model_dir), "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()
    assert first.startswith(f"wrote {out / 'a'}/"), first + proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    finished = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert "a" in finished and "c" not in finished  # stopped in the middle
    stamps = {(n, f.name): f.stat().st_mtime_ns for n in finished for f in (out / n).iterdir()}
    time.sleep(0.01)
    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env, timeout=240)
    assert again.returncode == 0, again.stderr
    assert all(f"kept {out / n}/ (finished earlier: --resume)" in again.stdout for n in finished)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "b", "c"]
    assert {(n, f.name): f.stat().st_mtime_ns for n in finished for f in (out / n).iterdir()} == stamps
    assert f"{3 - len(finished)} done, {len(finished)} skipped (finished earlier), 0 failed" in again.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_batch_rows_gives_the_pictures_of_one_by_one(cli, tiny_model_dir, tmp_path):
    """--batch-rows runs recipes that share model, size, steps and guidance in one batch: the same pixels as one by
    one; a recipe with other steps, or one over the row limit, runs alone."""
    import numpy as np
    from PIL import Image

    line = {"source": SOURCE, "steps": 2, "size": 128}
    targets = ["a painting of a lion eating a burger", "a painting of a squirrel eating a pizza",
               "a painting of a squirrel eating a big burger", "a painting of a fox eating a burger"]
    manifest = tmp_path / "edits.jsonl"
    lines = [{**line, "name": f"r{i}", "seed": i, "edits": [{"target": t}]} for i, t in enumerate(targets)]
    lines[1]["negative_prompt"] = "blurry"
    lines[2]["edits"][0]["local_blend"] = {"words": ["burger"]}
    lines.append({**line, "name": "other-steps", "steps": 3, "edits": [{"target": targets[0]}]})
    manifest.write_text("\n".join(json.dumps(d) for d in lines) + "\n")
    alone, batched = tmp_path / "alone", tmp_path / "batched"
    assert cli("edit", manifest, "--model", tiny_model_dir, "--out", alone).exit_code == 0
    result = cli("edit", manifest, "--model", tiny_model_dir, "--out", batched, "--batch-rows", "12")
    assert result.exit_code == 0, result.output
    assert "3 recipes in one batch: r0, r1, r2" in result.stderr  # 4 rows each (2 prompts, guided): 12 fit
    assert "4 recipes in one batch" not in result.stderr
    for d in lines:
        for png in (alone / d["name"]).glob("*.png"):
            a = np.asarray(Image.open(png)).astype(int)
            b = np.asarray(Image.open(batched / d["name"] / png.name)).astype(int)
            assert np.abs(a - b).max() <= 1, (d["name"], png.name)  # 8-bit rounding of float32 sums
    assert json.loads((batched / "r2" / "run.json").read_text())["recipe"]["name"] == "r2"
