"""The Python API checks the recipe it runs, also one changed after loading: RecipeError lines, before any work."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import p2p_cli as p2p
from p2p_cli.recipe import RecipeError

SOURCE = "a painting of a squirrel eating a burger"


def recipe():
    return p2p.Recipe(source=SOURCE, steps=2, size=(128, 128),
                      edits=[{"target": "a painting of a lion eating a burger"}])


@pytest.mark.parametrize("change, line", [
    (lambda r: setattr(r, "steps", 10**9), "steps: Input should be less than or equal to 1000"),
    (lambda r: setattr(r, "guidance", float("nan")), "guidance: nan is not a finite number"),
    (lambda r: setattr(r, "edits", []), "edits: List should have at least 1 item"),
    (lambda r: setattr(r, "seed", 2**70), "seed: Input should be less than"),
    (lambda r: setattr(r, "seed", -1), "seed: Input should be greater than or equal to 0"),
    (lambda r: setattr(r.edits[0], "target", None), "edits[0].target: Input should be a valid string"),
    (lambda r: setattr(r.edits[0], "cross_replace", [0.9, 0.1]), "edits[0].cross_replace: start 0.9 is after end 0.1"),
], ids=["steps", "nan-guidance", "no-edits", "huge-seed", "negative-seed", "none-target", "backwards-window"])
def test_a_changed_recipe_is_checked_again(tiny_model, change, line):
    r = recipe()
    change(r)
    start = time.perf_counter()
    with pytest.raises(RecipeError) as caught:
        p2p.edit(tiny_model, r, maps=False)
    assert any(p.startswith(line) for p in caught.value.problems), caught.value.problems
    assert time.perf_counter() - start < 5


def test_building_a_bad_recipe_raises_recipe_error():
    with pytest.raises(RecipeError) as caught:
        p2p.Recipe(source="", edits=[])
    assert "source: String should have at least 1 character" in caught.value.problems


def test_loras_are_not_silently_ignored(tiny_model, tmp_path):
    r = p2p.Recipe(source=SOURCE, steps=2, size=(128, 128), loras=[{"path": str(tmp_path / "missing.safetensors")}],
                   edits=[{"target": "a painting of a lion eating a burger"}])
    with pytest.raises(RecipeError, match="loras\\[0\\].path: no file at"):
        p2p.edit(tiny_model, r, maps=False)
    (tmp_path / "style.safetensors").write_bytes(b"x")
    r.loras[0].path = str(tmp_path / "style.safetensors")
    with pytest.raises(RecipeError, match="the model was not loaded with these LoRA files"):
        p2p.edit(tiny_model, r, maps=False)


def test_an_unchanged_recipe_runs(tiny_model):
    result = p2p.edit(tiny_model, recipe(), maps=False)
    assert len(result.images) == 2


BAD = {
    "steps": st.one_of(st.integers(max_value=0), st.integers(min_value=1001)),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63)),
    "guidance": st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf"))),
    "blend_res": st.integers(max_value=0),
}


@given(st.sampled_from(sorted(BAD)).flatmap(lambda f: st.tuples(st.just(f), st.one_of(BAD[f], st.text(max_size=4)))))
def test_no_assigned_value_escapes_the_check(change):
    from p2p_cli.api import as_recipe

    field, value = change
    r = recipe()
    setattr(r, field, value)
    with pytest.raises(RecipeError):
        as_recipe(r)
