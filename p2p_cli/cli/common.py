"""Small helpers every command shares: model names, dtype names, output-folder names, the progress bar."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from p2p_cli.outputs import DTYPE_NAMES
from p2p_cli.recipe import Recipe, RecipeError, name_problem


STDIN_ONCE = "name standard input (-) once; it may hold several recipes (--- between them, or JSON lines)"
MAX_DEFAULT_THREADS = 4  # the small models this tool runs on a CPU gain little from more; more oversubscribe


def default_threads(environ=os.environ) -> int | None:
    """The CPU thread count when --threads is not given: None if the user set OMP_NUM_THREADS (torch reads it),
    else the CPUs this process may run on (its affinity), at most MAX_DEFAULT_THREADS."""
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, MAX_DEFAULT_THREADS))


def use_threads(threads: int | None) -> int:
    """Set torch's CPU threads (--threads, else default_threads()) and return the number in use."""
    import torch

    wanted = threads or default_threads()
    if wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


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
