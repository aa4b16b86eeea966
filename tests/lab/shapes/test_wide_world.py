"""The wide world: continuous sizes and places, up to three objects, captions that may leave the place out; the
oracle reads it, and its held-out rule holds. The grid world stays what it was (test_world.py)."""

import hashlib

import numpy as np

from lab.shapes.captions import PLACE, caption
from lab.shapes.evaluate import free_swap_cases
from lab.shapes.oracle import check, check_unplaced
from lab.shapes.world import (SIDE, WIDE_RADII, heldout_scenes, is_heldout, render, sample_scene,
                                  sample_wide_scene, wide_heldout_scenes)

PLACE_WORDS = {"top", "bottom", "left", "right", "center"}


def wide(n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_wide_scene(rng) for _ in range(n)]


def test_wide_scenes_vary_continuously_and_hold_up_to_three_objects():
    scenes = wide(400)
    counts = {len(s.objects) for s in scenes}
    assert counts == {1, 2, 3}
    objs = [o for s in scenes for o in s.objects]
    centres = {(round(o.cx, 3), round(o.cy, 3)) for o in objs}
    assert len(centres) > 0.95 * len(objs)  # not a handful of anchors
    xs = np.array([o.cx for o in objs])
    assert xs.min() < 10 and xs.max() > SIDE - 10
    for o in objs:
        lo, hi = WIDE_RADII[o.size]
        assert lo <= o.r() <= hi
    assert [caption(s) for s in wide(20, seed=3)] == [caption(s) for s in wide(20, seed=3)]


def test_about_half_the_captions_name_no_place():
    scenes = wide(400, seed=1)
    unplaced = [s for s in scenes if not s.places]
    assert 0.35 < len(unplaced) / len(scenes) < 0.65
    for s in unplaced:
        assert not PLACE_WORDS & set(caption(s).split())
    for s in scenes:
        if s.places:
            assert all(PLACE[o.position] in caption(s) for o in s.objects)


def test_oracle_reads_every_wide_scene():
    for s in wide(150, seed=2):
        img = render(s)
        placed, unplaced = check(s, img), check_unplaced(s, img)
        assert placed == {"colour": 1.0, "shape": 1.0, "size": 1.0, "position": 1.0, "count": 1.0,
                          "background": 1.0}, caption(s)
        assert unplaced == {"colour": 1.0, "shape": 1.0, "size": 1.0, "count": 1.0, "background": 1.0}


def test_unplaced_check_fails_a_wrong_picture():
    s = next(s for s in wide(50, seed=4) if len(s.objects) == 1)
    other = next(t for t in wide(200, seed=5) if len(t.objects) == 1 and t.objects[0].colour != s.objects[0].colour
                 and t.background == s.background)
    assert check_unplaced(s, render(other))["colour"] == 0.0


def test_training_never_draws_a_heldout_object_and_heldout_scenes_hold_one():
    assert not any(is_heldout(o) for s in wide(2000, seed=6) for o in s.objects)
    held = wide_heldout_scenes(30, seed=0)
    assert all(any(is_heldout(o) for o in s.objects) and not s.places for s in held)
    assert all(s.places for s in wide_heldout_scenes(10, seed=0, places=True))


def test_grid_world_unchanged_by_the_wide_one():
    """The grid world's draws and pictures (what the bundled UNet is measured on) are the ones it made before
    the wide world existed: the digest was taken at ca71ab1, before world.py changed."""
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(200)] + heldout_scenes(50, seed=1)
    assert all(o.radius == -1 for s in scenes for o in s.objects) and all(s.places for s in scenes)
    digest = hashlib.sha256()
    for s in scenes:
        digest.update(caption(s).encode())
        digest.update(render(s).tobytes())
    assert digest.hexdigest()[:16] == "60857c560a01d3f4"


def test_free_swaps_change_one_colour_word_to_an_unused_colour():
    for case in free_swap_cases(20):
        src, tgt = caption(case.scene).split(), caption(case.target).split()
        assert len(src) == len(tgt) and sum(a != b for a, b in zip(src, tgt)) == 1
        new = case.target.objects[case.k].colour
        assert new not in {o.colour for o in case.scene.objects}
        assert not PLACE_WORDS & set(src)


def test_the_mixed_world_draws_half_its_scenes_from_each_world_and_no_heldout_object():
    from lab.shapes.world import sample_mixed_scene

    rng = np.random.default_rng(3)
    scenes = [sample_mixed_scene(rng) for _ in range(600)]
    from_grid = [all(o.radius == -1 for o in s.objects) for s in scenes]  # the grid world's objects have no radius
    grid = [s for s, g in zip(scenes, from_grid) if g]
    wide_scenes = [s for s, g in zip(scenes, from_grid) if not g]
    assert 0.43 < len(grid) / len(scenes) < 0.57
    assert any(not s.places for s in wide_scenes) and all(s.places for s in grid)
    assert not any(is_heldout(o) for s in scenes for o in s.objects)


def test_the_unplaced_grid_world_keeps_grid_layouts_and_drops_the_place_words_from_half_the_captions():
    from lab.shapes.world import POSITIONS, sample_grid_unplaced_scene

    rng = np.random.default_rng(4)
    scenes = [sample_grid_unplaced_scene(rng) for _ in range(400)]
    unplaced = [s for s in scenes if not s.places]
    assert 0.4 < len(unplaced) / len(scenes) < 0.6
    assert all(o.radius == -1 and o.position in POSITIONS for s in scenes for o in s.objects)
    assert not any(p in caption(s) for s in unplaced for p in PLACE.values() if p)
    assert all(any(p in caption(s) for p in PLACE.values() if p) for s in scenes if s.places)
    assert not any(is_heldout(o) for s in scenes for o in s.objects)
