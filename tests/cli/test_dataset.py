"""`p2p dataset PAIRS --out DIR`: K sampled edits per caption pair, scored with the sweep's metrics, kept by
--keep, written as an imagefolder dataset (metadata.jsonl with two image columns) that `datasets` loads as is;
deterministic from the pair's index (same rows on resume and on any number of processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_cli.analysis.dataset import Pair, parse_keep, parse_range, read_pairs, sample_seed, samples

SOURCE = "a painting of a squirrel eating a burger"
PAIRS = [
    {"source": SOURCE, "target": "a painting of a lion eating a burger"},
    {"source": SOURCE, "target": "a painting of a squirrel eating a cake",
     "local_blend": {"words": ["burger", "cake"]}},
    {"source": SOURCE},  # no target: an invalid line
    {"source": SOURCE, "target": "a painting of a squirrel eating a burger at night", "self_replace": 0.3},
]
ARGS = ("--samples", 3, "--steps", 2, "--set", "size=128")


def write_pairs(tmp_path: Path, pairs=PAIRS) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def records(out: Path) -> dict[int, dict]:
    return {int(p.name): json.loads((p / "pair.json").read_text()) for p in (out / "pairs").iterdir()}


def test_samples_are_drawn_from_the_pair_index_and_the_seed():
    pair = Pair(5, "p#6", SOURCE, "a painting of a lion eating a burger")
    three = samples(pair, 3, seed=1, cross=(0.1, 0.9), self_range=(0.2, 0.4))
    five = samples(pair, 5, seed=1, cross=(0.1, 0.9), self_range=(0.2, 0.4))
    assert [(s.seed, s.cross, s.self_window) for s in three] == [(s.seed, s.cross, s.self_window) for s in five[:3]]
    assert len({s.seed for s in five}) == 5 and all(s.recipe.seed == s.seed for s in five)
    assert all(0.1 <= s.cross <= 0.9 and 0.2 <= s.self_window <= 0.4 for s in five)
    assert [s.recipe.cross_for(s.recipe.edits[0]).default for s in three] == [(0.0, s.cross) for s in three]
    assert sample_seed(1, 6, 0) != three[0].seed and sample_seed(2, 5, 0) != three[0].seed
    fixed = samples(Pair(5, "p#6", SOURCE, "a painting of a lion eating a burger", {"cross_replace": 0.5}), 2, seed=1,
                    cross=(0.1, 0.9), self_range=(0.2, 0.4))
    assert [s.cross for s in fixed] == [0.5, 0.5] and [s.self_window for s in fixed] == [s.self_window for s in three[:2]]


def test_keep_rules_ranges_and_pair_lines_say_what_is_wrong(tmp_path):
    rules = parse_keep("clip_img>=0.75, clip_dir>=0.2")
    assert [str(r) for r in rules] == ["clip_img>=0.75", "clip_dir>=0.2"]
    assert rules[0].holds({"clip_img": 0.8}) and not rules[0].holds({"clip_img": 0.7})
    assert not rules[1].holds({"clip_dir": None})  # a score that could not be had does not pass
    assert parse_keep("none") == []
    with pytest.raises(ValueError, match="sharpness is not a score; the scores are ssim, psnr"):
        parse_keep("sharpness>=1")
    with pytest.raises(ValueError, match="'ssim=1' is not METRIC>=VALUE"):
        parse_keep("ssim=1")
    assert parse_range("--cross", "0.2:0.6") == (0.2, 0.6) and parse_range("--self", "0.4") == (0.4, 0.4)
    with pytest.raises(ValueError, match="--cross 0.9:0.1: expected LO:HI"):
        parse_range("--cross", "0.9:0.1")
    path = tmp_path / "p.jsonl"
    path.write_text('{"source": "a", "target": "b"}\n\nnot json\n{"source": "a", "target": "b", "guidance": 3}\n')
    found, bad = read_pairs(path)
    assert [p.index for p in found] == [0]
    assert [err.source for err in bad] == [f"{path}#3", f"{path}#4"]
    assert "guidance: not a pair field" in bad[1].problems[0] and "--set" in bad[1].problems[0]


def test_a_dataset_is_scored_filtered_and_loads_with_datasets(cli, tiny_model_dir, tiny_clip_dir, tmp_path):
    pairs = write_pairs(tmp_path)
    every = tmp_path / "every"
    result = cli("dataset", pairs, "--out", every, "--model", tiny_model_dir, "--clip", tiny_clip_dir, "--keep", "none",
                 *ARGS)
    assert result.exit_code == 1, result.output  # the invalid line
    assert f"error: {pairs}#3: invalid recipe" in result.stderr and "target: required" in result.stderr
    assert result.stdout == f"wrote {every / 'metadata.jsonl'} (9 rows)\n"
    assert "pairs 3 done, 0 skipped (finished earlier), 1 failed; 18 pictures in " in result.stderr
    [failure] = [json.loads(x) for x in (every / "failures.jsonl").read_text().splitlines()]
    assert failure["line"] == 3 and failure["status"] == "invalid"
    table = rows(every)
    assert [(r["pair"], r["sample"]) for r in table] == [(i, j) for i in (0, 1, 3) for j in range(3)]
    assert all(r["self_window"] == [0.0, 0.3] for r in table if r["pair"] == 3)  # the pair's own window
    assert all(0.1 <= r["cross_window"][1] <= 0.9 and r["cross_window"][0] == 0 for r in table)
    assert all(r["change_in"] is not None for r in table if r["pair"] == 1)  # the local blend's mask
    assert all(r["change_in"] is None and r["ssim_bg"] is None for r in table if r["pair"] != 1)

    # the scores are the pictures' (an independent path: the files, read back and scored again)
    from PIL import Image
    import torch

    from p2p_cli.analysis.metrics import ClipScorer, ssim

    def tensor(name):
        import numpy as np

        return torch.from_numpy(np.array(Image.open(every / name).convert("RGB"))).permute(2, 0, 1).float() / 255

    scorer = ClipScorer(str(tiny_clip_dir)).load()
    for r in table[:4]:
        a, b = tensor(r["input_file_name"]), tensor(r["edited_file_name"])
        assert abs(ssim(a, b) - r["ssim"]) < 0.02
        feats = scorer.image_features(torch.stack([a, b]))
        assert abs(float(feats[0] @ feats[1]) - r["clip_img"]) < 0.02

    # a filter keeps exactly the samples that pass it, the same samples (same seeds, same pixels) as before
    cut = sorted(r["ssim"] for r in table)[4]
    kept = tmp_path / "kept"
    result = cli("dataset", pairs, "--out", kept, "--model", tiny_model_dir, "--clip", tiny_clip_dir, "--keep",
                 f"ssim>={cut},clip_img>=-1", *ARGS)
    assert result.exit_code == 1, result.output
    assert [(r["pair"], r["sample"]) for r in rows(kept)] == [(r["pair"], r["sample"]) for r in table if r["ssim"] >= cut]
    assert 0 < len(rows(kept)) < len(table)
    for r in rows(kept):
        assert (kept / r["edited_file_name"]).read_bytes() == (every / r["edited_file_name"]).read_bytes()
    rejected = [s for rec in records(kept).values() for s in rec["samples"] if not s["kept"]]
    assert rejected and all(s["scores"]["ssim"] < cut and s["edited"] is None for s in rejected)
    assert not any((kept / "pairs" / f"{r['pair']:06d}" / f"edited-{r['sample']}.png").exists()
                   for r in table if r["ssim"] < cut)  # only kept pictures are written

    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(kept), split="train")
    assert len(loaded) == len(rows(kept))
    assert {"input", "edited", "source", "target", "cross_window", "self_window", "seed", "ssim", "clip_img",
            "clip_dir"} <= set(loaded.column_names)
    first = rows(kept)[0]
    assert loaded[0]["edited"].tobytes() == Image.open(kept / first["edited_file_name"]).tobytes()
    assert loaded[0]["target"] == first["target"] and loaded[0]["seed"] == first["seed"]


def test_a_score_that_cannot_be_had_stops_before_any_model_loads(cli, tmp_path):
    pairs = write_pairs(tmp_path)
    result = cli("dataset", pairs, "--out", tmp_path / "o", "--clip", "none")  # the default keep names CLIP scores
    assert result.exit_code == 2
    assert "error: --keep clip_img>=0.75, clip_dir>=0.2 needs a CLIP model, and --clip is none" in result.stderr
    result = cli("dataset", pairs, "--out", tmp_path / "o", "--clip", tmp_path / "no-clip", "--keep", "clip>=20",
                 "--model", tmp_path / "no-model")
    assert result.exit_code == 2 and "error: --keep clip>=20 needs a CLIP model: " in result.stderr
    result = cli("dataset", pairs, "--out", tmp_path / "o", "--keep", "ssim>>1")
    assert result.exit_code == 2 and "is not METRIC>=VALUE" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # long (a subprocess or more); `make test-slow` runs it
def test_resume_keeps_finished_pairs_and_makes_the_same_dataset(cli, tiny_model_dir, tmp_path):
    pairs = write_pairs(tmp_path, [p for p in PAIRS if "target" in p])
    out = tmp_path / "out"
    args = ("dataset", pairs, "--out", out, "--model", tiny_model_dir, "--clip", "none", "--keep", "change>=0.001",
            *ARGS)
    assert cli(*args).exit_code == 0
    before = (out / "metadata.jsonl").read_bytes()
    import shutil

    shutil.rmtree(out / "pairs" / "000001")  # as if the run had died there
    (out / "metadata.jsonl").unlink()
    stamp = (out / "pairs" / "000000" / "pair.json").stat().st_mtime_ns
    again = cli(*args, "--resume")
    assert again.exit_code == 0, again.output
    assert f"{pairs}#1: kept {out / 'pairs' / '000000'}/ (finished earlier: --resume)" in again.stderr
    assert "pairs 1 done, 2 skipped (finished earlier), 0 failed; 6 pictures" in again.stderr
    assert (out / "pairs" / "000000" / "pair.json").stat().st_mtime_ns == stamp
    assert (out / "metadata.jsonl").read_bytes() == before
    lost = next(p for p in (out / "pairs" / "000001").iterdir() if p.suffix == ".png")
    lost.unlink()  # a finished pair that lost a picture is made again in its place
    (out / "metadata.jsonl").unlink()
    third = cli(*args, "--resume")
    assert third.exit_code == 0, third.output
    assert lost.exists() and (out / "metadata.jsonl").read_bytes() == before
    other = cli(*args[:-4], "--samples", 2, "--steps", 2, "--set", "size=128", "--resume")  # other settings
    assert other.exit_code == 1 and "already exists" in other.stderr


@pytest.mark.slow  # 12 s; the launcher itself is tested in the default run by tests/cli/test_scale.py
def test_torchrun_makes_the_same_dataset_as_one_process(tiny_model_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    pairs = write_pairs(tmp_path, [p for p in PAIRS if "target" in p])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    args = ["dataset", str(pairs), "--model", str(tiny_model_dir), "--clip", "none", "--keep", "none", "--samples",
            "2", "--steps", "2", "--set", "size=128"]
    two, one = tmp_path / "two", tmp_path / "one"
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29519", "-m", "p2p_cli", *args,
                           "--out", str(two)], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 1 of 2: pairs 1 done" in done.stderr and "all 2 processes: pairs 3 done" in done.stderr
    subprocess.run([sys.executable, "-m", "p2p_cli", *args, "--out", str(one)], check=True, capture_output=True,
                   env=env, timeout=240)
    assert (two / "metadata.jsonl").read_bytes() == (one / "metadata.jsonl").read_bytes()
    for r in rows(one):
        for key in ("input_file_name", "edited_file_name"):
            assert (two / r[key]).read_bytes() == (one / r[key]).read_bytes()
