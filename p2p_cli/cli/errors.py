"""Every error the CLI shows is worded here, with its exit code: 2 invalid input, 1 a failure while running."""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import click
import typer

from p2p_cli.files import interrupts, outputs
from p2p_cli.files.interrupts import Interrupted
from p2p_cli.files.outputs import DegenerateResult, OutputExistsError, OutputPathError
from p2p_cli.recipe import RecipeError, with_file_lines
from p2p_cli.runs.records import EXIT_FAILED, EXIT_INVALID, EXIT_OK, InvalidRecipes, UsageError

EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away
__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "EXIT_PIPE", "UsageError", "describe", "handled", "report"]


def debug_on(flag: bool = False) -> bool:
    """Tracebacks are shown with --debug or P2P_DEBUG=1."""
    return flag or os.environ.get("P2P_DEBUG", "").strip().lower() in ("1", "true", "yes")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text from a file made safe for a terminal: control characters (escape sequences that set a window title or
    clear the screen, bidirectional overrides) written as \\x1b / \\u202e; newlines and tabs kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                        text)


_EDIT_PATH = re.compile(r"^(\s*)(edits\[(\d+)\][^\s:]*)")


def name_edits(line: str) -> str:
    """"edits[0].cross_replace: ..." -> "edits[0].cross_replace (edit-1): ...": the recipe's list index (as --set
    edits.0.cross_replace takes it) and the 1-based number the output files use (edit-1.png)."""
    return _EDIT_PATH.sub(lambda m: f"{m.group(1)}{m.group(2)} (edit-{int(m.group(3)) + 1})", line, count=1)


def describe(err: BaseException) -> tuple[str, int]:
    """The message (possibly several lines) and the exit code for an error."""
    # torch and the model loader are looked up, not imported: a command that never loaded them (help, validate,
    # an argument error) stays fast, and an error of theirs can only come once they are loaded.
    models, torch = sys.modules.get("p2p_cli.models"), sys.modules.get("torch")

    if isinstance(err, RecipeError):
        err = with_file_lines(err)  # a problem found later (a word the tokenizer lacks) gets its line too
        lines = [f"{err.source}: invalid recipe ({len(err.problems)} problem{'s' if len(err.problems) != 1 else ''})"]
        at = err.lines or [None] * len(err.problems)
        return "\n".join(lines + [f"  {name_edits(p)}" + (f" ({err.source}:{n})" if n else "")
                                  for p, n in zip(err.problems, at)]), EXIT_INVALID
    if isinstance(err, UsageError):
        return str(err), EXIT_INVALID
    if models is not None and isinstance(err, models.ModelLoadError):
        return f"cannot load the model: {err}", EXIT_FAILED
    if isinstance(err, (OutputExistsError, OutputPathError, DegenerateResult)):
        return str(err), EXIT_FAILED
    memory = sys.modules.get("p2p_cli.engine.memory")
    if memory is not None and isinstance(err, memory.NotEnoughMemory):  # the estimate before sampling
        return str(err), EXIT_FAILED
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return (
            "out of memory: try --dtype fp16 (on a GPU), a smaller size (--set size=512), fewer edits per recipe,"
            " or --device cpu",
            EXIT_FAILED,
        )
    if isinstance(err, (KeyboardInterrupt, Interrupted)):
        return interrupted_message(err)
    if isinstance(err, OSError):
        return f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}", EXIT_FAILED
    return (
        f"unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback, and report it if it persists)",
        EXIT_FAILED,
    )


def interrupted_message(err: BaseException) -> tuple[str, int]:
    """What an interrupt stopped and what it kept; exit 130 for SIGINT (Ctrl-C), 143 for SIGTERM."""
    name, code = (err.name, err.code) if isinstance(err, Interrupted) else ("SIGINT", 130)
    kept = [f"{folder}/" for folder in outputs.finished]
    what = f"kept the finished {'folders' if len(kept) > 1 else 'folder'} {', '.join(kept)}; " if kept else ""
    return f"interrupted ({name}): {what}nothing was written for the unfinished work", code


def quiet_broken_pipe() -> int:
    """stdout's reader went away (`p2p edit ... --json | head -1`): stop like a Unix tool, without a word."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush of stdout must not fail again
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_PIPE


def report(err: BaseException, where: str | None = None, debug: bool = False) -> int:
    """Print `err` on stderr (with the traceback when debugging) and return its exit code."""
    message, code = describe(err)
    if debug_on(debug):
        traceback.print_exception(err, file=sys.stderr)
    prefix = f"error: {where}: " if where else "error: "
    if isinstance(err, RecipeError):  # its first line already names the recipe
        prefix = "error: "
    print(printable(prefix + message), file=sys.stderr)
    return code


@contextmanager
def tool_warnings() -> Iterator[None]:
    """The library's own warnings (files.FileWarning) as the tool's `warning:` lines, not Python's form with a
    source line; other warnings as before."""
    import warnings

    from p2p_cli.files import FileWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FileWarning):
            print(printable(f"warning: {message}"), file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


_EXITS = (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit)


@contextmanager
def handled(debug: bool = False) -> Iterator[None]:
    """Turn any error escaping a command into its message and exit code (typer's own exits pass through).

    SIGINT and SIGTERM raise interrupts.Interrupted inside (cleaned up after like any error, exit 130 / 143); one
    that library code swallowed is raised at the end, so an interrupt is never lost. A closed stdout ends the
    command quietly (exit 141).
    """
    outputs.finished.clear()
    with interrupts.handlers(), tool_warnings():
        try:
            try:
                yield
            except _EXITS:
                interrupts.checkpoint()  # an exit after a swallowed interrupt is still an interrupt
                raise
            interrupts.checkpoint()
        except _EXITS:
            raise
        except BrokenPipeError:
            raise typer.Exit(quiet_broken_pipe()) from None
        except InvalidRecipes:  # each one reported already
            raise typer.Exit(EXIT_INVALID) from None
        except (Exception, KeyboardInterrupt, Interrupted) as err:
            code = report(err, debug=debug)
            interrupts.clear()
            raise typer.Exit(code) from None
