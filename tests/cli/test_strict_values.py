"""Values of the wrong kind are refused, not converted: numbers as numbers (finite), text as text. YAML 1.2
numbers such as 1e-3 are numbers (PyYAML alone reads them as text, which pydantic then converted)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_cli.overrides import read_recipe
from p2p_cli.recipe import RecipeError, parse_recipe

BASE = "source: a cat\nedits:\n  - target: a dog\n"


def problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as caught:
        read_recipe(str(path))
    return caught.value.problems


@pytest.mark.parametrize("text, line", [
    (BASE + "guidance: 1e400\n", "guidance: inf is not a finite number"),
    (BASE + "guidance: -1e400\n", "guidance: -inf is not a finite number"),
    ("source: a cat\nedits:\n  - target: a cat\n    reweight: {cat: \"nan\"}\n",
     "edits[0].reweight.cat: expected a number, got the text 'nan'; write the number without quotes"),
    (BASE + "steps: \"5\"\n", "steps: expected a number, got the text '5'; write the number without quotes"),
    (BASE + "guidance: \"7\"\n", "guidance: expected a number, got the text '7'; write the number without quotes"),
    ("source: !!binary YSBjYXQ=\nedits:\n  - target: a dog\n",
     "source: expected text, got binary data (a !!binary value); write the text itself"),
], ids=["1e400", "-1e400", "nan-text", "steps-text", "guidance-text", "binary"])
def test_refused(tmp_path, text, line):
    assert line in problems(tmp_path, text)


def test_validate_exits_2(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE + "guidance: 1e400\n")
    result = cli("validate", path)
    assert result.exit_code == 2 and "guidance: inf is not a finite number" in result.stderr


def test_yaml_1_2_numbers_are_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE + "guidance: 7.5e0\ncross_replace: 8e-1\n")
    recipe = read_recipe(str(path))
    assert recipe.guidance == 7.5 and recipe.cross_replace.default == (0.0, 0.8)


@given(st.sampled_from(["steps", "seed", "guidance", "blend_res"]), st.one_of(
    st.text(max_size=8), st.binary(max_size=4), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: f != f or f in (float("inf"), float("-inf")))))
def test_no_wrong_kind_reaches_a_number(field, value):
    data = {"source": "a cat", "edits": [{"target": "a dog"}], field: value}
    with pytest.raises(RecipeError):
        parse_recipe(json.loads(json.dumps(data, default=repr)) if isinstance(value, bytes) else data)
