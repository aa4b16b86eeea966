"""The `p2p` typer app: its commands, and the entry point of the console script."""

from __future__ import annotations

import typer

from p2p_cli.cli.attn_viz import attn_viz
from p2p_cli.cli.bench import bench
from p2p_cli.cli.edit import edit
from p2p_cli.cli.invert import invert
from p2p_cli.cli.show import show
from p2p_cli.cli.sweep import sweep
from p2p_cli.cli.validate import validate

app = typer.Typer(
    name="p2p",
    help="Prompt-to-Prompt image editing (cross-attention control) on Stable Diffusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("edit")(edit)
app.command("validate")(validate)
app.command("attn-viz")(attn_viz)
app.command("invert")(invert)
app.command("sweep")(sweep)
app.command("bench")(bench)
app.command("show")(show)


def main() -> None:
    """Console script entry point (errors are worded in cli/errors.py; exit codes 0, 1, 2)."""
    app()
