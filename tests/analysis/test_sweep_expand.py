"""Tau sweeps: value ranges, the expanded recipe and its batches, picking (no model needed)."""

from __future__ import annotations

import pytest

from p2p_cli.recipe import parse_recipe
from p2p_cli.analysis.tau_sweep import PickRule, expand, parse_pick, parse_taus, pick, pick_score

SOURCE = "a painting of a squirrel eating a burger"


def two_edits(**top):
    return parse_recipe({
        "source": SOURCE, "self_replace": 0.3, **top,
        "edits": [
            {"target": "a painting of a lion eating a burger", "cross_replace": {"default": [0.1, 0.9], "lion": 0.4}},
            {"target": "a painting of a squirrel eating a burger at night", "self_replace": [0.2, 0.6]},
        ],
    })


@pytest.mark.parametrize("text, values", [
    ("0.2:0.8", [0.2, 0.4, 0.6, 0.8]),
    ("0.1:0.8", [0.1, 0.3, 0.5, 0.7]),  # 0.8 is not on the grid
    ("0:1:0.25", [0, 0.25, 0.5, 0.75, 1]),
    ("0:1:0.1", [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]),  # no float drift at the end
    ("0.3:0.3", [0.3]),
    (" 0.2, 0.5,0.9 ", [0.2, 0.5, 0.9]),
    ("0.9,0.1", [0.9, 0.1]),
    ("1", [1.0]),
])
def test_tau_values(text, values):
    assert parse_taus(text) == pytest.approx(values, abs=1e-12)


@pytest.mark.parametrize("text, message", [
    ("", "empty; expected A:B, A:B:STEP or a list"),
    ("0.2:0.8:0.1:1", "expected A:B or A:B:STEP"),
    ("0.8:0.2", "start 0.8 is after end 0.2"),
    ("0:1:0", "the step must be above 0"),
    ("0:1:-0.1", "the step must be above 0"),
    ("0.2:1.5", "1.5 is outside [0, 1]"),
    ("0.2,x", "'x' is not a number"),
    ("0.2,,0.4", "'' is not a number"),
    ("0.5,0.5", "0.5 is listed twice"),
    ("nan", "nan is outside [0, 1]"),
    ("0:1:0.001", "gives 1001 values; at most 101"),
])
def test_bad_tau_values_say_why(text, message):
    with pytest.raises(ValueError, match=None) as info:
        parse_taus(text)
    assert message in str(info.value)


def test_expansion_replaces_the_default_window_only():
    sweep = expand(two_edits(), [0.2, 0.6], None)
    assert [(p.edit, p.tau) for p in sweep.points] == [(1, 0.2), (1, 0.6), (2, 0.2), (2, 0.6)]
    first = sweep.expanded.edits[0]
    assert first.cross_replace.default == (0.0, 0.2) and first.cross_replace.words == {"lion": (0.0, 0.4)}
    assert first.self_replace == (0.0, 0.3)  # not swept: the recipe's window, resolved
    assert sweep.expanded.edits[3].self_replace == (0.2, 0.6)
    assert [e.target for e in sweep.expanded.edits] == [e.target for e in sweep.recipe.edits for _ in range(2)]
    assert sweep.recipe.edits[0].cross_replace.default == (0.1, 0.9)  # the recipe itself is untouched
    assert sweep.rows == [0.2, 0.6] and sweep.columns == [(1, None), (2, None)]
    assert sweep.place(sweep.points[3]) == (1, 1)
    assert [p.name for p in sweep.points][:2] == ["edit-1-tau-0.2", "edit-1-tau-0.6"]


