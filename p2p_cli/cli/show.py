"""`p2p show FILE.png`: what a picture written by p2p says about itself (its prompt, settings and recipe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli import options as o
from p2p_cli.cli.errors import EXIT_INVALID, EXIT_OK, UsageError, handled, printable

Pictures = Annotated[list[Path], typer.Argument(help="PNG files written by p2p.", metavar="FILE.png...",
                                                show_default=False)]


def show(pictures: Pictures, json_: o.JsonShow = False, debug: o.Debug = False) -> None:
    """Print the settings (Automatic1111 "parameters" text) and the recipe stored in pictures p2p wrote."""
    from p2p_cli.picture_texts import PARAMETERS, RECIPE, recipe_from_texts
    from p2p_cli.render.images import read_png_texts

    code = EXIT_OK
    with handled(debug):
        for path in pictures:
            from p2p_cli.render.load import ImageError

            try:
                texts = read_png_texts(path)
            except OSError as err:
                raise UsageError(f"{path}: cannot read the picture ({getattr(err, 'strerror', None) or err})") from None
            except ImageError as err:
                raise UsageError(str(err)) from None
            try:
                recipe = recipe_from_texts(texts)
            except ValueError as err:
                raise UsageError(f"{path}: its {RECIPE} text chunk is not a recipe: {err}") from None
            if json_:
                print(json.dumps({"file": str(path), "parameters": texts.get(PARAMETERS), "recipe": recipe}),
                      flush=True)  # ASCII: a control character stays an escape, never reaches the terminal
                continue
            if PARAMETERS not in texts and recipe is None:
                typer.echo(printable(f"{path}: holds no p2p settings (no {PARAMETERS} or {RECIPE} text chunk)"), err=True)
                code = EXIT_INVALID
                continue
            import yaml

            print(printable(f"# {path}"))
            if PARAMETERS in texts:
                print(printable(texts[PARAMETERS]))
            if recipe is not None:
                print(printable("# recipe (run it again with: p2p edit " + str(path) + ")"))
                print(printable(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip()))
    raise typer.Exit(code)
