"""--set KEY=VALUE: dotted keys into the recipe document, YAML values, errors that name the key."""

from __future__ import annotations

import pytest

from p2p_cli.overrides import apply_overrides, parse_assignment, read_recipe
from p2p_cli.recipe import RecipeError


def doc():
    return {"source": "a cat", "edits": [{"target": "a dog"}]}


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("guidance=5", ["guidance"], 5),
        ("edits.0.cross_replace=0.6", ["edits", 0, "cross_replace"], 0.6),
        ("edits[0].self_replace=[0.1, 0.5]", ["edits", 0, "self_replace"], [0.1, 0.5]),
        ("edits.0.reweight={pink: -1}", ["edits", 0, "reweight"], {"pink": -1}),
        ("source=a cat: on a mat", ["source"], "a cat: on a mat"),
        ("source=a cat, on a mat", ["source"], "a cat, on a mat"),
        ("baseline=true", ["baseline"], True),
    ],
)
def test_parse_assignment(text, path, value):
    assert parse_assignment(text) == (path, value)


def test_empty_value_removes_the_key():
    data = apply_overrides({**doc(), "steps": 3}, ["steps="])
    assert "steps" not in data


def test_apply_creates_nested_mappings():
    data = apply_overrides(doc(), ["edits.0.local_blend.words=[cat, dog]", "edits.0.reweight.dog=2"])
    assert data["edits"][0] == {"target": "a dog", "local_blend": {"words": ["cat", "dog"]}, "reweight": {"dog": 2}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("edits.1.target=x", "--set edits.1.target=x: edits[1] does not exist (edits has 1 items)"),
        ("edits.target=x", "--set edits.target=x: edits is a list; name an item by number, e.g. .0"),
        ("source.x=1", "--set source.x=1: source is not a mapping"),
        ("a..b=1", "--set a..b=1: 'a..b' is not a dotted key such as edits.0.target"),
        ("steps=[1, 2", "--set steps=[1, 2: the value is not valid YAML (expected ',' or ']', but got '<stream end>')"),
        ("steps", "--set steps: expected KEY=VALUE, e.g. --set edits.0.cross_replace=0.6"),
    ],
)
def test_bad_assignments(text, message):
    with pytest.raises(ValueError) as err:
        apply_overrides(doc(), [text])
    assert str(err.value) == message


def test_read_recipe_validates_after_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("source: a cat\nedits:\n  - target: a dog\n")
    assert read_recipe(str(path), ["steps=7"]).steps == 7
    with pytest.raises(RecipeError) as err:
        read_recipe(str(path), ["edits.0.cross_replace=[0.5, 0.2]"])
    assert err.value.problems == ["edits[0].cross_replace: start 0.5 is after end 0.2"]
    assert err.value.source == str(path)
    assert read_recipe("-", stdin_text="source: a cat\nedits: [{target: a dog}]").name == "recipe"


def test_split_documents_reads_yaml_streams_and_json_lines():
    from p2p_cli.manifests import split_documents

    one = "source: a cat\nedits: [{target: a dog}]\n"
    assert split_documents(one) == [one]
    assert split_documents("---\n" + one) == ["\n" + one]  # a leading marker is not a second recipe
    assert len(split_documents(one + "---\n" + one + "--- # the third\n" + one)) == 3
    assert split_documents('{"source": "a"}\n\n{"source": "b"}\n') == ['{"source": "a"}', '{"source": "b"}']
    from p2p_cli.manifests import numbered_documents

    assert [k for k, _ in numbered_documents('{"source": "a"}\n\n{"source": "b"}\n')] == [1, 3]  # JSON: lines
    assert [k for k, _ in numbered_documents("---\n" + one + "---\n\n" + one)] == [1, 2]  # YAML: documents
    block = "source: |\n  a cat\n  ---\nedits: [{target: a dog}]\n"  # an indented --- is text, not a marker
    assert split_documents(block) == [block]
