"""Text from a file never reaches the terminal raw: control characters (window title, clear screen) are escaped."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from p2p_cli.cli.errors import printable

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J\x1b[H"


def _png(path, texts):
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_show_escapes_the_parameters_chunk(cli, tmp_path):
    recipe = {"source": f"a cat{CLEAR}", "edits": [{"target": "a dog\x9b31m"}]}
    png = _png(tmp_path / "x.png", {"parameters": f"a cat{TITLE}\nSteps: 5", "p2p-recipe": json.dumps(recipe)})
    result = cli("show", png)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\x9b" not in result.stdout
    assert "\\x1b]0;pwned\\x07" in result.stdout
    as_json = cli("show", png, "--json")
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in as_json.stdout.replace("\n", ""))
    assert json.loads(as_json.stdout)["parameters"].startswith(f"a cat{TITLE}")  # the same text, escaped as JSON


def test_errors_and_warnings_escape_recipe_text(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"source": f"a {TITLE} cat", "edits": [{"target": f"a {CLEAR} dog", "type": "nope"}]}))
    result = cli("validate", path)
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\x1b" not in result.stdout
    path.write_text(json.dumps({"source": f"a {TITLE} cat", "edits": [{"target": "a dog"}]}))
    result = cli("validate", path)
    assert "\x1b" not in result.stderr + result.stdout and "pwned" in result.stdout


@given(st.text())
def test_printable_leaves_no_control_character(text):
    out = printable(text)
    assert not any((ord(c) < 32 and c not in "\n\t") or 127 <= ord(c) < 160 or c in "\u202e\u2066" for c in out)
    assert printable(out) == out  # nothing left to escape
    if not any(ord(c) < 32 and c not in "\n\t" or 127 <= ord(c) < 160 or 0x202a <= ord(c) <= 0x202e
               or 0x2066 <= ord(c) <= 0x2069 or c in "\u2028\u2029" for c in text):
        assert out == text
