"""`p2p validate RECIPE...`: check recipes without loading any model (nor torch), and show every resolved setting."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from p2p_cli.cli import options as o
from p2p_cli.cli.common import STDIN_ONCE, check_name
from p2p_cli.cli.jobs import warn
from p2p_cli.cli.errors import EXIT_INVALID, EXIT_OK, UsageError, handled, report
from p2p_cli.checks import blend_side, model_geometry, problems_before_loading
from p2p_cli.family_defaults import FAMILY_DEFAULTS
from p2p_cli.files.real import recipe_loras
from p2p_cli.overrides import inline_recipes, read_recipes
from p2p_cli.recipe import Recipe, RecipeError


def validate(recipes: o.OptionalRecipeArgs = None, prompt: o.InlinePrompts = None, set_: o.Sets = None,
             debug: o.Debug = False) -> None:
    """Check recipes (schema, picture, words/tokens against the CLIP tokenizer of SD v1) without a model; print
    every setting each resolves to."""
    code = EXIT_OK
    with handled(debug):
        recipes = recipes or []
        if not recipes and not prompt:
            raise UsageError("nothing to check: give a RECIPE or --prompt \"a [cat->dog] on a mat\"")
        if recipes.count("-") > 1:
            raise UsageError(STDIN_ONCE)
        groups = [read_recipes(path, list(set_ or [])) for path in recipes]
        groups.append(inline_recipes(list(prompt or []), list(set_ or [])))
        for group in groups:
            for label, recipe in group:
                try:
                    if isinstance(recipe, RecipeError):
                        raise recipe
                    check_name(recipe, label)
                    image = _image(recipe, label)
                    from p2p_cli.files.real import resolve_mask

                    resolve_mask(recipe, label)
                    recipe_loras(recipe, label)
                    if problems := problems_before_loading(recipe, recipe.model):
                        raise RecipeError(problems, label)
                except RecipeError as err:
                    code = report(err, debug=debug)
                    continue
                warn(recipe, label)
                print(f"ok {label}")
                if label.startswith("--prompt"):  # what the inline prompt expands to, as a recipe file
                    print(expansion(recipe))
                print(summary(recipe, image))
    raise typer.Exit(code if code == EXIT_OK else EXIT_INVALID)


def expansion(recipe: Recipe) -> str:
    """The recipe an inline prompt expands to, as YAML lines (indented), ready to paste into a file."""
    import yaml

    data = {"name": recipe.name, "source": recipe.source,
            "edits": [{k: v for k, v in (("target", e.target), ("type", e.type), ("reweight", e.reweight))
                       if v is not None} for e in recipe.edits]}
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip()
    return "  expands to:\n" + "\n".join("    " + line for line in text.splitlines())


def _image(recipe: Recipe, label: str) -> Path | None:
    from p2p_cli.files.real import resolve_image

    return resolve_image(recipe, label)


def summary(recipe: Recipe, image: Path | None = None) -> str:
    """Indented lines: every setting the recipe resolves to (defaults filled in), then each edit."""
    geometry = model_geometry(recipe.model)
    if recipe.size:
        size = "x".join(map(str, recipe.size))
    else:
        size = "native" + (f" ({geometry.native}x{geometry.native})" if geometry else "")
    latent = max(geometry.latent(recipe.size)) if geometry else None
    self_max = (f"{recipe.self_replace_max_res}" if recipe.self_replace_max_res
                else f"{latent // 4} (latent side {latent} / 4)" if latent else "latent side / 4")
    if recipe.blend_res:
        blend_res = f"{recipe.blend_res}"
    elif latent and geometry.cross_depths:  # the engine's rule: the default side, then the nearest side there is
        sides = geometry.cross_sides(geometry.latent(recipe.size))
        blend_res = f"{blend_side(geometry, recipe)} (of the cross-attention sides {sides})"
    else:
        blend_res = "latent side / 4, at least 8, the nearest side the UNet has"
    model = recipe.model or "shapes"
    if "guidance" in recipe.model_fields_set:
        guidance = f"{recipe.guidance:g}"
    elif geometry:
        guidance = f"{geometry.family.guidance:g} (the model family's default)"
    else:
        guidance = "the model family's default (" + ", ".join(
            f"{d.short} {d.guidance:g}" for d in FAMILY_DEFAULTS.values()) + ")"
    joint = bool(geometry) and geometry.family.joint
    layers = f"  self_replace_max_res: {self_max}  blend_res: {blend_res}"
    if joint:
        default = geometry.family.self_blocks_text
        self_blocks = recipe.self_blocks if recipe.self_blocks is not None else default
        layers = (f"  self_blocks: {self_blocks}  blend_blocks: {recipe.blend_blocks or 'every block'}"
                  f"  text_mass: {recipe.text_mass_rule}")
    lines = [
        f"  name: {recipe.name} (writes OUT/{recipe.name}/)",
        f"  model: {model}{' (bundled)' if model == 'shapes' else ''}",
        f"  seed: {recipe.seed}  steps: {recipe.steps}  guidance: {guidance}  size: {size}",
        f"  negative_prompt: {json.dumps(recipe.negative_prompt)}",
        layers,
    ]
    if recipe.image is not None:
        crop = list(recipe.crop) if recipe.crop else "largest centred box"
        lines.append(f"  image: {image or recipe.image}  crop: {crop}  inversion: {recipe.inversion_method}")
    sdxl = {k: list(v) for k in ("original_size", "crops_coords_top_left", "target_size")
            if (v := getattr(recipe, k, None)) is not None}
    if sdxl:
        lines.append("  " + "  ".join(f"{k}: {v}" for k, v in sdxl.items()))
    for lora in getattr(recipe, "loras", None) or []:
        lines.append(f"  lora: {lora.path} x{lora.scale:g}")
    lines.append(f"  source: {json.dumps(recipe.source)}")
    family_self = geometry.family.self_replace if geometry else None
    for k, edit in enumerate(recipe.edits, 1):
        cross = recipe.cross_for(edit)
        words = "".join(f", {w} {_win(win)}" for w, win in cross.words.items())
        if edit.self_replace is None and recipe.self_replace is None and family_self is not None:
            self_window = f"{_win((0.0, family_self))} (the model family's default)"
        else:
            self_window = _win(recipe.self_for(edit))
        parts = [f"cross_replace {_win(cross.default)}{words}", f"self_replace {self_window}"]
        if edit.reweight:
            parts.append("reweight " + ", ".join(f"{w} x{f:g}" for w, f in edit.reweight.items()))
        if edit.local_blend:
            lb = edit.local_blend
            sub = f", minus {', '.join(lb.subtract)} above {lb.subtract_threshold:g}" if lb.subtract else ""
            parts.append(f"local blend {', '.join(lb.words)} above {lb.threshold:g} of the maximum from step"
                         f" fraction {lb.start:g}{sub}")
        if (edit.baseline or recipe.baseline) and edit.type != "reweight":
            parts.append(f"baseline-{k}.png")
        lines.append(f"  edit-{k} (edits[{k - 1}]): {edit.type} {json.dumps(edit.target)}")
        lines.append(f"      {'; '.join(parts)}")
    return "\n".join(lines)


def _win(window: tuple[float, float]) -> str:
    start, end = window
    return f"{end:g}" if start == 0 else f"[{start:g}, {end:g}]"
