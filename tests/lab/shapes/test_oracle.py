"""The oracle reads the generator's own pictures back."""

import numpy as np

from lab.shapes.oracle import ATTRIBUTES, check, estimate_background, read
from lab.shapes.world import BACKGROUNDS, Obj, Scene, heldout_scenes, render, sample_scene


def test_recovers_attributes_of_random_scenes():
    rng = np.random.default_rng(11)
    sc = [sample_scene(rng) for _ in range(200)] + heldout_scenes(20, seed=1)
    ok = [min(check(s, render(s)).values()) == 1.0 for s in sc]
    assert np.mean(ok) >= 0.98


def test_single_object_fields():
    s = Scene([Obj("triangle", "yellow", "big", "bottom right")], "gray")
    img = render(s)
    assert np.allclose(estimate_background(img), BACKGROUNDS["gray"])
    (f,) = read(img)
    assert (f.shape, f.colour_name, f.size, f.position) == ("triangle", "yellow", "big", "bottom right")
    assert f.mask.shape == (64, 64) and f.area == f.mask.sum()
    assert set(check(s, img)) == set(ATTRIBUTES) | {"count", "background"}


def test_empty_picture_and_noise():
    img = render(Scene([], "black"))
    assert read(img) == []
    img[5, 5] = 255  # one stray pixel is not an object
    assert read(img) == []
    assert check(Scene([Obj("circle", "red", "small", "left")], "black"), img)["count"] == 0.0
