"""README's quick start, own-picture and tuning sections stay true: every `p2p` command in their bash blocks runs
as written from a copy of the repository's recipes (the bundled model, nothing downloaded) and exits 0.

The default run adds `--steps 2` to the commands that sample (they stay a few seconds); `make test-slow` runs them
exactly as written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2p_cli.cli.main import app

ROOT = Path(__file__).parent.parent
SECTIONS = ("Quick start", "Your own picture", "Tuning an edit")
SAMPLING = ("edit", "sweep", "attn-viz", "invert")


def section(text: str, title: str) -> str:
    """A README section's text, from its heading to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    found = []
    for title in SECTIONS:
        for block in re.findall(r"```bash\n(.*?)```", section(text, title), re.S):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0] == "p2p":
                    found.append(words[1:])
    return found


def run(tmp_path: Path, monkeypatch, fast: bool) -> None:
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")  # as in a fresh clone; outputs/ land in tmp_path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    for words in commands():
        extra = ["--steps", "2"] if fast and words[0] in SAMPLING else []
        result = runner.invoke(app, words + extra)
        assert result.exit_code == 0, f"p2p {shlex.join(words)}:\n{result.output}"


def test_the_sections_hold_commands():
    found = commands()
    assert len(found) >= 5 and {w[0] for w in found} >= {"edit", "validate", "sweep"}
    assert any("--image" in w for w in found)


def test_readme_commands_run(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, fast=True)
    assert (tmp_path / "outputs" / "shapes-replace" / "grid.png").is_file()
    assert (tmp_path / "outputs" / "tuning" / "shapes-refine" / "sweep" / "sweep.png").is_file()


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, fast=False)
