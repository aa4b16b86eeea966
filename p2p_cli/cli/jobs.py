"""What edit and attn-viz print around the runner (runs/edits.py): errors and warnings on stderr, a line per
folder written on stdout, the progress bars."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from p2p_cli.cli.errors import printable, name_edits, report
from p2p_cli.runs.edits import input_warnings


def reporter(debug: bool):
    """The runner's report(err, where) -> exit code: the error on stderr (its traceback with --debug)."""
    return lambda err, where: report(err, where=where, debug=debug)


def show_warnings(label: str, lines: list[str]) -> None:
    """Likely mistakes on stderr, one `warning:` line each."""
    for line in lines:
        print(printable(f"warning: {label}: {name_edits(line)}"), file=sys.stderr)


def warn(recipe, label: str, model: str | None = None) -> None:
    """A recipe's likely mistakes (runs.edits.input_warnings) on stderr. model: --model when given."""
    show_warnings(label, input_warnings(recipe, label, model))


def written(json_: bool):
    """The line each folder written gets on stdout: "wrote OUT/name/ (3 images, 4.2 s)", or with --json its files
    as one JSON object."""
    def say(job, result, record) -> None:
        files = record["images"]
        if json_:
            line = {
                "name": job.recipe.name,
                "out": str(job.folder),
                "images": {role: str(job.folder / name) for role, name in files.items()},
                "run": str(job.folder / "run.json"),
                "seconds": record["seconds"],
            }
            if isinstance(record.get("attention"), dict):  # the attention pictures (else the attention mode)
                line["attention"] = {key: str(job.folder / name) for key, name in record["attention"].items()}
            print(json.dumps(line), flush=True)
        elif job.attention_only:
            n = len(record.get("attention") or {})
            print(f"wrote {job.folder}/ ({n} files, {record['seconds']['total']:.1f} s)", flush=True)
        else:
            n = len(result.roles)
            print(f"wrote {job.folder}/ ({n} image{'s' if n != 1 else ''}, {record['seconds']['total']:.1f} s)",
                  flush=True)

    return say


def bars(bar):
    """The runner's bars(job, label): a context giving the (inversion, sampling) progress callbacks, shown on `bar`;
    None without a bar."""
    if bar is None:
        return None

    @contextmanager
    def both(job, label: str):
        from p2p_cli.api import bar_task

        recipe = job.recipe
        with inversion_phases(bar, label, recipe.steps, recipe.inversion_method) as invert, \
                bar_task(bar, label) as sample:
            yield invert, sample

    return both


@contextmanager
def inversion_phases(bar, label: str, steps: int, method: str):
    """The inversion's progress callback: one bar per phase (null-text: the DDIM inversion, then the
    optimisation), each with its own total."""
    from p2p_cli.cli.common import phase_progress

    phases = ["DDIM inversion", "null-text optimisation"] if method == "null-text" else [f"{method} inversion"]
    update, remove = phase_progress(bar, label, steps, phases)
    started = False

    def progress(done: int, total: int) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        update(done, total)

    try:
        yield progress
    finally:
        if started:
            bar.stop()
        remove()


def default_viz():
    """The attention pictures of `p2p edit --save-attention`: attn-viz's defaults."""
    from p2p_cli.analysis.maps import VizSpec

    return VizSpec()
