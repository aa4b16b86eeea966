"""Inline edits: a table of prompts and the recipes they expand to, a table of malformed ones and their errors,
and arbitrary text never failing any other way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_cli.overrides import inline_recipes
from p2p_cli.recipe import RecipeError, parse_recipe
from p2p_cli.text.inline import InlineError, expand

S = "a painting of a squirrel eating a burger"

EXPANSIONS = [
    ("a painting of a [squirrel->lion] eating a burger",
     S, [{"target": "a painting of a lion eating a burger", "type": "replace"}]),
    ("a painting of a [squirrel->lion|tiger] eating a burger",
     S, [{"target": "a painting of a lion eating a burger", "type": "replace"},
         {"target": "a painting of a tiger eating a burger", "type": "replace"}]),
    ("a painting of a [squirrel->lion] eating a [burger->pizza|salad]",
     S, [{"target": "a painting of a lion eating a pizza", "type": "replace"},
         {"target": "a painting of a lion eating a salad", "type": "replace"}]),
    ("a painting of a [squirrel->red panda] eating a burger",
     S, [{"target": "a painting of a red panda eating a burger", "type": "refine"}]),
    ("a house [->in winter]", "a house", [{"target": "a house in winter", "type": "refine"}]),
    ("a [big->] house", "a big house", [{"target": "a house", "type": "refine"}]),
    ("a (smiling:5) bunny doll", "a smiling bunny doll",
     [{"target": "a smiling bunny doll", "type": "reweight", "reweight": {"smiling": 5.0}}]),
    ("a (pink:-1) bear", "a pink bear", [{"target": "a pink bear", "type": "reweight", "reweight": {"pink": -1.0}}]),
    ("a (fluffy:2) [cat->dog] on a mat", "a fluffy cat on a mat",
     [{"target": "a fluffy dog on a mat", "type": "replace", "reweight": {"fluffy": 2.0}}]),
    ("a [cat->(dog:2.5)] on a mat", "a cat on a mat",
     [{"target": "a dog on a mat", "type": "replace", "reweight": {"dog": 2.5}}]),
    ("a photo (taken at night) of a [cat->dog]", "a photo (taken at night) of a cat",
     [{"target": "a photo (taken at night) of a dog", "type": "replace"}]),
]


@pytest.mark.parametrize("text, source, edits", EXPANSIONS, ids=[e[0] for e in EXPANSIONS])
def test_expansions(text, source, edits):
    data = expand(text)
    assert data["source"] == source and data["edits"] == edits
    recipe = parse_recipe(data)  # a valid recipe, with the same types
    assert [e.type for e in recipe.edits] == [e["type"] for e in edits]


MALFORMED = [
    ("a [cat] on a mat", "[cat] at character 3 is not an edit"),
    ("a cat -> dog", "'->' at character 7 is outside [ ]"),
    ("a [cat->dog on a mat", "unmatched or malformed '[' at character 3"),
    ("a cat] on a mat", "unmatched or malformed ']' at character 6"),
    ("a [cat->dog->fox]", "has two arrows"),
    ("a [->] cat", "changes nothing"),
    ("a (cat:x) dog", "a weight at character 3 is malformed"),
    ("a plain prompt", "no inline edit in the prompt"),
    ("[cat->a|b] [dog->c|d|e]", "different numbers of alternatives (2, 3)"),
    ("[cat->] ", "a target prompt is empty"),
    ("   ", "the prompt is empty"),
]


@pytest.mark.parametrize("text, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed(text, message):
    with pytest.raises(InlineError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)").replace("|", r"\|")):
        expand(text)


def test_recipe_errors_name_the_prompt():
    [(label, err)] = inline_recipes(["a [cat] on a mat"])
    assert label == "--prompt" and isinstance(err, RecipeError)
    assert err.problems[0].startswith("prompt: [cat] at character 3 is not an edit")
    [(_, err)] = inline_recipes(["a [cat->dog] on a mat"], ["steps=0"])
    assert isinstance(err, RecipeError) and any(p.startswith("steps:") for p in err.problems)


@given(st.text(alphabet=st.sampled_from(list("ab c[]()->|:1.-5")), max_size=40))
def test_any_text_expands_or_says_why(text):
    try:
        data = expand(text)
    except InlineError:
        return
    try:
        parse_recipe(data)
    except RecipeError:
        pass


@pytest.mark.parametrize("text, message", [
    ("a big [red->|] circle", "[red->|] at character 7 offers the removal twice"),
    ("a big [red->blue|blue] circle", "[red->blue|blue] at character 7 offers 'blue' twice"),
    ("a (red->blue:2) circle", "'->' at character 7 is outside [ ]"),
    ("a (red ->blue:2) circle", "'->' at character 8 is outside [ ]"),
], ids=["double-removal", "double-word", "arrow-in-weight", "arrow-in-weight-spaced"])
def test_what_readme_calls_errors_are_errors(text, message):
    with pytest.raises(InlineError) as caught:
        expand(text)
    assert str(caught.value).startswith(message), str(caught.value)


@given(st.lists(st.sampled_from(["red", "blue", "", "green big"]), min_size=1, max_size=4))
def test_alternatives_give_distinct_edits_or_an_error(alternatives):
    text = f"a big [red->{'|'.join(alternatives)}] circle"
    try:
        data = expand(text)
    except InlineError as err:
        assert len(set(alternatives)) < len(alternatives), err  # refused only for a repeated alternative
        return
    targets = [e["target"] for e in data["edits"]]
    assert len(targets) == len(set(targets)) == len(alternatives)
