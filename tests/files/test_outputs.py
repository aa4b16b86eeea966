"""outputs: folders that appear whole or not at all; run.json's resolved recipe."""

from __future__ import annotations

import pytest

from p2p_cli.files.outputs import OutputExistsError, atomic_folder, resolved_recipe
from p2p_cli.recipe import parse_recipe


def test_folder_appears_only_when_complete(tmp_path):
    final = tmp_path / "out" / "run"
    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not final.exists() and tmp.parent == final.parent
    assert (final / "a.txt").read_text() == "a"
    assert [p.name for p in final.parent.iterdir()] == ["run"]


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as tmp:
            (tmp / "a.txt").write_text("a")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_refused_or_replaced_only_when_complete(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        with atomic_folder(final):
            pass
    with pytest.raises(RuntimeError):
        with atomic_folder(final, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert [p.name for p in final.iterdir()] == ["old.txt"]  # untouched by the failed overwrite
    with atomic_folder(final, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_resolved_recipe_fills_defaults_and_loads_again():
    recipe = parse_recipe({
        "name": "r", "source": "a cat on a mat", "self_replace": 0.3,
        "edits": [{"target": "a dog on a mat", "cross_replace": {"default": 1.0, "dog": 0.4}},
                  {"target": "a cat on a mat", "reweight": {"cat": 2}}],
    })
    data = resolved_recipe(recipe, size=(512, 512), model_id="some/model")
    assert data["size"] == [512, 512] and data["model"] == "some/model"
    assert data["edits"][0]["type"] == "replace" and data["edits"][1]["type"] == "reweight"
    assert data["edits"][0]["cross_replace"] == {"default": [0.0, 1.0], "dog": [0.0, 0.4]}
    assert data["edits"][1]["cross_replace"] == {"default": [0.0, 0.8]}
    assert data["edits"][1]["self_replace"] == [0.0, 0.3]  # the recipe-wide window
    again = parse_recipe(data)
    assert [again.cross_for(e) for e in again.edits] == [recipe.cross_for(e) for e in recipe.edits]
    assert [again.self_for(e) for e in again.edits] == [recipe.self_for(e) for e in recipe.edits]


def test_edit_folder_and_sweep_subfolder_live_together(tmp_path):
    """`p2p sweep` writes <name>/sweep/; `p2p edit` neither refuses because of it nor deletes it."""
    from p2p_cli.files.outputs import OutputExistsError, atomic_folder

    folder = tmp_path / "recipe"
    with atomic_folder(folder / "sweep") as tmp:
        (tmp / "sweep.png").write_bytes(b"sweep")
    with atomic_folder(folder) as tmp:  # only a sweep there: free for edit
        (tmp / "source.png").write_bytes(b"v1")
    assert (folder / "sweep" / "sweep.png").read_bytes() == b"sweep"
    with pytest.raises(OutputExistsError):
        with atomic_folder(folder):
            pass
    with atomic_folder(folder, overwrite=True) as tmp:
        (tmp / "source.png").write_bytes(b"v2")
    assert (folder / "source.png").read_bytes() == b"v2"
    assert (folder / "sweep" / "sweep.png").read_bytes() == b"sweep"
