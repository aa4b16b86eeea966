"""`p2p validate RECIPE...`: check recipes without loading any model (nor torch), and show every resolved setting."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from p2p_cli.cli import options as o
from p2p_cli.cli.common import overrides_from
from p2p_cli.cli.jobs import warn
from p2p_cli.runs.edits import STDIN_ONCE, check_name, check_names
from p2p_cli.cli.errors import EXIT_INVALID, EXIT_OK, UsageError, handled, printable, report
from p2p_cli.checks import blend_side, missing_model_problems, model_geometry, problems_before_loading
from p2p_cli.family_defaults import FAMILY_DEFAULTS, with_folder_defaults
from p2p_cli.files.real import recipe_loras
from p2p_cli.manifests import read_recipes
from p2p_cli.overrides import inline_recipes
from p2p_cli.recipe import Recipe, RecipeError


def validate(recipes: o.OptionalRecipeArgs = None, prompt: o.InlinePrompts = None, set_: o.Sets = None,
             trust_recipe: o.TrustRecipe = False, name: o.InlineNames = None, memory: o.Memory = None,
             device: o.DeviceOpt = o.Device.auto, dtype: o.DtypeOpt = o.Dtype.auto, quantize: o.Quantize = None,
             offload: o.Offload = None, vae: o.Vae = None, debug: o.Debug = False) -> None:
    """Check recipes (schema, picture, words and token counts against CLIP's tokenizer, and an SD3 or FLUX.1
    model's T5 when it is on disk or in the Hugging Face cache) without loading a model; print every setting each
    resolves to; with --memory, the memory plan on a card of that size."""
    code = EXIT_OK
    set_ = overrides_from(set_, quantize=quantize, offload=offload, vae=vae)
    with handled(debug):
        budgets = _budgets(memory)
        recipes = recipes or []
        if not recipes and not prompt:
            raise UsageError("nothing to check: give a RECIPE or --prompt \"a [cat->dog] on a mat\"")
        if recipes.count("-") > 1:
            raise UsageError(STDIN_ONCE)
        groups = [read_recipes(path, list(set_ or []), trust=trust_recipe) for path in recipes]
        check_names(name or [], prompt or [])
        groups.append(inline_recipes(list(prompt or []), list(set_ or []), name or []))
        folders: dict[str, str] = {}  # name -> the recipe that writes OUT/<name>/
        for group in groups:
            for label, recipe in group:
                try:
                    if isinstance(recipe, RecipeError):
                        raise recipe
                    check_name(recipe, label)
                    if recipe.name in folders:
                        raise RecipeError([f"name: {recipe.name!r} is also the name of {folders[recipe.name]}: both"
                                           f" would write OUT/{recipe.name}/; give one another name"], label)
                    folders[recipe.name] = label
                    image = _image(recipe, label)
                    from p2p_cli.files.real import resolve_mask

                    resolve_mask(recipe, label)
                    recipe_loras(recipe, label)
                    problems = missing_model_problems(recipe.model) or problems_before_loading(recipe, recipe.model)
                    if problems:
                        raise RecipeError(problems, label)
                except RecipeError as err:
                    code = report(err, debug=debug)
                    continue
                warn(recipe, label)
                print(printable(f"ok {label}"))
                if label.startswith("--prompt"):  # what the inline prompt expands to, as a recipe file
                    print(printable(expansion(recipe)))
                print(printable(summary(recipe, image)))
                if budgets:
                    print(memory_lines(recipe, budgets, device.value, dtype.value))
    raise typer.Exit(code if code == EXIT_OK else EXIT_INVALID)


def _budgets(memory: str | None) -> list[int]:
    from p2p_cli.memory_plan import parse_memory

    try:
        return [parse_memory(part) for part in memory.split(",")] if memory else []
    except ValueError as err:
        raise UsageError(str(err)) from None


def memory_lines(recipe: Recipe, budgets: list[int], device: str, dtype: str) -> str:
    """The memory plan's lines for each card size (memory_plan.py)."""
    from p2p_cli.memory_plan import plan_for

    device = "cuda" if device == "auto" else device
    dtype = dtype if dtype != "auto" else "fp16" if device == "cuda" else "fp32"
    plan = plan_for(recipe.model, recipe, dtype)
    if plan is None:
        return (f"  memory: {recipe.model}'s sizes are not known here (no local folder or cached config, and not one"
                " of the published models the plan knows); the run checks once it loads")
    return "\n".join(line for budget in budgets for line in plan.lines(budget, device))


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


def _vae_text(recipe: Recipe, geometry) -> str:
    """How the pictures are decoded (loading.tile_side): whole, or in tiles of a side."""
    if recipe.vae == "full":
        return "whole pictures"
    if geometry is None or geometry.vae_tile is None:  # the model's files are not here
        return ("in the VAE's tiles, or of half the picture where it fits in one" if recipe.vae == "tiled"
                else "in the VAE's tiles where the picture is larger than one")
    side = geometry.vae_tiles(recipe.vae, recipe.size)
    if side is None:
        return f"whole pictures: not larger than the VAE's {geometry.vae_tile} px tile"
    return f"in {side} px tiles, one picture at a time"


def summary(recipe: Recipe, image: Path | None = None) -> str:
    """Indented lines: every setting the recipe resolves to (defaults filled in), then each edit."""
    geometry = model_geometry(recipe.model)
    applied = geometry.defaults.for_recipe(recipe) if geometry and geometry.defaults else {}
    recipe = with_folder_defaults(recipe, geometry.defaults) if applied else recipe
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
        f"  vae: {recipe.vae or 'auto'} ({_vae_text(recipe, geometry)})",
    ]
    if recipe.image is not None:
        crop = list(recipe.crop) if recipe.crop else "largest centred box"
        lines.append(f"  image: {image or recipe.image}  crop: {crop}  inversion: {recipe.inversion_method}")
    if applied:
        given = "  ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in applied.items())
        lines.append(f"  {given} (this model's defaults for real pictures, from {geometry.defaults.file})")
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
            words = [*lb.words, *(f"{w} (source)" for w in lb.source_words),
                     *(f"{w} (target)" for w in lb.target_words)]
            parts.append(f"local blend {', '.join(words)} above {lb.threshold:g} of the maximum from step"
                         f" fraction {lb.start:g}{sub}")
        if (edit.baseline or recipe.baseline) and edit.type != "reweight":
            parts.append(f"baseline-{k}.png")
        lines.append(f"  edit-{k} (edits[{k - 1}]): {edit.type} {json.dumps(edit.target)}")
        lines.append(f"      {'; '.join(parts)}")
    return "\n".join(lines)


def _win(window: tuple[float, float]) -> str:
    start, end = window
    return f"{end:g}" if start == 0 else f"[{start:g}, {end:g}]"
