"""The evaluation's own measures, on pictures drawn by the world generator (no model)."""

from __future__ import annotations

from dataclasses import replace

from p2p_cli.shapes import evaluate as ev
from p2p_cli.shapes.world import Obj, Scene, render


def _pair(shape: str, new_shape: str, dx: int = 0):
    o = Obj(shape, "red", "big", "center", cx=32, cy=32)
    new = replace(o, shape=new_shape, cx=32 + dx)
    return render(Scene([o])), render(Scene([new])), o, new


def test_shape_swap_in_place_counts_as_kept_though_the_centroid_moves():
    src, edited, o, new = _pair("circle", "triangle")
    assert ev._swap_outcome(src, edited, o, new, "shape")[:2] == (True, True)
    # the centroid alone would call it moved: a big triangle's centroid is 4 px below its box centre
    assert not ev._swap_outcome(src, edited, o, replace(new, shape="triangle"), "colour")[1]


def test_shape_swap_that_moves_the_object_is_not_kept():
    src, edited, o, new = _pair("square", "circle", dx=5)
    assert ev._swap_outcome(src, edited, o, new, "shape")[:2] == (True, False)


def test_colour_swap_in_place_is_kept_and_changed():
    o = Obj("square", "red", "small", "left", cx=14, cy=32)
    new = replace(o, colour="blue")
    assert ev._swap_outcome(render(Scene([o])), render(Scene([new])), o, new, "colour")[:2] == (True, True)
    assert ev._swap_outcome(render(Scene([o])), render(Scene([o])), o, new, "colour")[:2] == (False, True)


def test_edit_recipe_takes_recipe_level_overrides():
    from p2p_cli.shapes.evaluate import edit_recipe

    plain = edit_recipe("a big red circle on the left", "a big blue circle on the left", 3, 10, 7.5)
    assert plain.self_replace_max_res is None and plain.edits[0].baseline
    tuned = edit_recipe("a big red circle on the left", "a big blue circle on the left", 3, 10, 7.5,
                        {"self_replace": 0.8, "self_replace_max_res": 16})
    assert tuned.self_replace_max_res == 16 and tuned.seed == 3 and tuned.steps == 10
    assert tuned.self_for(tuned.edits[0]) != plain.self_for(plain.edits[0])
