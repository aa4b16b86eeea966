"""Recipes written to break the loader: each is refused at once (exit 2) with a line that says where and why."""

from __future__ import annotations

import time

import pytest

from p2p_cli.overrides import read_recipe
from p2p_cli.overrides import read_recipe as load_recipe
from p2p_cli.recipe import MAX_RECIPE_BYTES, MAX_TEXT, RecipeError

BASE = "source: a cat\nedits:\n  - target: a dog\n"
LAUGHS = "".join(  # 9 ** 7 = 4.8 million strings once expanded
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, c in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg")
)


def problems(tmp_path, text: str | bytes, *sets: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RecipeError) as caught:
        read_recipe(str(path), list(sets))
    return caught.value.problems


@pytest.mark.parametrize("text, line", [
    (BASE + "steps: true\n", "steps: expected a number, got true (a boolean)"),
    (BASE + "guidance: false\n", "guidance: expected a number, got false (a boolean)"),
    (BASE + "seed: true\n", "seed: expected a number, got true (a boolean)"),
    ("source: a cat\nedits:\n  - target: a cat\n    reweight: {cat: yes}\n",
     "edits[0].reweight.cat: expected a number, got true (a boolean)"),
    (BASE + "guidance: .inf\n", "guidance: inf is not a finite number"),
    (BASE + "guidance: .nan\n", "guidance: nan is not a finite number"),
    ("source: a cat\nedits:\n  - target: a cat\n    reweight: {cat: .nan}\n",
     "edits[0].reweight.cat: nan is not a finite number"),
    ("source: a cat\nedits:\n  - target: a cat\n    reweight: {cat: -.inf}\n",
     "edits[0].reweight.cat: -inf is not a finite number"),
    ("source: '   '\nedits:\n  - target: a dog\n", "source: holds only spaces; describe the picture in words"),
    ("source: a cat\nedits:\n  - target: ' '\n", "edits[0].target: holds only spaces; write the edited prompt"),
    (BASE + "steps: 3\nguidance: 5\nsteps: 4\n", "duplicate key 'steps' at line 6 (first at line 4); keep one"),
    ("source: a cat\nedits:\n  - target: a dog\n    target: a cow\n",
     "duplicate key 'target' at line 4 (first at line 3); keep one"),
    (BASE + "name: ../../escaped\n",
     "name: '../../escaped' cannot be a folder name: it holds a path separator (use letters, digits, - and _)"),
    (BASE + 'name: "a\\0b"\n',
     "name: 'a\\x00b' cannot be a folder name: it holds a control character (use letters, digits, - and _)"),
    (BASE + "when: 2001-02-30\n", "not valid YAML: day is out of range for month"),
    ("a: &a [1, *a]\n", "line 1: an alias refers to the mapping or list that holds it"),
    (b"source: a c\xe9t\nedits: []\n", "not UTF-8 text: byte 0xe9 at line 1, column 12; save the file as UTF-8"),
    (b"\xff\xfes\x00", "not UTF-8 text (it looks like UTF-16): byte 0xff at line 1, column 1; save the file as UTF-8"),
], ids=["steps-true", "guidance-false", "seed-true", "reweight-yes", "guidance-inf", "guidance-nan", "reweight-nan",
        "reweight-inf", "blank-source", "blank-target", "duplicate-top", "duplicate-edit", "escaping-name", "nul-name",
        "bad-date", "recursive-alias", "latin-1", "utf-16"])
def test_refused_with_its_line(tmp_path, text, line):
    assert line in problems(tmp_path, text)


def test_long_names_are_refused_by_the_loader(tmp_path):
    (line,) = problems(tmp_path, BASE + "name: " + "x" * 300 + "\n")
    assert line.startswith("name: 'xxxx") and "it is 300 bytes long; at most 200" in line


def test_alias_bombs_are_refused_at_once(tmp_path):
    tic = time.perf_counter()
    (line,) = problems(tmp_path, BASE + LAUGHS)
    assert "more than 20000 values with its aliases expanded (line " in line
    flow = "{" + LAUGHS.replace("\n", ", ").rstrip(", ") + "}"
    (line,) = problems(tmp_path, BASE, f"edits.0.extra={flow}")
    assert line.startswith("--set edits.0.extra={") and "more than 20000 values with its aliases expanded" in line
    assert time.perf_counter() - tic < 2


def test_deep_nesting_is_refused(tmp_path):
    assert problems(tmp_path, BASE + "x: " + "[" * 40 + "]" * 40 + "\n") == ["line 4: nested more than 32 levels deep"]
    assert problems(tmp_path, "[" * 5000) == ["nested more than 32 levels deep"]  # the parser's own recursion


def test_sizes_are_bounded_before_parsing_and_tokenizing(tmp_path):
    big = BASE + "# " + "x" * MAX_RECIPE_BYTES + "\n"
    assert problems(tmp_path, big) == [f"more than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short text"
                                       " (is this the right file?)"]
    long = "source: " + "cat " * MAX_TEXT + "\nedits:\n  - target: a dog\n"
    assert problems(tmp_path, long) == [f"source: {4 * MAX_TEXT - 1} characters; at most {MAX_TEXT} (a prompt"
                                        " reads 77 tokens)"]
    assert problems(tmp_path, BASE, "edits.0.target=" + "dog " * MAX_TEXT)[0].startswith("edits[0].target: ")


def test_stdin_that_is_not_utf8_is_an_invalid_recipe(cli, tmp_path):
    result = cli("validate", "-", input=b"source: a cat\nedits:\n  - target: a d\xf6g\n")
    assert result.exit_code == 2, result.output
    assert result.stderr == ("error: -: invalid recipe (1 problem)\n"
                             "  not UTF-8 text: byte 0xf6 at line 3, column 16; save the file as UTF-8\n")


def test_validate_and_edit_agree_on_the_name(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE + "name: ../../escaped\n")
    for command in (("validate", path), ("edit", path, "--model", tmp_path / "nowhere", "--out", tmp_path / "out")):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert "name: '../../escaped' cannot be a folder name: it holds a path separator" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_good_recipe_still_loads(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + "source: a café\nsteps: 1000\nedits:\n  - target: a dog's café\n".encode())
    recipe = load_recipe(path)  # a BOM is fine, and so is the documented maximum of steps
    assert recipe.name == "good" and recipe.steps == 1000 and recipe.source == "a café"
