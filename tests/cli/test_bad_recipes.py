"""Each bad recipe gives its one exact line, ending with where in the file, from `p2p validate` (no model) and from
`p2p edit` (nothing written).

An edit is named both ways: edits[0] as the recipe's list (and --set edits.0...) counts, edit-1 as the files do."""

from __future__ import annotations

import pytest

OK_EDIT = {"target": "a dog"}
CASES = [
    ("unknown key", {"source": "a cat", "edits": [{"target": "a dog", "colour": "red"}]},
     "edits[0].colour (edit-1): unknown key (remove it or check its spelling); the keys here are target, type,"
     " cross_replace, self_replace, reweight, local_blend, baseline"),
    ("unknown top key", {"source": "a cat", "stepz": 3, "edits": [OK_EDIT]},
     "stepz: unknown key (remove it or check its spelling); did you mean steps?"),
    ("tau above 1", {"source": "a cat", "edits": [{"target": "a dog", "cross_replace": 1.2}]},
     "edits[0].cross_replace (edit-1): tau 1.2 is outside [0, 1]"),
    ("start after end", {"source": "a cat", "edits": [{"target": "a dog", "self_replace": [0.6, 0.2]}]},
     "edits[0].self_replace (edit-1): start 0.6 is after end 0.2"),
    ("per-word end above 1", {"source": "a cat", "edits": [{"target": "a dog", "cross_replace": {"dog": [0, 1.2]}}]},
     "edits[0].cross_replace (edit-1): [dog] end 1.2 is above 1"),
    ("replace with unequal word counts", {"source": "a cat", "edits": [{"target": "a big dog", "type": "replace"}]},
     "edits[0].type (edit-1): replace needs the same number of words in source (2) and target (3);"
     " use type: refine to add or remove words"),
    ("reweight without factors", {"source": "a cat", "edits": [{"target": "a cat", "type": "reweight"}]},
     "edits[0] (edit-1): type reweight needs reweight factors, e.g. reweight: {smiling: 5}"),
    ("reweighted word not in prompt",
     {"source": "a smiling bunny doll", "edits": [{"target": "a smiling bunny doll", "reweight": {"happy": 2}}]},
     'edits[0].reweight.happy (edit-1): "happy" is not in the prompt; its words are: a, smiling, bunny, doll'),
    ("blend word in neither prompt",
     {"source": "a cat", "edits": [{"target": "a dog", "local_blend": {"words": ["tiger"]}}]},
     'edits[0].local_blend.words (edit-1): "tiger" is in neither prompt; source words: a, cat; target words: a, dog'),
    ("prompt over 77 tokens", {"source": "a cat", "edits": [{"target": " ".join(["dog"] * 80)}]},
     "edits[0].target (edit-1): the prompt has 82 tokens with start and end; the model takes at most 77: shorten it"),
    ("bad size", {"source": "a cat", "size": 100, "edits": [OK_EDIT]}, "size: 100 is not a positive multiple of 8"),
    ("missing source", {"edits": [OK_EDIT]}, "source: required, but missing"),
    ("no edits", {"source": "a cat", "edits": []}, "edits: List should have at least 1 item after validation, not 0"),
    ("not a mapping", ["a cat", "a dog"], "the top level must be a mapping of keys, got list"),
]
# the line of the written file (yaml.safe_dump of the case) each problem ends with, "(FILE:LINE)": its field's,
# or the closest key above it; none for a field that is missing at the top or a file that is not a mapping
AT = {"unknown key": 4, "unknown top key": 2, "tau above 1": 4, "start after end": 4, "per-word end above 1": 4,
      "replace with unequal word counts": 4, "reweight without factors": 3, "reweighted word not in prompt": 5,
      "blend word in neither prompt": 5, "prompt over 77 tokens": 3, "bad size": 2, "no edits": 2}
CASES = [(name, data, line, AT.get(name)) for name, data, line in CASES]


def shown(line: str, path, at: int | None) -> str:
    return f"\n  {line}" + (f" ({path}:{at})" if at else "") + "\n"


@pytest.mark.parametrize("data, line, at", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_gives_the_line(cli, write_recipe, data, line, at):
    path = write_recipe(data, name="bad")
    result = cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: invalid recipe (")
    assert shown(line, path, at) in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("data, line, at", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edit_gives_the_line_and_writes_nothing(cli, write_recipe, tiny_model_dir, tmp_path, data, line, at):
    path = write_recipe(data, name="bad")
    result = cli("edit", path, "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert shown(line, path, at) in result.stderr
    assert not (tmp_path / "out" / "bad").exists() and result.stdout == ""


def test_validate_reports_every_recipe_and_summarises_good_ones(cli, write_recipe, tmp_path):
    good = write_recipe({"source": "a smiling bunny doll", "edits": [{"target": "a smiling bunny doll",
                                                                       "reweight": {"smiling": 5}}]}, name="good")
    bad = write_recipe({"source": "a cat", "edits": [{"target": "a dog", "cross_replace": 2}]}, name="bad")
    result = cli("validate", good, bad)
    assert result.exit_code == 2
    assert f"ok {good}\n" in result.stdout
    assert '  edit-1 (edits[0]): reweight "a smiling bunny doll"\n' in result.stdout
    assert "      cross_replace 0.8; self_replace 0.4; reweight smiling x5\n" in result.stdout
    assert "edits[0].cross_replace (edit-1): tau 2 is outside [0, 1]" in result.stderr
    assert cli("validate", good).exit_code == 0
