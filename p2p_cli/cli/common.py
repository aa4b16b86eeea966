"""Small helpers every command shares: model names, dtype names, output-folder names, the progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from p2p_cli.files.outputs import DTYPE_NAMES
from p2p_cli.recipe import Recipe, RecipeError, name_problem


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
    """The name becomes a folder: no separators, no leading dot, no control characters, not too long (the
    recipe loader checks the same, so `p2p validate` and `p2p edit` agree)."""
    why = name_problem(recipe.name or "")
    if why:
        raise RecipeError([f"name: {why}"], path)
