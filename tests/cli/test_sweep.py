"""`p2p sweep` end to end on the tiny saved model (128 px, 2 steps) with a tiny random CLIP."""

from __future__ import annotations

import csv
import json

from PIL import Image

from p2p_cli.render.grid import PAD


def test_sweep_writes_images_grid_metrics_and_plot(small, cli, write_recipe, tiny_model_dir, tiny_clip_dir, tmp_path):
    out = tmp_path / "out"
    small.update(seed=3, blend_res=16)  # a partial blend mask on this random model
    small["edits"][0]["local_blend"].update(threshold=0.9, start=0.0)
    result = cli("sweep", write_recipe(small), "--model", tiny_model_dir, "--out", out, "--steps", "2",
                 "--tau", "0.2,0.6", "--batch-size", "3", "--baseline", "--clip", tiny_clip_dir,
                 "--pick", "--pick-keep", "ssim>=0", "--json")
    assert result.exit_code == 0, result.output
    folder = out / "small" / "sweep"
    names = sorted(p.name for p in folder.iterdir())
    points = ["edit-1-tau-0.2", "edit-1-tau-0.6", "edit-2-tau-0.2", "edit-2-tau-0.6"]
    assert names == sorted(["source.png", "baseline-1.png", "baseline-2.png", "sweep.png", "tradeoff.png",
                            "metrics.csv", "run.json", *(f"{p}.png" for p in points),
                            "edit-1-tau-0.2-mask.png", "edit-1-tau-0.6-mask.png"])
    assert sorted(p.name for p in out.iterdir()) == ["small"]  # no temporary folder left behind

    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [r["image"] for r in rows] == [f"{p}.png" for p in points]
    assert [(r["edit"], r["tau"], r["self_tau"]) for r in rows] == [("1", "0.2", "0.4"), ("1", "0.6", "0.4"),
                                                                    ("2", "0.2", "0.4"), ("2", "0.6", "0.4")]
    for r in rows:
        assert 0 < float(r["ssim"]) <= 1 and float(r["psnr"]) > 0 and r["lpips"] == ""
        assert 0 <= float(r["clip"]) <= 100 and -1 <= float(r["clip_dir"]) <= 1 and -1 <= float(r["clip_img"]) <= 1
    assert rows[0]["ssim_bg"] != "" and rows[2]["ssim_bg"] == ""  # only edit-1 blends
    assert [sum(r["picked"] == "1" for r in rows if r["edit"] == k) for k in "12"] == [1, 1]

    line = json.loads(result.stdout)
    assert line["out"] == str(folder) and set(line["picked"]) == {"edit-1", "edit-2"}
    assert line["images"]["edit-2-tau-0.6"] == str(folder / "edit-2-tau-0.6.png")
    grid = Image.open(folder / "sweep.png")
    assert grid.width == 3 * (128 + PAD) + PAD  # the label/source column and one column per edit
    assert grid.height > 3 * 128  # the header row and two tau rows
    assert Image.open(folder / "tradeoff.png").size == (860, 540)
    run = json.loads((folder / "run.json").read_text())
    assert run["sweep"]["tau"] == [0.2, 0.6] and run["sweep"]["batches"] == 2
    assert run["recipe"]["edits"][0]["cross_replace"] == {"default": [0.0, 0.8]}  # the recipe, not the expansion


def test_two_dimensional_sweep_without_clip_says_why(cli, write_recipe, tiny_model_dir, tmp_path):
    result = cli("sweep", write_recipe(), "--model", tiny_model_dir, "--out", tmp_path, "--steps", "2",
                 "--tau", "0.8", "--self-tau", "0:0.4:0.4", "--edit", "2", "--clip", "none")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "small" / "sweep"
    assert {"edit-2-tau-0.8-self-0.png", "edit-2-tau-0.8-self-0.4.png"} <= {p.name for p in folder.iterdir()}
    assert result.stderr.count("CLIP columns are empty: --clip none") == 1
    assert result.stdout.startswith(f"wrote {folder}/ (2 points, ")
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [r["clip"] for r in rows] == ["", ""] and [r["self_tau"] for r in rows] == ["0", "0.4"]


def test_bad_input_is_exit_2_before_any_model(cli, write_recipe, tmp_path):
    recipe, nowhere = write_recipe(), tmp_path / "nowhere"
    for args, message in [
        (["--tau", "0.8:0.2"], "error: --tau 0.8:0.2: '0.8:0.2': start 0.8 is after end 0.2"),
        (["--self-tau", "0.2,x"], "error: --self-tau 0.2,x: 'x' is not a number"),
        ([], "error: nothing to sweep: give --tau"),
        (["--tau", "0.5", "--edit", "3"], "error: --edit 3: the recipe has 2 edits (1 to 2)"),
        (["--tau", "0.5", "--pick-keep", "fid>=2"], "fid is not one of ssim, psnr"),
        (["--tau", "0.5", "--pick", "--pick-by", "clip", "--clip", "none"],
         "error: --pick-by clip needs CLIP scores; without a CLIP model pick by change_in"),
        (["--tau", "0.5", "--pick", "--pick-by", "change_in"], "change_in needs a local_blend mask in every swept"),
    ]:
        result = cli("sweep", recipe, "--model", nowhere, "--out", tmp_path / "out", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_pick_without_a_clip_model_fails_before_sampling(cli, write_recipe, tiny_model_dir, tmp_path):
    result = cli("sweep", write_recipe(), "--model", tiny_model_dir, "--out", tmp_path, "--steps", "2",
                 "--tau", "0.8", "--pick", "--pick-by", "clip", "--clip", str(tmp_path / "no-clip-here"))
    assert result.exit_code == 2, result.output
    assert "error: --pick by clip needs a CLIP model: " in result.stderr
    assert "points in" not in result.stderr and not (tmp_path / "small").exists()  # nothing was sampled


def test_pick_without_clip_picks_by_the_change_inside_the_blend_mask(small, cli, write_recipe, tiny_model_dir,
                                                                      tmp_path):
    small.update(seed=3, blend_res=16)
    small["edits"][0]["local_blend"].update(threshold=0.9, start=0.0)
    result = cli("sweep", write_recipe(small), "--model", tiny_model_dir, "--out", tmp_path, "--steps", "2",
                 "--tau", "0.2,0.6", "--edit", "1", "--clip", "none", "--pick", "--pick-keep", "ssim>=0", "--json")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "small" / "sweep"
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert all(0 <= float(r["change_in"]) <= 2 and 0 < float(r["change"]) < 1 for r in rows)
    best = max(range(2), key=lambda i: float(rows[i]["change_in"]))
    assert [r["picked"] for r in rows] == ["1" if i == best else "0" for i in range(2)]
    assert json.loads((folder / "run.json").read_text())["sweep"]["pick"] == "best change_in where ssim>=0"
