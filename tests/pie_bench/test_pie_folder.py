"""A PIE-Bench folder read and checked, its kinds chosen, and each entry turned into the recipe the benchmark's P2P
run amounts to."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from pie_fixtures import ENTRIES, object_box
from p2p_cli.files.pie_folder import (
    PieBenchError, Settings, decode_mask, entry_job, entry_recipe, parse_kinds, read_folder,
)
from p2p_cli.recipe import parse_recipe


def test_reads_every_entry_with_the_brackets_removed(pie_folder):
    entries = read_folder(pie_folder)
    assert [e.id for e in entries] == [e[0] for e in ENTRIES]
    first = entries[0]
    assert first.source == "a big red circle on the left on a white background"
    assert first.target == "a big blue circle on the left on a white background"
    assert first.kind == 0 and first.kind_name == "random" and first.blended == ["circle", "circle"]
    assert first.image == (pie_folder / "annotation_images/0_random_140/000000000000.jpg").resolve()
    assert entries[2].blended == []
    expected = object_box(ENTRIES[1][3]).astype(np.float32)
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 1
    assert np.array_equal(decode_mask(entries[1].mask), expected)


def test_kinds_by_id_or_name_and_limit(pie_folder):
    assert parse_kinds("1, change-color") == [1, 6] and parse_kinds("change_style,9,0") == [9, 0]
    assert parse_kinds(None) is None and parse_kinds("all") is None
    with pytest.raises(ValueError, match="unknown kind 'recolour'.*6 change-color"):
        parse_kinds("recolour")
    assert [e.id for e in read_folder(pie_folder, kinds=[1, 6])] == ["111000000000", "611000000000"]
    assert [e.id for e in read_folder(pie_folder, limit=2)] == ["000000000000", "111000000000"]
    assert [e.id for e in read_folder(pie_folder, kinds=[6], limit=1)] == ["611000000000"]
    assert read_folder(pie_folder, kinds=[9]) == []


def test_the_reference_protocol_follows_the_benchmarks_p2p_run(pie_folder):
    """run_editing_p2p.py's call: refine (is_replace_controller False, though these prompts have as many words),
    cross 0.4, self 0.6 in layers of <= 32x32 queries, guidance 7.5, 50 steps, LocalBlend(((src word,), (tgt
    word,))) with th 0.3 and start 0.2, eq_params {tgt word: 2}."""
    entries = read_folder(pie_folder)
    recipe, notes = entry_recipe(entries[1])
    assert notes == [] and Settings().protocol == "reference"
    assert {k: recipe[k] for k in ("cross_replace", "self_replace", "self_replace_max_res", "guidance", "steps",
                                   "inversion")} == {"cross_replace": 0.4, "self_replace": 0.6,
                                                     "self_replace_max_res": 32, "guidance": 7.5, "steps": 50,
                                                     "inversion": "direct"}
    assert recipe["edits"] == [{"target": "a big green triangle on the right on a white background", "type": "refine",
                                "local_blend": {"source_words": ["square"], "target_words": ["triangle"],
                                                "threshold": 0.3, "start": 0.2},
                                "reweight": {"triangle": 2.0}}]
    parsed = parse_recipe(recipe, "x")
    assert parsed.edits[0].type == "refine" and parsed.image == str(entries[1].image) and "mask" not in recipe
    # the same blended word on both sides: the source's circle in the source, the target's in the target
    same, _ = entry_recipe(entries[0], reweight=1, inversion="null-text")
    assert same["edits"][0]["local_blend"]["source_words"] == ["circle"] == same["edits"][0]["local_blend"][
        "target_words"] and "reweight" not in same["edits"][0] and same["inversion"] == "null-text"
    assert entry_recipe(entries[2])[0]["edits"] == [{"target": entries[2].target, "type": "refine"}]  # no words
    assert entry_recipe(entries[1], blend=False)[0]["edits"][0].get("local_blend") is None
    # a joint-attention transformer has no resolution levels: its self blocks stay the family's
    assert "self_replace_max_res" not in entry_recipe(entries[1], joint=True)[0]


def test_the_p2p_protocol_is_p2ps_own_choice(pie_folder):
    entries = read_folder(pie_folder)
    recipe, notes = entry_recipe(entries[1], protocol="p2p")
    assert notes == [] and not {"cross_replace", "self_replace", "self_replace_max_res", "guidance", "steps"} & set(
        recipe)  # the model family's windows, guidance and steps
    assert recipe["edits"] == [{"target": entries[1].target, "local_blend": {"words": ["square", "triangle"]},
                                "reweight": {"triangle": 2.0}}]
    assert parse_recipe(recipe, "x").edits[0].type == "replace"  # as many words: p2p replaces
    assert entry_recipe(entries[2], protocol="p2p")[0]["edits"] == [{"target": entries[2].target}]
    with pytest.raises(ValueError, match="protocol 'auto': give one of reference, p2p"):
        entry_recipe(entries[1], protocol="auto")


def test_blended_words_the_reference_would_not_find_are_noted(pie_folder):
    entries = read_folder(pie_folder)
    odd = replace(entries[1], source="a big green Square, on the right", blended=["square", "triangle", "extra"])
    recipe, notes = entry_recipe(odd)
    assert recipe["edits"][0]["local_blend"]["source_words"] == ["square"]  # p2p's word split finds it
    assert notes == ["blended word 'square' is in the source only after p2p's word split (the reference looks words"
                     " up at spaces, case and punctuation included, and would blend nothing for it)",
                     "blended words 'extra' after the second are ignored, as the reference does"]
    _, notes = entry_recipe(replace(entries[1], target="a big green Triangle on the right"))
    assert notes == ["blended word 'triangle' is in the target only after p2p's word split (the reference looks words"
                     " up at spaces, case and punctuation included, and would neither blend nor reweight it)"]
    missing = replace(entries[1], blended=["bicycle", "triangle"])
    recipe, notes = entry_recipe(missing)
    assert recipe["edits"][0]["local_blend"] == {"target_words": ["triangle"], "threshold": 0.3, "start": 0.2}
    assert notes == ["blended word 'bicycle' is not in the source: left out of the blend"]
    recipe, notes = entry_recipe(replace(entries[1], blended=["bicycle", "blue"]))
    assert "local_blend" not in recipe["edits"][0] and "reweight" not in recipe["edits"][0]
    assert notes[-1] == "blended word 'blue' is not in the target: not reweighted"
    recipe, notes = entry_recipe(replace(entries[1], blended=["square"]))
    assert recipe["edits"][0]["local_blend"]["words"] == ["square"] and "reweight" not in recipe["edits"][0]
    assert notes == ["one blended word 'square' (the reference's script needs two): looked up in both prompts,"
                     " not reweighted"]
    recipe, notes = entry_recipe(replace(entries[0], blended=["bicycle", "blue"]), protocol="p2p")
    assert recipe["edits"][0]["local_blend"] == {"words": ["blue"]} and recipe["edits"][0]["reweight"] == {"blue": 2}
    assert notes == ["blended word(s) 'bicycle' in neither prompt: left out of the blend"]

    settings = Settings(overrides=["steps=5", "edits.0.cross_replace=0.8"])
    data, _ = entry_job(entries[1], settings)
    assert data["steps"] == 5 and data["edits"][0]["cross_replace"] == 0.8


def rewrite(folder, change):
    path = folder / "mapping_file.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_bad_folders_name_each_problem(tmp_path, pie_folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PieBenchError, match="no mapping_file.json in"):
        read_folder(tmp_path / "empty")
    with pytest.raises(PieBenchError, match="is not a folder"):
        read_folder(tmp_path / "missing")
    (pie_folder / "mapping_file.json").write_text('{"a": [1,')
    with pytest.raises(PieBenchError, match="mapping_file.json: not JSON: .* line 1"):
        read_folder(pie_folder)


def test_bad_entries_are_all_listed(tmp_path):
    from pie_fixtures import write_pie_folder

    folder = write_pie_folder(tmp_path / "data")

    def damage(data):
        data["000000000000"]["mask"] = [1, 2, 3]
        data["111000000000"]["image_path"] = "nowhere/x.jpg"
        data["611000000000"]["editing_type_id"] = "12"

    rewrite(folder, damage)
    with pytest.raises(PieBenchError) as caught:
        read_folder(folder)
    problems = caught.value.problems
    assert any(p.startswith("000000000000.mask: expected the run-length code") for p in problems)
    assert any(p.startswith("111000000000.image_path: no picture at") for p in problems)
    assert any(p.startswith("611000000000.editing_type_id: expected an id 0-9") for p in problems)
    # an entry outside the chosen kinds is not checked for its picture
    rewrite(folder, lambda d: (d["000000000000"].update(mask=[0, 5]), d["611000000000"].update(editing_type_id=6)))
    assert [e.id for e in read_folder(folder, kinds=[0])] == ["000000000000"]


def test_a_mask_that_runs_past_the_picture_is_refused(pie_folder):
    rewrite(pie_folder, lambda d: d["000000000000"].update(mask=[0, 10, 0, 10**9]))
    with pytest.raises(PieBenchError) as caught:
        read_folder(pie_folder)
    assert caught.value.problems == ["000000000000.mask: run 2 (start 0, length 1000000000) ends past the 512x512"
                                     " picture's last pixel (262144); the code is damaged"]
    rewrite(pie_folder, lambda d: d["000000000000"].update(mask=[262143, 1]))  # the last pixel itself: fine
    read_folder(pie_folder)
    rewrite(pie_folder, lambda d: d["000000000000"].update(mask=[262144, 1]))
    with pytest.raises(PieBenchError, match="000000000000.mask: run 1"):
        read_folder(pie_folder)


@pytest.mark.parametrize("where", ["absolute", "parent", "link"])
def test_a_mapping_file_names_pictures_inside_its_folder_only(tmp_path, where):
    from pie_fixtures import write_pie_folder

    folder = write_pie_folder(tmp_path / "data")
    secret = tmp_path / "secret.png"
    mine = json.loads((folder / "mapping_file.json").read_text())["000000000000"]["image_path"]
    (folder / "annotation_images" / mine).rename(secret)
    if where == "link":
        (folder / "annotation_images" / mine).symlink_to(secret)
        path = mine
    else:
        path = str(secret) if where == "absolute" else "../../secret.png"
    rewrite(folder, lambda d: d["000000000000"].update(image_path=path))
    with pytest.raises(PieBenchError) as caught:
        read_folder(folder)
    (line,) = caught.value.problems
    assert line.startswith("000000000000.image_path: ") and "lies outside" in line and "--trust-recipe" in line
    assert read_folder(folder, trust=True)[0].image == secret.resolve()
