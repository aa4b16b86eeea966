"""The Python API as a diffusers user in a notebook meets it (issue 27): result.edits are the edits, a result shows
itself as its grid with a short repr, PIL pictures are taken where paths are, help(p2p.Recipe) describes every
field, and a bar shows progress when someone watches."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

import p2p_cli as p2p

FAST = {"steps": 4}
RECIPE = {"name": "nb", "source": "a big red circle on the left on a white background", "steps": 4, "seed": 1,
          "edits": [{"target": "a big blue circle on the left on a white background"},
                    {"target": "a big red square on the left on a white background"}]}


@pytest.fixture(scope="module")
def shapes():
    return p2p.load_model("shapes", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def result(shapes):
    return p2p.edit(shapes, dict(RECIPE), maps=False)


def test_edits_are_the_edited_pictures_and_images_0_is_the_source(result):
    assert len(result.edits) == 2
    for mine, theirs in zip(result.edits, result.images[1:]):
        assert mine.tobytes() == theirs.tobytes()
    assert result.images[0].tobytes() == result.source.tobytes()
    assert result.edits[0].tobytes() != result.source.tobytes()
    assert "result.edits" in p2p.edit.__doc__ and "images[0]" in p2p.edit.__doc__


def test_a_result_shows_as_its_grid_with_a_short_repr(result):
    text = repr(result)
    assert "\n" not in text and len(text) < 200
    assert "'nb'" in text and "2 edits" in text and "64x64" in text
    shown = Image.open(io.BytesIO(result._repr_png_()))
    assert shown.tobytes() == result.grid().tobytes()


def test_a_pil_picture_is_taken_by_invert_and_as_a_recipes_image(shapes, tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    picture.save(tmp_path / "photo.png")
    prompt = RECIPE["source"]
    from_pil = p2p.invert(shapes, picture, prompt, steps=4)
    from_file = p2p.invert(shapes, tmp_path / "photo.png", prompt, steps=4)
    assert from_pil.inversion.latent.equal(from_file.inversion.latent)
    assert from_pil.cached is False and from_file.cached is True  # one picture, one cache entry
    edited = p2p.edit(shapes, {**RECIPE, "image": picture}, maps=False)
    assert edited.real is not None and np.asarray(edited.source).shape == (64, 64, 3)
    assert sorted(p.name for p in (tmp_path / "cache" / "pictures").iterdir())[0].endswith(".png")


def test_help_of_recipe_describes_every_field():
    import pydoc

    from p2p_cli.recipe import Edit, LocalBlend

    for model in (p2p.Recipe, Edit, LocalBlend):
        text = pydoc.render_doc(model, renderer=pydoc.plaintext)
        for name in model.model_fields:
            assert f"    {name}: " in text, (model.__name__, name)


def test_progress_auto_draws_a_bar_only_when_someone_watches(monkeypatch):
    from p2p_cli.api import _bar

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    with _bar("auto", "edit") as update:
        assert update is None  # pytest's captured stderr: nobody watches
    mine = []
    with _bar(lambda done, total: mine.append(done), "edit") as update:
        update(1, 2)
    assert mine == [1]
    monkeypatch.setitem(sys.modules, "ipykernel", object())  # as in a notebook
    with _bar("auto", "edit") as update:
        assert callable(update)
        update(1, 4)
        update(4, 4)
