"""Small helpers every command shares: model names, dtype names, output-folder names, the progress bar."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from p2p_cli.files.outputs import DTYPE_NAMES


MAX_THREADS = 1024  # more than any CPU has; torch overflows on a number past a C int


def use_threads(threads: int | None) -> int:
    """Set torch's CPU threads (--threads, else the library's default: models.use_threads) and return the number
    in use."""
    if threads is not None and threads > MAX_THREADS:
        from p2p_cli.cli.errors import UsageError

        raise UsageError(f"--threads {threads}: at most {MAX_THREADS} (this machine has {os.cpu_count()} CPUs)")
    from p2p_cli.api import use_threads as set_threads

    return set_threads(threads)


def progress_bar(console: Console) -> Progress:
    """The one progress bar style (stderr console; gone when done): done/total, steps per second, elapsed and
    time left."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                    TimeElapsedColumn(), TextColumn("elapsed,"), TimeRemainingColumn(), TextColumn("left"),
                    console=console, transient=True)


class _Rate(ProgressColumn):
    """Steps per second."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} steps/s" if task.speed else "")


def phase_progress(bar: Progress, label: str, steps: int, phases: list[str]):
    """A progress(done, total) callback that shows each phase of `steps` steps as its own bar: the engine counts
    done over all phases (null-text inversion: T inversion steps, then T optimisation steps, as total 2T).
    Returns (callback, remove) where remove() takes the phase bars away."""
    tasks: list = []

    def update(done: int, total: int) -> None:
        phase = min((done - 1) // steps, len(phases) - 1) if done else 0
        while len(tasks) <= phase:
            if tasks:
                bar.update(tasks[-1], completed=steps)
            name = phases[len(tasks)] if total > steps else phases[0]
            tasks.append(bar.add_task(f"{label}: {name}", total=steps))
        bar.update(tasks[phase], completed=done - phase * steps)

    def remove() -> None:
        for task in tasks:
            bar.remove_task(task)

    return update, remove


def dtype_name(dtype) -> str:
    """torch.float16 -> "fp16", as recipes and run.json spell it."""
    return DTYPE_NAMES[str(dtype)]


def overrides_from(sets: list[str] | None, **fields) -> list[str]:
    """--set KEY=VALUE lines, then the shortcut options (--steps N is steps=N, ...) that were given."""
    return list(sets or []) + [f"{key}={value}" for key, value in fields.items() if value is not None]


def exit_code(codes) -> int:
    """The command's exit code from its recipes' codes: 2 if any was invalid, else 1 if any failed, else 0."""
    from p2p_cli.cli.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK

    codes = set(codes)
    return EXIT_INVALID if EXIT_INVALID in codes else EXIT_FAILED if EXIT_FAILED in codes else EXIT_OK

