"""The evaluation's own measures, on pictures drawn by the world generator (no model)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lab.shapes import evaluate as ev
from lab.shapes.world import Obj, Scene, render


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
    from lab.shapes.evaluate import edit_recipe

    plain = edit_recipe("a big red circle on the left", "a big blue circle on the left", 3, 10, 7.5)
    assert plain.self_replace_max_res is None and plain.edits[0].baseline
    tuned = edit_recipe("a big red circle on the left", "a big blue circle on the left", 3, 10, 7.5,
                        {"self_replace": 0.8, "self_replace_max_res": 16})
    assert tuned.self_replace_max_res == 16 and tuned.seed == 3 and tuned.steps == 10
    assert tuned.self_for(tuned.edits[0]) != plain.self_for(plain.edits[0])


def test_fresh_sets_are_other_held_out_cases_and_fresh_0_is_the_reported_one():
    from lab.shapes.captions import caption
    from lab.shapes.world import is_heldout

    reported = ev.swap_cases(20, "colour")
    scene_seed, first = ev.fresh_seeds(0, 0)
    again = ev.swap_cases(20, "colour", seed=scene_seed, first_seed=first)
    assert [(caption(c.scene), c.seed) for c in again] == [(caption(c.scene), c.seed) for c in reported]
    scene_seed, first = ev.fresh_seeds(1, 0)
    fresh = ev.swap_cases(20, "colour", seed=scene_seed, first_seed=first)
    assert [c.scene for c in fresh] != [c.scene for c in reported]  # captions may repeat: the space is small
    assert all(any(is_heldout(o) for o in c.scene.objects) for c in fresh)
    assert {c.seed for c in fresh}.isdisjoint({c.seed for c in reported})
    # every measurement's (scene seed, first noise seed) differs between sets, and from the real pictures' 3 and 4
    used = {ev.fresh_seeds(k, base)[0] for k in range(3) for base in (0, 1, 2)}
    assert len(used) == 9 and not used & {3, 4}


def test_outside_change_is_none_when_the_objects_cover_the_picture():
    import numpy as np

    o = Obj("square", "red", "big", "center", cx=32, cy=32)
    img = render(Scene([o]))
    assert ev._outside_change(img, img, o) == 0.0
    covered = np.full((64, 64, 3), 255, np.uint8)
    covered[2:-2, 2:-2] = (220, 40, 40)  # a red square up to 2 px from every edge: grown by 2 px it is all
    assert ev._outside_change(covered, covered, o) is None


def test_free_place_outcome_finds_the_source_object_by_colour_wherever_it_is():
    from lab.shapes.world import wide_heldout_scenes

    scene = next(s for s in wide_heldout_scenes(40, seed=0) if len(s.objects) == 1)
    o = scene.objects[0]
    moved = replace(o, cx=o.cx + 8 if o.cx < 32 else o.cx - 8)  # the model drew it elsewhere than the scene says
    new = replace(moved, colour=next(c for c in ("red", "green", "blue") if c != o.colour))
    src, same_place, elsewhere = (render(Scene([x], scene.background)) for x in (moved, new,
                                                                                 replace(new, cy=new.cy + 16 if new.cy < 32 else new.cy - 16)))
    assert ev._free_outcome(src, same_place, scene, 0, new)[:2] == (True, True)
    changed, kept, dist = ev._free_outcome(src, elsewhere, scene, 0, new)
    assert not kept and dist > 3


def test_a_free_place_miss_says_why():
    """free_miss: right (None), the source colour kept, another colour there, nothing there, no source object."""
    import numpy as np
    from lab.shapes.world import wide_heldout_scenes

    scene = next(s for s in wide_heldout_scenes(40, seed=0) if len(s.objects) == 1)
    o = scene.objects[0]
    new, other = (replace(o, colour=c) for c in [c for c in ("red", "green", "blue", "yellow") if c != o.colour][:2])
    src = render(Scene([o], scene.background))
    blank = np.broadcast_to(src[0, 0], src.shape).copy()  # the background alone
    drawn = {name: render(Scene([x], scene.background)) for name, x in (("new", new), ("other", other))}
    assert ev.free_miss(src, drawn["new"], scene, 0, new) is None
    assert ev.free_miss(src, src, scene, 0, new) == "source colour"
    assert ev.free_miss(src, drawn["other"], scene, 0, new) == "another colour"
    assert ev.free_miss(src, blank, scene, 0, new) == "nothing there"
    assert ev.free_miss(blank, drawn["new"], scene, 0, new) == "no source object"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # blank pictures: local blend's means are of no case
def test_set_options_reach_every_measured_edit(monkeypatch, capsys):
    """`evaluate --set KEY=VALUE` applies a recipe-level setting to each edit it measures (here: what the swaps
    and local blend ran with; no model samples: run_edit is replaced)."""
    import torch

    seen = []

    class Out:
        images = torch.zeros(3, 3, 64, 64)

    monkeypatch.setattr(ev, "run_edit", lambda model, recipe, **kw: seen.append(recipe) or Out())
    monkeypatch.setattr("p2p_cli.models.load_model", lambda *a, **k: None)
    ev.main(["--n", "2", "--only", "colour,blend", "--set", "self_replace=0.2", "--set", "text_mass=target"])
    assert len(seen) >= 3 and all(r.self_replace == (0.0, 0.2) and r.text_mass == "target" for r in seen)
    assert '"text_mass": "target"' in capsys.readouterr().out


def test_real_model_defaults_measure_the_windows_the_model_folder_ships(monkeypatch):
    """`--real-model-defaults` edits the real pictures with the model's p2p-defaults.json (its windows, and the
    inversion an image: recipe gets there unless --real-methods names others); a --real-* option wins."""
    from types import SimpleNamespace

    from p2p_cli.family_defaults import FolderDefaults, ImageDefaults, read_folder_defaults
    from p2p_cli.resolve import BUNDLED

    defaults, seen, methods = read_folder_defaults(BUNDLED["shapes"]), {}, []

    def eval_real(model, n, steps, guidance, method, recipe, seed):
        seen.update(recipe)
        methods.append(method)

    monkeypatch.setattr("p2p_cli.models.load_model", lambda *a, **k: SimpleNamespace(defaults=defaults))
    monkeypatch.setattr(ev, "eval_real", eval_real)
    ev.main(["--only", "real", "--real-methods", "direct", "--real-model-defaults", "--real-self-replace", "0.3"])
    windows = defaults.image.model_dump(exclude_none=True, exclude={"inversion"})
    assert seen == {**windows, "self_replace": 0.3} and methods == ["direct"]
    ev.main(["--only", "real", "--real-model-defaults"])
    assert methods == ["direct", defaults.image.inversion] and defaults.image.inversion == "ddpm"
    assert seen["cross_replace"] == json.loads((BUNDLED["shapes"] / "p2p-defaults.json").read_text())["image"][
        "cross_replace"]
    # the transformer model's folder: flowedit, and its edit_start reaches the edits as a window does
    defaults = read_folder_defaults(BUNDLED["shapes-mmdit"])
    ev.main(["--only", "real", "--real-model-defaults"])
    assert methods[-1:] == ["flowedit"] and seen["edit_start"] == defaults.image.edit_start == 0.1
    # a folder that names no inversion is measured at the one its recipes get, direct, not at every method (which
    # ran null-text inversion a hundred times for a line that reads one)
    defaults = FolderDefaults(image=ImageDefaults(cross_replace=0.8))
    ev.main(["--only", "real", "--real-model-defaults"])
    assert methods[-1:] == ["direct"] and len(methods) == 4
