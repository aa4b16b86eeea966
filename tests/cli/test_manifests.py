"""Manifests: a JSON-lines file is read line by line (one bad line is that line's error, the others run), and
the bounds on a recipe apply to each record, so a manifest may be as long as the work it holds."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_cli.manifests import documents, read_recipes
from p2p_cli.recipe import MAX_RECIPE_BYTES, Recipe, RecipeError

SOURCE = "a painting of a squirrel eating a burger"
LINE = {"source": SOURCE, "steps": 2, "size": 128, "edits": [{"target": "a painting of a lion eating a burger"}]}


def good(name: str) -> str:
    return json.dumps({**LINE, "name": name})


@pytest.mark.parametrize("bad, problem", [
    ('{"name": "two", "source": "a cat", "ed', "not a JSON object: Unterminated string"),
    ("[1, 2]", "expected a JSON object (one recipe), got [1, 2]"),
    ("null", "expected a JSON object (one recipe), got null"),
    ("5", "expected a JSON object (one recipe), got 5"),
    ('{"name": "two", "name": "three"}', "not a JSON object: duplicate key 'name'; keep one"),
], ids=["truncated", "list", "null", "number", "duplicate-key"])
def test_one_bad_json_line_is_that_lines_error(cli, tiny_model_dir, tmp_path, bad, problem):
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text("\n".join([good("one"), bad, good("three")]) + "\n")
    out = tmp_path / "out"
    result = cli("edit", manifest, "--model", tiny_model_dir, "--out", out, "--quiet")
    assert result.exit_code == 1, result.output
    assert f"error: {manifest}#2: invalid recipe" in result.stderr and problem in result.stderr
    assert "YAML" not in result.stderr
    assert (out / "one" / "run.json").exists() and (out / "three" / "run.json").exists()
    [failure] = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["recipe"] == f"{manifest}#2" and failure["line"] == 2 and failure["status"] == "invalid"


def test_the_first_line_may_be_the_bad_one(tmp_path):
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text("\n".join(["[1, 2]", good("one"), '{"trunc', good("two")]) + "\n")
    found = list(read_recipes(str(manifest)))
    assert [label for label, _ in found] == [f"{manifest}#{k}" for k in (1, 2, 3, 4)]
    assert [type(r) for _, r in found] == [RecipeError, Recipe, RecipeError, Recipe]


def test_the_bounds_apply_per_record(tmp_path):
    manifest = tmp_path / "many.jsonl"
    lines = [good(f"r{k}") for k in range(2 * MAX_RECIPE_BYTES // len(good("r0")))]  # about 512 KiB in all
    lines.insert(5, json.dumps({**LINE, "name": "huge", "negative_prompt": "x" * MAX_RECIPE_BYTES}))
    manifest.write_text("\n".join(lines) + "\n")
    assert manifest.stat().st_size > 2 * MAX_RECIPE_BYTES
    found = list(read_recipes(str(manifest)))
    assert len(found) == len(lines)
    [(label, err)] = [(label, r) for label, r in found if isinstance(r, RecipeError)]
    assert label == f"{manifest}#6" and err.problems == ["more than 256 KiB; a recipe is a short text"]
    one = tmp_path / "one.yaml"  # a file of one recipe keeps the file's bound
    one.write_text("source: a\nedits: [{target: b}]\n# " + "x" * MAX_RECIPE_BYTES + "\n")
    [(_, err)] = read_recipes(str(one))
    assert isinstance(err, RecipeError) and "more than 256 KiB" in err.problems[0]


def test_validate_reports_a_bad_line_and_checks_the_rest(cli, tmp_path):
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text("\n".join([good("one"), "null", good("three")]) + "\n")
    result = cli("validate", manifest)
    assert result.exit_code == 2
    assert f"ok {manifest}#1" in result.stdout and f"ok {manifest}#3" in result.stdout
    assert f"{manifest}#2: invalid recipe" in result.stderr


RECORD = st.one_of(st.builds(good, st.text("abc", min_size=1, max_size=3)), st.just("null"), st.just("[1]"),
                   st.just('{"a": '), st.just(""), st.just("   "), st.just('"text"'))


@given(st.lists(RECORD, min_size=2, max_size=12).filter(
    lambda ls: any(line.startswith("{\"source") for line in ls) and sum(bool(line.strip()) for line in ls) > 1))
def test_every_non_blank_line_is_one_record_with_its_line_number(lines):
    text = "\n".join(lines) + "\n"
    found = [(k, doc) for k, doc, json_line in documents(io.BytesIO(text.encode()))]
    want = [(n, line.encode()) for n, line in enumerate(lines, 1) if line.strip()]
    assert found == want
