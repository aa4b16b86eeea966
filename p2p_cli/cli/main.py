"""The `p2p` typer app: its commands, and the entry point of the console script.

Nothing here (nor in the command modules, at import) loads torch, diffusers or transformers: `p2p --help`,
argument errors and `p2p validate` stay fast. The engine is imported inside a command once it runs a model.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from p2p_cli import cpu_defaults
from p2p_cli.cli.attn_viz import attn_viz
from p2p_cli.cli.dataset import dataset
from p2p_cli.cli.edit import edit
from p2p_cli.cli.eval import pie_bench
from p2p_cli.cli.invert import invert
from p2p_cli.cli.show import show
from p2p_cli.cli.sweep import sweep
from p2p_cli.cli.ui import ui
from p2p_cli.cli.validate import validate


def _flags_without_value(params: list) -> list:
    """A boolean flag takes no value: show it in help without typer's `<bool>`; a named argument (RECIPE, IMAGE)
    says what it is without typer's `<list[str]>`."""
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False) and param.metavar is None:
            param.metavar = ""
        elif getattr(param, "param_type_name", "") == "argument" and param.metavar:
            param.display_type_rich = lambda ctx: None
    return params


class Command(TyperCommand):
    def get_params(self, ctx):
        return _flags_without_value(super().get_params(ctx))


class Group(TyperGroup):
    command_class = Command

    def get_params(self, ctx):
        return _flags_without_value(super().get_params(ctx))


app = typer.Typer(
    name="p2p",
    cls=Group,
    help="Prompt-to-Prompt image editing (cross-attention control) on Stable Diffusion 1.x/2.x, SDXL, SD3, FLUX.1,"
         " Qwen-Image, FLUX.2 ([klein], [dev]) and Chroma, and on the bundled shapes models.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from p2p_cli import __version__

        print(f"p2p {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Prompt-to-Prompt image editing (cross-attention control) on the diffusers families p2p serves."""


for _name, _fn in (("edit", edit), ("validate", validate), ("attn-viz", attn_viz), ("invert", invert),
                   ("sweep", sweep), ("dataset", dataset), ("show", show), ("ui", ui)):
    app.command(_name, cls=Command)(_fn)

eval_app = typer.Typer(
    name="eval",
    cls=Group,
    help="Benchmarks: edit a benchmark's pictures and score the edits as the benchmark does.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
eval_app.command("pie-bench", cls=Command)(pie_bench)
app.add_typer(eval_app, name="eval")


def main() -> None:
    """Console script entry point (errors are worded in cli/errors.py; exit codes 0, 1, 2)."""
    cpu_defaults()  # importing p2p_cli set it already; kept explicit for `python -m p2p_cli.cli.main`
    app(prog_name="p2p")  # also as `python -m p2p_cli`
