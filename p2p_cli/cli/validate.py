"""`p2p validate RECIPE...`: check recipes without loading any model."""

from __future__ import annotations

import typer

from p2p_cli.cli import options as o
from p2p_cli.cli.errors import EXIT_INVALID, EXIT_OK, UsageError, handled, report
from p2p_cli.overrides import read_recipe
from p2p_cli.recipe import Recipe, RecipeError


def validate(recipes: o.RecipeArgs, set_: o.Sets = None, debug: o.Debug = False) -> None:
    """Check recipes (schema, and words/tokens against the CLIP tokenizer of SD v1); print what each does."""
    code = EXIT_OK
    with handled(debug):
        if recipes.count("-") > 1:
            raise UsageError("standard input (-) can hold only one recipe")
        tokenizer = None
        for path in recipes:
            try:
                recipe = read_recipe(path, list(set_ or []))
                tokenizer = tokenizer or _tokenizer()
                problems = _token_problems(recipe, tokenizer)
                if problems:
                    raise RecipeError(problems, path)
            except RecipeError as err:
                code = report(err, debug=debug)
                continue
            print(f"ok {path}")
            print(summary(recipe))
    raise typer.Exit(code if code == EXIT_OK else EXIT_INVALID)


def summary(recipe: Recipe) -> str:
    """A few indented lines: the source and each edit with its (inferred) type and windows."""
    size = "x".join(map(str, recipe.size)) if recipe.size else "native"
    lines = [
        f"  name: {recipe.name}  model: {recipe.model or 'shapes (bundled)'}  seed {recipe.seed}, {recipe.steps} steps,"
        f" guidance {recipe.guidance:g}, size {size}",
        f"  source: {recipe.source!r}",
    ]
    for k, edit in enumerate(recipe.edits, 1):
        cross = recipe.cross_for(edit)
        words = "".join(f", {w} {_win(win)}" for w, win in cross.words.items())
        parts = [f"cross {_win(cross.default)}{words}", f"self {_win(recipe.self_for(edit))}"]
        if edit.reweight:
            parts.append("reweight " + ", ".join(f"{w} x{f:g}" for w, f in edit.reweight.items()))
        if edit.local_blend:
            parts.append("local blend " + ", ".join(edit.local_blend.words))
        if edit.baseline or recipe.baseline:
            parts.append("baseline")
        lines.append(f"  edit {k}: {edit.type} {edit.target!r} ({'; '.join(parts)})")
    return "\n".join(lines)


def _win(window: tuple[float, float]) -> str:
    start, end = window
    return f"{end:g}" if start == 0 else f"[{start:g}, {end:g}]"


def _tokenizer():
    from p2p_cli.arch import clip_tokenizer

    return clip_tokenizer()


def _token_problems(recipe: Recipe, tokenizer) -> list[str]:
    """Words that must be in a prompt, prompts over 77 tokens: the engine's check_recipe."""
    from p2p_cli.engine.pipeline import check_recipe

    return check_recipe(recipe, tokenizer)
