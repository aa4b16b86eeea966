"""Property-based fuzzing of everything that reads user input: the recipe loader and --set, standard input, the
picture loader and its crop rules, and the inversion-cache reader. Arbitrary input raises only the documented
errors and writes nothing. 150 examples per property by default; P2P_HYPOTHESIS_PROFILE=slow (make test-slow)
draws 3000."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from p2p_cli.overrides import read_recipe  # noqa: E402
from p2p_cli.recipe import Recipe, RecipeError, parse_recipe  # noqa: E402

KEYS = ["name", "model", "seed", "steps", "guidance", "size", "negative_prompt", "source", "cross_replace",
        "self_replace", "self_replace_max_res", "blend_res", "baseline", "image", "crop", "inversion", "edits"]
EDIT_KEYS = ["target", "type", "cross_replace", "self_replace", "reweight", "local_blend", "baseline"]
BASE = "source: a painting of a squirrel eating a burger\nedits:\n  - target: a painting of a lion eating a burger\n"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["replace", "refine", "reweight", "null-text", "a cat", "", " ", "1e400",
                                           "../x", ".hidden", "default"]),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(KEYS + EDIT_KEYS)),
                                            inner, max_size=6)),
    max_leaves=15,
)
# recipe-shaped documents: the schema's keys with arbitrary values, so validation goes deep
edits = st.lists(st.dictionaries(st.sampled_from(EDIT_KEYS), trees, max_size=5), max_size=3)
recipes = st.builds(lambda top, es: {**top, "edits": es} if es is not None else top,
                    st.dictionaries(st.sampled_from(KEYS), trees, max_size=8), st.one_of(st.none(), edits))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_as_a_recipe_file(folder, data):
    path = folder / "r.yaml"
    path.write_bytes(data)
    before = _files(folder)
    try:
        assert isinstance(read_recipe(str(path)), Recipe)
    except RecipeError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
    assert _files(folder) == before


@given(st.text(max_size=400).map(lambda t: BASE + t))
def test_a_good_recipe_followed_by_arbitrary_text(folder, text):
    path = folder / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        read_recipe(str(path))
    except RecipeError as err:
        assert err.problems


@given(st.one_of(trees, recipes))
def test_arbitrary_trees(tree):
    try:
        recipe = parse_recipe(tree)
    except RecipeError as err:
        assert err.problems and all(isinstance(p, str) for p in err.problems)
        return
    assert recipe.source.strip() and recipe.edits  # what validation promises
    json.dumps(recipe.model_dump(mode="json"), allow_nan=False)  # run.json can hold it: finite, text


@hypothesis.settings(max_examples=max(40, hypothesis.settings().max_examples // 4))
@given(recipes)
def test_arbitrary_trees_through_yaml_and_json(folder, tree):
    import yaml

    for text in (yaml.safe_dump(tree, allow_unicode=True), json.dumps(tree)):
        path = folder / "r.yaml"
        try:
            path.write_text(text, encoding="utf-8")
        except UnicodeEncodeError:  # a lone surrogate cannot be written as UTF-8
            continue
        try:
            read_recipe(str(path))
        except RecipeError as err:
            assert err.problems


assignments = st.one_of(
    st.text(max_size=60),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS + [f"edits.0.{k}" for k in EDIT_KEYS] +
                                                    ["edits[0].target", "edits.9.target", "edits", "x.y.z"]),
              st.one_of(st.text(max_size=40), st.sampled_from(["[0.2, 0.8]", "{lion: 0.4}", "&a [*a]", "true",
                                                               ".nan", "{a: 1, a: 2}", "[[[[[[]]]]]]", "-1", ""]))),
)


@given(st.lists(assignments, max_size=3))
def test_arbitrary_set_assignments(folder, sets):
    path = folder / "base.yaml"
    path.write_text(BASE)
    try:
        read_recipe(str(path), sets)
    except RecipeError as err:
        assert err.problems
    assert path.read_text() == BASE  # --set never writes the file


@pytest.fixture(scope="module")
def cli_runner():
    from typer.testing import CliRunner

    from p2p_cli.cli.main import app

    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, list(args), **kw)


@hypothesis.settings(max_examples=max(30, hypothesis.settings().max_examples // 5))
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: (BASE + t).encode("utf-8",
                                                                                                  "surrogatepass"))))
def test_standard_input_of_validate(cli_runner, data):
    result = cli_runner("validate", "-", input=data)
    assert result.exit_code in (0, 2), result.output
    assert "error: unexpected " not in result.stderr and "Traceback" not in result.stderr


# --- pictures -------------------------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png(24, 16)


@given(st.one_of(st.binary(max_size=400),
                 st.builds(lambda cut, flips: bytes(b ^ flips.get(i, 0) for i, b in enumerate(PNG[:cut])),
                           st.integers(0, len(PNG)), st.dictionaries(st.integers(0, len(PNG) - 1),
                                                                     st.integers(1, 255), max_size=4))))
def test_arbitrary_bytes_as_a_picture(folder, data):
    from p2p_cli.render.load import ImageError, check_picture, load_image

    path = folder / "p.png"
    path.write_bytes(data)
    try:
        check_picture(path)
        image = load_image(path, (16, 16))
    except ImageError as err:
        assert str(err)
        return
    assert image.shape == (3, 16, 16) and float(image.min()) >= 0 and float(image.max()) <= 1


sides = st.integers(1, 3000)
sizes = st.tuples(st.integers(1, 64).map(lambda n: 8 * n), st.integers(1, 64).map(lambda n: 8 * n))


@given(sides, sides, sizes)
def test_the_centre_box_lies_inside_and_has_the_aspect(width, height, size):
    from p2p_cli.render.load import centre_box

    left, top, right, bottom = centre_box(width, height, size)
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    w, h = right - left, bottom - top
    assert w == width or h == height  # the largest box: it spans one side
    assert abs(w / h - size[1] / size[0]) <= max(1 / h, 1 / w) * (size[1] / size[0] + 1) + 1e-9


@given(st.lists(st.one_of(st.integers(-10, 5000), st.booleans(), st.floats(), st.text(max_size=3)), max_size=6),
       sides, sides, sizes)
def test_crop_rules_refuse_with_their_errors_only(box, width, height, size):
    from p2p_cli.recipe import parse_crop
    from p2p_cli.render.load import ImageError, check_box

    try:
        crop = parse_crop(box)
    except ValueError:
        return
    left, top, right, bottom = crop
    assert 0 <= left < right and 0 <= top < bottom
    try:
        check_box(crop, width, height, size)
    except ImageError as err:
        assert str(err).startswith(f"crop {list(crop)} ")
        return
    assert right <= width and bottom <= height
    assert abs(((right - left) / (bottom - top)) / (size[1] / size[0]) - 1) <= 0.05 + 1e-9


# --- the inversion cache --------------------------------------------------------------------------------------


def _good_entry() -> bytes:
    import torch
    from safetensors.torch import save as save_bytes

    meta = {"format": "p2p-inversion/1", "key": "k", "method": "ddim", "seconds": "0.5", "vae_psnr": "30.0",
            "settings": json.dumps({"method": "ddim", "steps": 2, "prompt": "a cat"})}
    return save_bytes({"latent": torch.zeros(1, 4, 2, 2), "uncond": torch.zeros(2, 3, 4)}, metadata=meta)


GOOD = _good_entry()


@given(st.one_of(st.binary(max_size=600),
                 st.builds(lambda cut, flips: bytes(b ^ flips.get(i, 0) for i, b in enumerate(GOOD[:cut])),
                           st.integers(0, len(GOOD)), st.dictionaries(st.integers(0, len(GOOD) - 1),
                                                                      st.integers(1, 255), max_size=6))))
def test_arbitrary_bytes_as_a_cache_entry(folder, data):
    import torch

    from p2p_cli.files.inversion_cache import CacheEntryError, load_inversion, read_inversion

    path = folder / "k.safetensors"
    path.write_bytes(data)
    try:
        inversion = read_inversion(path, "k")
    except CacheEntryError as err:
        assert str(err)
        assert load_inversion(path, "k") is None
        return
    for tensor in (inversion.latent, inversion.uncond):  # what is accepted is sane
        assert tensor.dtype == torch.float32 and bool(torch.isfinite(tensor).all())
    assert inversion.latent.dim() == 4 and inversion.uncond.dim() == 3 and isinstance(inversion.settings, dict)


def test_the_good_entry_reads():
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / "k.safetensors"
        path.write_bytes(GOOD)
        from p2p_cli.files.inversion_cache import read_inversion

        assert read_inversion(path, "k").method == "ddim"
