"""Every error the CLI shows is worded here, with its exit code: 2 invalid input, 1 a failure while running."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import click
import typer

from p2p_cli.models import ModelLoadError
from p2p_cli.outputs import OutputExistsError
from p2p_cli.recipe import RecipeError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class UsageError(ValueError):
    """A command line that cannot work (clashing recipes, two stdin recipes, ...)."""


def debug_on(flag: bool = False) -> bool:
    """Tracebacks are shown with --debug or P2P_DEBUG=1."""
    return flag or os.environ.get("P2P_DEBUG", "").strip().lower() in ("1", "true", "yes")


def describe(err: BaseException) -> tuple[str, int]:
    """The message (possibly several lines) and the exit code for an error."""
    import torch

    if isinstance(err, RecipeError):
        lines = [f"{err.source}: invalid recipe ({len(err.problems)} problem{'s' if len(err.problems) != 1 else ''})"]
        return "\n".join(lines + [f"  {p}" for p in err.problems]), EXIT_INVALID
    if isinstance(err, UsageError):
        return str(err), EXIT_INVALID
    if isinstance(err, ModelLoadError):
        return f"cannot load the model: {err}", EXIT_FAILED
    if isinstance(err, OutputExistsError):
        return str(err), EXIT_FAILED
    if isinstance(err, torch.OutOfMemoryError):
        return (
            "out of memory: try --dtype fp16 (on a GPU), a smaller size (--set size=512), fewer edits per recipe,"
            " or --device cpu",
            EXIT_FAILED,
        )
    if isinstance(err, KeyboardInterrupt):
        return "interrupted; nothing was written for the unfinished recipe", 130
    if isinstance(err, OSError):
        return f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}", EXIT_FAILED
    return (
        f"unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback, and report it if it persists)",
        EXIT_FAILED,
    )


def report(err: BaseException, where: str | None = None, debug: bool = False) -> int:
    """Print `err` on stderr (with the traceback when debugging) and return its exit code."""
    message, code = describe(err)
    if debug_on(debug):
        traceback.print_exception(err, file=sys.stderr)
    prefix = f"error: {where}: " if where else "error: "
    if isinstance(err, RecipeError):  # its first line already names the recipe
        prefix = "error: "
    print(prefix + message, file=sys.stderr)
    return code


@contextmanager
def handled(debug: bool = False) -> Iterator[None]:
    """Turn any error escaping a command into its message and exit code (typer's own exits pass through)."""
    try:
        yield
    except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
        raise
    except (Exception, KeyboardInterrupt) as err:
        raise typer.Exit(report(err, debug=debug)) from None
