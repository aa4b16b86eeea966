"""`python -m p2p_cli` is the `p2p` command; `main` is also its console script.

The signal handlers go in before anything heavy is imported, so Ctrl-C (or SIGTERM) at any moment ends the
command with exit 130 (143) and one line, never a traceback (p2p_cli/files/interrupts.py).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Install the SIGINT / SIGTERM handlers, then run the typer app (errors are worded in cli/errors.py)."""
    from p2p_cli.files import interrupts

    interrupts.install()
    try:
        from p2p_cli.cli.main import main as run

        run()
    except (KeyboardInterrupt, interrupts.Interrupted) as err:  # before or after a command's own handling
        name, code = (err.name, err.code) if isinstance(err, interrupts.Interrupted) else ("SIGINT", 130)
        try:
            print(f"error: interrupted ({name}) outside any command's work; nothing was written", file=sys.stderr)
        finally:
            sys.exit(code)


if __name__ == "__main__":
    main()