def test_two_dimensional_sweep_of_one_edit():
    sweep = expand(two_edits(), [0.2, 0.8], [0.0, 0.4], edit=2)
    assert len(sweep.points) == 4 and {p.edit for p in sweep.points} == {2}
    assert sweep.rows == [0.2, 0.8] and sweep.columns == [(2, 0.0), (2, 0.4)]
    point = sweep.points[1]
    assert point.name == "edit-2-tau-0.2-self-0.4" and sweep.place(point) == (0, 1)
    assert sweep.expanded.edits[1].self_replace == (0.0, 0.4)
    only_self = expand(two_edits(), None, [0.1, 0.5])
    assert only_self.rows == [0.1, 0.5] and only_self.points[0].name == "edit-1-self-0.1"
    assert only_self.points[0].cross.default == (0.1, 0.9)  # tau not swept: the edit's own window


def test_bad_edit_number_and_empty_sweep():
    with pytest.raises(ValueError, match=r"^edit 3: the recipe has 2 edits \(1 to 2\)"):
        expand(two_edits(), [0.5], None, edit=3)
    with pytest.raises(ValueError, match="nothing to sweep"):
        expand(two_edits(), None, None)


def test_batches_carry_the_source_and_each_baseline_once():
    sweep = expand(two_edits(baseline=True), [0.2, 0.4, 0.6], None)
    chunks = sweep.chunks(2)
    assert [len(c.points) for c in chunks] == [2, 2, 2]
    assert all(c.recipe.source == SOURCE and not c.recipe.baseline for c in chunks)
    assert [c.baselines for c in chunks] == [[1], [2], []]  # edit-2's first point is in the second batch
    assert [[e.baseline for e in c.recipe.edits] for c in chunks] == [[True, False], [False, True], [False, False]]
    assert not any(e.baseline for e in sweep.expanded.edits)  # the batches got copies
    assert expand(two_edits(), [0.2], None).baselines == []
    assert expand(two_edits(), [0.2], None, baseline=True).baselines == [1, 2]


def test_pick_the_best_edit_among_points_that_keep_enough():
    rows = [
        {"edit": 1, "ssim": 0.9, "clip": 20.0}, {"edit": 1, "ssim": 0.6, "clip": 25.0},
        {"edit": 1, "ssim": 0.3, "clip": 30.0},  # the best edit, but it keeps too little
        {"edit": 2, "ssim": 0.2, "clip": 30.0}, {"edit": 3, "ssim": 0.9, "clip": None},
    ]
    picked, notes = pick(rows, PickRule("ssim", ">=", 0.5, "clip"))
    assert picked == {1: 1}
    assert notes == ["edit-2: no point has ssim>=0.5, so none picked", "edit-3: no clip scores, so no point picked"]
    assert parse_pick("lpips<=0.3", "clip_dir") == PickRule("lpips", "<=", 0.3, "clip_dir")
    for keep, by, message in [("ssim>0.5", "clip", "expected METRIC>=VALUE"), ("fid>=1", "clip", "fid is not one of"),
                              ("ssim>=0.5", "psnr", "--pick-by 'psnr': expected auto or one of clip, clip_dir, change_in, change")]:
        with pytest.raises(ValueError) as info:
            parse_pick(keep, by)
        assert message in str(info.value)


def test_pick_by_a_score_without_clip_is_checked_before_sampling():
    assert parse_pick("ssim>=0.5", "change") == PickRule("ssim", ">=", 0.5, "change")
    assert parse_pick("ssim>=0.5", "auto").score == "auto"
    assert pick_score("auto", True, False) == "clip"
    assert pick_score("auto", False, True) == "change_in" and pick_score("auto", False, False) == "change"
    assert pick_score("change", False, False) == "change"
    with pytest.raises(ValueError, match="--pick-by clip_dir needs CLIP scores"):
        pick_score("clip_dir", False, True)
    with pytest.raises(ValueError, match="needs a local_blend mask in every swept edit"):
        pick_score("change_in", True, False)
    rows = [{"edit": 1, "ssim": 0.9, "change": 0.1}, {"edit": 1, "ssim": 0.7, "change": 0.3},
            {"edit": 1, "ssim": 0.4, "change": 0.5}]
    assert pick(rows, PickRule("ssim", ">=", 0.5, "change")) == ({1: 1}, [])
