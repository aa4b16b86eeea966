"""`p2p eval pie-bench DIR` end to end on the bundled shapes model (3 steps) with tiny random metric networks: the
folders `p2p edit` writes, pie-bench.json's scores recomputed from the written pictures, the table, --json,
--kinds / --limit, --resume, a missing network and a bad folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from p2p_cli.analysis.metrics import ClipScorer, DinoStructure, clip_score, pie_clip_region
from p2p_cli.cli.main import app
from p2p_cli.family_defaults import DEFAULTS_FILE
from p2p_cli.files.pie_folder import decode_mask, read_folder
from p2p_cli.pie_bench import MEASURES
from p2p_cli.render.load import picture_at
from p2p_cli.resolve import BUNDLED

STEPS = "3"


def invoke(*args):
    return CliRunner().invoke(app, ["eval", "pie-bench", *map(str, args)])


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_clip_dir, tiny_dino_dir):
    """One run of the three entries (shared by the tests that read its results)."""
    from pie_fixtures import write_pie_folder

    root = tmp_path_factory.mktemp("pie")
    folder, out = write_pie_folder(root / "data"), root / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("P2P_CACHE", str(root / "cache"))
    try:
        result = invoke(folder, "--out", out, "--steps", STEPS, "--dino", tiny_dino_dir, "--clip", tiny_clip_dir,
                        "--lpips", "none", "--device", "cpu")
    finally:
        mp.undo()
    return folder, out, result


def test_every_entry_is_edited_and_written_like_p2p_edit(ran):
    folder, out, result = ran
    assert result.exit_code == 0, result.stderr
    for key in ("000000000000", "111000000000", "611000000000"):
        files = {p.name for p in (out / key).iterdir()}
        assert {"input.png", "source.png", "edit-1.png", "grid.png", "run.json", "inversion.safetensors"} <= files
        record = json.loads((out / key / "run.json").read_text())
        assert record["pie_bench"]["entry"] == key and record["recipe"]["steps"] == 3
        assert record["recipe"]["cross_replace"] == {"default": [0.0, 0.4]}
        assert record["recipe"]["self_replace"] == [0.0, 0.6] and record["recipe"]["self_replace_max_res"] == 32
        assert record["recipe"]["guidance"] == 7.5 and record["pie_bench"]["protocol"] == "reference"
    record = json.loads((out / "111000000000" / "run.json").read_text())
    assert record["recipe"]["edits"][0]["type"] == "refine"  # the benchmark's protocol, though as many words
    blend = record["recipe"]["edits"][0]["local_blend"]
    assert blend["source_words"] == ["square"] and blend["target_words"] == ["triangle"] and blend["words"] == []
    assert "edit-1-mask.png" in {p.name for p in (out / "111000000000").iterdir()}
    assert not list(out.glob(".*"))  # no temporary folders or files left


def test_scores_match_a_hand_computation_from_the_written_pictures(ran, tiny_clip_dir, tiny_dino_dir):
    folder, out, result = ran
    summary = json.loads((out / "pie-bench.json").read_text())
    assert summary["skipped_measures"] == {"lpips": "--lpips none"}
    clip, dino = ClipScorer(str(tiny_clip_dir)).load(), DinoStructure(str(tiny_dino_dir)).load()
    for entry, row in zip(read_folder(folder), summary["entries"]):
        assert row["id"] == entry.id and row["status"] == "ok" and set(row["scores"]) == set(MEASURES)
        source = picture_at(entry.image, (512, 512)).numpy().astype(np.float64)
        edited_t = picture_at(out / entry.id / "edit-1.png", (512, 512))
        edited = edited_t.numpy().astype(np.float64)
        keep = 1 - decode_mask(entry.mask)[None]
        mse = np.mean((source * keep - edited * keep) ** 2)
        scores = row["scores"]
        assert scores["mse"] == pytest.approx(mse, rel=1e-9)
        assert scores["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)
        assert 0 < scores["ssim"] < 1 and scores["lpips"] is None
        assert scores["structure_distance"] == pytest.approx(dino(torch.from_numpy(source).float(), edited_t),
                                                             rel=1e-5)
        text = clip.text_features([entry.target])[0]
        mask = torch.from_numpy(decode_mask(entry.mask))
        feats = clip.image_features(torch.stack([edited_t, pie_clip_region(edited_t, mask)]))
        assert scores["clip_whole"] == pytest.approx(clip_score(feats[0], text), abs=1e-4)
        assert scores["clip_edited"] == pytest.approx(clip_score(feats[1], text), abs=1e-4)
    # means per kind and overall
    rows = summary["entries"]
    for m in ("psnr", "mse", "clip_whole"):
        assert summary["overall"]["means"][m] == pytest.approx(np.mean([r["scores"][m] for r in rows]))
    assert summary["kinds"]["change-object"]["means"]["mse"] == pytest.approx(rows[1]["scores"]["mse"])
    assert summary["overall"]["entries"] == 3 and summary["overall"]["means"]["lpips"] is None
    assert summary["overall"]["counts"] == {**{m: 3 for m in MEASURES}, "lpips": 0}
    assert summary["overall"]["unscored"] == {"lpips": "skipped"}  # the table's mark, in the JSON
    # the benchmark's protocol by default: every edit refines, and each row says which protocol made it
    assert summary["settings"]["protocol"] == "reference"
    assert [r["protocol"] for r in rows] == ["reference"] * 3
    for row in rows:
        assert json.loads((out / row["id"] / "run.json").read_text())["recipe"]["edits"][0]["type"] == "refine"
    assert list(summary["kinds"]) == ["random", "change-object", "change-color"]


def test_the_table_holds_the_paper_scaled_means(ran):
    folder, out, result = ran
    summary = json.loads((out / "pie-bench.json").read_text())
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["kind", "entries"] and len(lines) == 7  # heading, 3 kinds, all, n, legend
    assert lines[-1] == "skipped: the measure's network was not loaded (see skipped_measures)"
    assert lines[-2].split() == ["n", "(all)", "3", "3", "0", "3", "3", "3", "3"]  # values per column
    last = lines[-3].split()
    assert last[:2] == ["all", "3"]
    means = summary["overall"]["means"]
    assert float(last[2]) == pytest.approx(means["structure_distance"] * 1e3, abs=0.006)
    assert float(last[3]) == pytest.approx(means["psnr"], abs=0.006)
    assert last[4] == "skipped"  # LPIPS: its network was not loaded
    assert float(last[5]) == pytest.approx(means["mse"] * 1e4, abs=0.006)
    assert float(last[6]) == pytest.approx(means["ssim"] * 1e2, abs=0.006)
    assert "skipping lpips: --lpips none" in result.stderr


def test_resume_keeps_finished_entries_and_json_prints_the_summary(ran, tmp_path, monkeypatch):
    folder, out, _ = ran
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    again = invoke(folder, "--out", out, "--steps", STEPS, "--dino", "none", "--clip", "none", "--lpips", "none")
    assert again.exit_code == 2 and "already exist; pass --resume" in again.stderr
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/edit-1.png")}
    kept = invoke(folder, "--out", out, "--steps", STEPS, "--dino", "none", "--clip", "none", "--lpips", "none",
                  "--resume", "--json", "--kinds", "random,6")
    assert kept.exit_code == 0, kept.stderr
    line = json.loads(kept.stdout)
    assert line["out"] == str(out / "pie-bench.json") and line["overall"]["entries"] == 2
    assert list(line["kinds"]) == ["random", "change-color"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/edit-1.png")} == before  # nothing edited again
    summary = json.loads((out / "pie-bench.json").read_text())
    assert [r["status"] for r in summary["entries"]] == ["kept", "kept"]
    assert "skipping structure_distance: --dino none" in kept.stderr


def test_limit_kinds_and_a_missing_network(pie_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = invoke(pie_folder, "--out", out, "--steps", STEPS, "--kinds", "1,6", "--limit", "1",
                    "--dino", tmp_path / "no-dino", "--clip", "none", "--lpips", "none", "--protocol", "p2p")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["111000000000", "pie-bench.json"]
    assert f"warning: skipping structure_distance: no DINO model folder at {tmp_path / 'no-dino'}" in result.stderr
    summary = json.loads((out / "pie-bench.json").read_text())
    assert summary["entries"][0]["scores"]["structure_distance"] is None
    record = json.loads((out / "111000000000" / "run.json").read_text())
    assert record["recipe"]["edits"][0]["type"] == "replace"  # p2p's rule: as many words, a replacement
    assert summary["settings"]["protocol"] == "p2p" and summary["entries"][0]["protocol"] == "p2p"
    assert record["pie_bench"]["protocol"] == "p2p"
    # p2p's choice for a real picture: the model's own real-picture window (the bundled model's p2p-defaults.json)
    own = json.loads((BUNDLED["shapes"] / DEFAULTS_FILE).read_text())["image"]["cross_replace"]
    assert record["recipe"]["edits"][0]["cross_replace"] == {"default": [0.0, own]}
    # --resume under the other protocol stops before loading: it would mix the two in one table
    again = invoke(pie_folder, "--out", out, "--steps", STEPS, "--kinds", "1,6", "--limit", "1", "--resume",
                   "--dino", "none", "--clip", "none", "--lpips", "none")
    assert again.exit_code == 2, again.stderr
    assert (f"{out / '111000000000'}/ was made under --protocol p2p, this run is --protocol reference: --resume never"
            " mixes protocols") in again.stderr
    assert json.loads((out / "pie-bench.json").read_text())["settings"]["protocol"] == "p2p"  # left as it was


@pytest.mark.parametrize("args, message", [
    (["--kinds", "recolour"], "--kinds: unknown kind 'recolour'"),
    (["--kinds", "9"], "no entries of the kinds 9"),
    (["--set", "steps=0"], "steps"),
    (["--lpips", "vgg"], "--lpips vgg"),
])
def test_bad_options_stop_before_anything_loads(pie_folder, tmp_path, args, message):
    result = invoke(pie_folder, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_folder_is_a_clear_error(tmp_path):
    result = invoke(tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert f"no mapping_file.json in {tmp_path}; give the PIE-Bench data folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_table_tells_a_skipped_network_from_an_empty_region_and_counts_each_column():
    from p2p_cli.pie_bench import summarise, table

    def row(kind, psnr, clip_edited):
        scores = dict.fromkeys(MEASURES, 0.5)
        scores.update(psnr=psnr, clip_edited=clip_edited, lpips=None)  # LPIPS: the network skipped
        return {"kind": kind, "status": "ok", "scores": scores}

    rows = [row(6, 20.0, 30.0), row(6, None, 32.0), row(6, 24.0, 28.0), row(9, None, 31.0), row(9, None, 29.0)]
    rows.append({"kind": 9, "status": "failed", "error": "x"})  # no scores: not counted
    summary = {**summarise(rows, {"lpips": "--lpips none"}), "skipped_measures": {"lpips": "--lpips none"}}
    assert summary["overall"]["entries"] == 5 and summary["overall"]["counts"]["psnr"] == 2
    assert summary["overall"]["means"]["psnr"] == pytest.approx(22.0)
    assert summary["kinds"]["change-style"]["counts"] == {**{m: 2 for m in MEASURES}, "psnr": 0, "lpips": 0}
    # the JSON says why a mean is missing, as the table does
    assert summary["kinds"]["change-style"]["unscored"] == {"psnr": "empty", "lpips": "skipped"}
    assert summary["overall"]["unscored"] == {"lpips": "skipped"}
    lines = table(summary).splitlines()
    assert lines[0].split()[:2] == ["kind", "entries"]
    cells = {line.split()[0]: line for line in lines[1:4]}
    # psnr column: the mean over 2 of 3 entries says so; none of change-style's entries had a background
    assert "22.00 (2)" in cells["change-color"] and "empty" in cells["change-style"].split()
    assert "skipped" in cells["all"].split() and "22.00 (2)" in cells["all"] and "(5)" not in cells["all"]
    assert lines[4].split() == ["n", "(all)", "5", "2", "0", "5", "5", "5", "5"]  # values behind each column
    assert lines[5].split("; ") == ["(k): the mean of k values, the line's other entries had no region to score",
                                    "skipped: the measure's network was not loaded (see skipped_measures)",
                                    "empty: no entry of the line had a region to score"]
