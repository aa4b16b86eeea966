"""The folders show the data flow: each part imports only the parts before it (DEVELOPERS.md), and the
engine imports neither typer, rich nor PIL."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "p2p_cli"
ORDER = ["text", "paths", "fingerprint", "loading", "recipe", "picture_texts", "overrides", "manifests", "family_defaults", "resolve", "shapes",
         "model_spec", "checks", "families", "placement", "models", "user_pipeline", "loras", "engine", "memory_plan", "analysis", "render",
         "files", "api", "runs", "pie_bench", "app", "cli", "__main__"]
EXCEPTIONS: set = set()  # none: a PNG's recipe is read by picture_texts.py, below the recipe reader


def part(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None  # "p2p_cli" itself (its __version__) is anyone's


def imports(path: Path, prefix: str = "p2p_cli") -> list[str]:
    found = []

    def ours(name: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and ours(node.module):
            found += [node.module] if node.module != prefix else [f"{prefix}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if ours(a.name)]
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if part(name) in ORDER:
            yield name, path


def test_every_part_is_in_the_order():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts - {"__init__", "assets"} <= set(ORDER), parts - set(ORDER)


def test_imports_go_one_way():
    wrong = []
    for name, path in modules():
        mine = part(name)
        for target in imports(path):
            other = part(target)
            if other in ORDER and ORDER.index(other) > ORDER.index(mine) and (mine, other) not in EXCEPTIONS:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_the_engine_never_imports_typer_rich_or_pil():
    wrong = []
    for name, path in modules():
        if part(name) in ("text", "recipe", "families", "engine", "analysis"):
            for node in ast.walk(ast.parse(path.read_text())):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                wrong += [f"{name} imports {m}" for m in mods if m.split(".")[0] in ("typer", "rich", "PIL", "click")]
    assert wrong == []


def test_no_command_module_imports_another():
    """cli/: each command's module stands on the API and the shared cli modules, never on another command."""
    commands = {"edit", "validate", "attn_viz", "invert", "sweep", "dataset", "show", "eval", "ui"}
    wrong = []
    for name in commands:
        for target in imports(PACKAGE / "cli" / f"{name}.py"):
            other = target.split(".")[2] if target.startswith("p2p_cli.cli.") else None
            if other in commands and other != name:
                wrong.append(f"cli/{name}.py imports {target}")
    assert wrong == []


def test_the_package_never_imports_lab_code():
    """lab/ (training, evaluation, random architectures, benchmark internals) is not installed: no module of the
    package may import it, at the top or inside a function."""
    wrong = [f"{name} imports {target}" for name, path in modules() for target in imports(path, "lab")]
    assert wrong == []


def test_loading_a_model_imports_no_lab_code():
    import subprocess
    import sys

    code = ("import sys, p2p_cli.models, p2p_cli.api, p2p_cli.cli.main; "
            "bad = [m for m in sys.modules if m == 'lab' or m.startswith('lab.')]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]


def test_each_family_takes_its_defaults_from_the_one_table():
    """families/ (the engine's side) and `p2p validate` (torch-free) read one table: p2p_cli/family_defaults.py."""
    from p2p_cli.families import FAMILIES
    from p2p_cli.family_defaults import FAMILY_DEFAULTS

    assert set(FAMILIES) == set(FAMILY_DEFAULTS)
    for name, family in FAMILIES.items():
        d = FAMILY_DEFAULTS[name]
        assert (family.label, family.default_guidance, family.default_self_replace) == (d.label, d.guidance,
                                                                                       d.self_replace)
        assert getattr(family, "default_self_blocks", None) == d.self_blocks
        assert (family.denoiser == "transformer") == d.joint
    numbers = [path for path in PACKAGE.rglob("*.py") if path.name != "family_defaults.py"
               and any(f"default_guidance = {g}" in path.read_text() for g in ("7.5", "5.0", "7.0", "3.5"))]
    assert numbers == []  # no second copy of a default guidance


def test_one_fingerprint_function():
    """Resume (edit, dataset, PIE-Bench) and the inversion cache hash what makes a folder in one place."""
    hashing = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
               if "hashlib.sha256(json.dumps(" in path.read_text()]
    assert hashing == ["fingerprint.py"], hashing


def test_one_recipe_reader():
    """A recipe file is read by overrides.read_recipe alone (api.load_recipe is its public door, manifests read
    each record through overrides.from_document)."""
    readers = [f"{name}.{node.name}" for name, path in modules() for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.FunctionDef) and node.name in ("load_recipe", "read_recipe")]
    assert sorted(readers) == ["p2p_cli.api.load_recipe", "p2p_cli.overrides.read_recipe"], readers


# What loads and runs a model: the command line reaches it through the API (p2p_cli.api) and the runner
# (p2p_cli.runs) only. It may still read the torch-free input and output layers itself (recipe, checks, files,
# analysis' option parsers, render, the prompt syntax of text/inline.py), which `p2p validate` and --help need
# without torch.
ENGINE_SIDE = {"text", "loading", "resolve", "model_spec", "families", "placement", "models", "user_pipeline",
               "loras", "engine", "shapes"}
PROMPT_SYNTAX = {"p2p_cli.text.inline", "p2p_cli.text.words"}


def test_commands_reach_the_engine_only_through_the_api_and_the_runner():
    wrong = [f"{name} imports {target}" for name, path in modules() if part(name) in ("cli", "app")
             for target in imports(path) if part(target) in ENGINE_SIDE and target not in PROMPT_SYNTAX]
    assert wrong == []


def test_every_many_recipe_path_goes_through_the_one_runner():
    """`p2p edit` / `p2p attn-viz` (runs/edits.py), `p2p dataset` / `p2p.dataset` (runs/datasets.py) and PIE-Bench
    (pie_bench.py) loop through runs.runner.run; no other module loops over jobs, and no command holds a loop of
    its own (the old cli/jobs.run_jobs, api.dataset and pie_bench's loop are gone)."""
    callers = sorted(name for name, path in modules() if "runner.run(" in path.read_text())
    assert callers == ["p2p_cli.pie_bench", "p2p_cli.runs.datasets", "p2p_cli.runs.edits"], callers
    from p2p_cli import api

    assert not hasattr(api, "dataset")
    import p2p_cli

    assert p2p_cli.dataset.__module__ == "p2p_cli.runs.datasets"


def test_the_tests_mirror_the_package():
    """tests/<part>/ holds the tests of p2p_cli/<part>/ (or of p2p_cli/<part>.py); tests/lab/ those of lab/."""
    tests = Path(__file__).parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert folders - {"lab"} <= parts, folders - parts
