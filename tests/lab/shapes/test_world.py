"""The shapes world: deterministic sampling, captions that name what is drawn, the held-out rule."""

import numpy as np

from lab.shapes.captions import caption
from lab.shapes.oracle import read
from lab.shapes.world import (
    BACKGROUNDS, COLOURS, HELDOUT, SIDE, heldout_scenes, is_heldout, render, sample_scene,
)  # fmt: skip


def scenes(n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(n)]


def test_same_seed_same_pictures():
    a, b = scenes(20, seed=3), scenes(20, seed=3)
    assert [caption(s) for s in a] == [caption(s) for s in b]
    assert all(np.array_equal(render(x), render(y)) for x, y in zip(a, b))
    assert [caption(s) for s in scenes(20, seed=4)] != [caption(s) for s in a]


def test_render_shape_and_colours():
    for s in scenes(50):
        img = render(s)
        assert img.shape == (SIDE, SIDE, 3) and img.dtype == np.uint8
        present = {tuple(c) for c in img.reshape(-1, 3)}
        assert present == {BACKGROUNDS[s.background]} | {COLOURS[o.colour] for o in s.objects}


def test_caption_wording():
    rng = np.random.default_rng(0)
    seen = set()
    while len(seen) < 2:
        s = sample_scene(rng)
        seen.add(len(s.objects))
        if len(s.objects) == 1 and s.objects[0].position == "center":
            assert " in the center on a " in caption(s)
    s = scenes(1, seed=0)[0]
    assert caption(s) == caption(s)
    assert caption(s).endswith(f"on a {s.background} background")


def test_captions_name_what_is_drawn():
    """Every word of the caption's objects is what the oracle reads from the picture, in the same order."""
    for s in scenes(100, seed=1):
        cap = caption(s)
        found = read(render(s))
        assert len(found) == len(s.objects)
        for o, f in zip(s.objects, found):
            assert (o.size, o.colour, o.shape) == (f.size, f.colour_name, f.shape)
            assert f"{o.size} {o.colour} {o.shape}" in cap


def test_objects_apart_and_positions_distinct():
    for s in scenes(300, seed=2):
        if len(s.objects) == 2:
            a, b = s.objects
            assert a.position != b.position
            from lab.shapes.world import shape_mask, SIZES

            ma = shape_mask(a.shape, *a.centre(), SIZES[a.size])
            mb = shape_mask(b.shape, *b.centre(), SIZES[b.size])
            assert not (ma & mb).any()


def test_heldout_never_sampled_for_training():
    train = {caption(s) for s in scenes(5000, seed=5)}
    assert not any(is_heldout(o) for s in scenes(2000, seed=6) for o in s.objects)
    held = heldout_scenes(120, seed=0)
    assert len(held) == 120
    assert all(any(is_heldout(o) for o in s.objects) for s in held)
    assert not train & {caption(s) for s in held}
    assert {(o.shape, o.colour, o.position) for s in held for o in s.objects if is_heldout(o)} <= HELDOUT


def test_caption_without_background():
    s = scenes(1, seed=0)[0]
    assert caption(s, background=False) == caption(s).rsplit(" on a ", 1)[0]
    assert "background" not in caption(s, background=False)
