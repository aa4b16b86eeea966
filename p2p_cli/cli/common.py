"""Small helpers every command shares: model names, dtype names, output-folder names, the progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from p2p_cli.outputs import DTYPE_NAMES
from p2p_cli.recipe import Recipe, RecipeError


def progress_bar(console: Console) -> Progress:
    """The one progress bar style (stderr console; gone when done)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def model_key(spec: str | None) -> str:
    """One name per model: "shapes" for the bundled one, a resolved path for local folders, else the hub id."""
    if spec is None or spec == "shapes":
        return "shapes"
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def dtype_name(dtype) -> str:
    """torch.float16 -> "fp16", as recipes and run.json spell it."""
    return DTYPE_NAMES[str(dtype)]


def check_name(recipe: Recipe, path: str) -> None:
    """The name becomes a folder: no separators, no leading dot."""
    name = recipe.name or ""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name != name.strip():
        raise RecipeError([f"name: {name!r} cannot be a folder name (use letters, digits, - and _)"], path)
