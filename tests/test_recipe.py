"""The recipes in recipes/ are valid against the schema and the CLIP tokenizer, with the intended edit types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from p2p_cli.engine.pipeline import check_recipe
from p2p_cli.overrides import read_recipe as load_recipe
from p2p_cli.recipe import parse_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 6


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates(path, tokenizer):
    recipe = load_recipe(path)
    assert check_recipe(recipe, tokenizer) == []
    assert recipe.name == path.stem


@pytest.mark.parametrize(
    "stem, types",
    [
        ("squirrel-lion", ["replace", "replace", "replace"]),
        ("burger-lasagne", ["replace"]),
        ("house-seasons", ["refine", "refine"]),
        ("bunny-smiling", ["reweight"]),
        ("pink-bear", ["reweight"]),
        ("pea-soup", ["refine", "refine"]),
        ("sdxl-cat-tiger", ["replace", "refine"]),
    ],
)
def test_reference_edits_have_their_types(stem, types):
    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / f"{stem}.yaml")
    assert [e.type for e in recipe.edits] == types
    if stem.startswith("sdxl-"):
        assert recipe.model == "stabilityai/stable-diffusion-xl-base-1.0"
    elif recipe.model is not None and not stem.startswith("shapes-"):
        assert recipe.model == "CompVis/stable-diffusion-v1-4"


def test_readme_examples_validate(tokenizer):
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text() + (root / "docs" / "reference.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 6
    for block in blocks:
        recipe = parse_recipe(yaml.safe_load(block))
        assert check_recipe(recipe, tokenizer) == []
