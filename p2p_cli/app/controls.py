"""What the app's controls stand for, without gradio: the recipe (read by the CLI's own inline reader and `--set`),
the lines `p2p validate` prints for it, and the `p2p edit` command line that reproduces a run."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

import yaml

from p2p_cli.checks import model_geometry, problems_before_loading
from p2p_cli.recipe import DEFAULT_CROSS_REPLACE, DEFAULT_INVERSION, InversionMethod, Recipe, RecipeError

INVERSIONS = list(get_args(InversionMethod))

BUNDLED = ("shapes", "shapes-mmdit")  # the models every install has (UNet; SD3-layout transformer)
PAINTED = "painted-mask.png"  # a run folder's copy of the painted mask (the picture's: picture.png, .jpg, ...)
RECIPE_LABEL = "recipe"  # the source/target fields' recipe (the inline prompt's is "--prompt", as on the CLI)


def family_of(model: str) -> str:
    """The model's family ("sd", "sdxl", "sd3", "flux") from its config files; "sd" when they cannot be read."""
    geo = model_geometry(model)
    return geo.family.name if geo else "sd"


def family_defaults(model: str, image: bool = False) -> dict[str, Any]:
    """The guidance, windows and inversion a run on this model uses when a recipe sets none; `image`: a real
    picture's, which the model folder's p2p-defaults.json may set apart (a malformed file: RecipeError, from
    model_geometry)."""
    from p2p_cli.family_defaults import FAMILY_DEFAULTS, default_inversion
    from p2p_cli.recipe import DEFAULT_SELF_REPLACE

    family = FAMILY_DEFAULTS[family_of(model)]
    geo = model_geometry(model) if image else None  # cached: family_of has read it
    folder = geo.defaults if geo is not None else None
    windows = {"cross": DEFAULT_CROSS_REPLACE,
               "self_window": family.self_replace if family.self_replace is not None else DEFAULT_SELF_REPLACE}
    if folder is not None:
        own = {"cross": folder.image.cross_replace, "self_window": folder.image.self_replace}
        windows |= {k: v for k, v in own.items() if v is not None}
    return {"guidance": family.guidance, **windows, "inversion": default_inversion(folder)}


@dataclass
class Controls:
    """The Edit tab's settings. An inline `prompt` wins; with none, `source` and `targets` (one a line) are used."""

    prompt: str = ""
    source: str = ""
    targets: str = ""
    model: str = "shapes"
    seed: int = 1
    steps: int = 50
    guidance: float = 7.5
    cross: float = DEFAULT_CROSS_REPLACE
    self_window: float = 0.4
    blend: list[str] = field(default_factory=list)  # local-blend words, for every edit
    word_windows: str = ""  # per-word cross windows: "blue: 0.3, circle: 0.6"
    baseline: bool = True
    attention: bool = False  # keep the attention maps (`--save-attention`)
    image: str | None = None  # a real picture to edit (an uploaded file): the source prompt describes it
    inversion: str = DEFAULT_INVERSION  # how the picture is inverted
    mask: str | None = None  # where the edits may change the picture (white): painted over it

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Controls:
        """Controls from a mapping of field names (what the widgets give), with numbers made ints where due."""
        known = {f.name for f in fields(cls)}
        c = cls(**{k: v for k, v in values.items() if k in known})
        c.seed, c.steps = int(c.seed), int(c.steps)
        c.blend = list(c.blend or [])
        c.image, c.mask = c.image or None, c.mask or None
        return c

    @property
    def inline(self) -> bool:
        return bool(self.prompt.strip())

    @property
    def picture_copy(self) -> str:
        """The name of the picture's copy in a run folder: picture.png (or .jpg, ..., as uploaded)."""
        return "picture" + (Path(self.image).suffix.lower() if self.image else ".png")

    @property
    def label(self) -> str:
        return "--prompt" if self.inline else RECIPE_LABEL

    def document(self) -> dict[str, Any]:
        """The recipe before the settings (as a YAML file would give): the inline prompt's expansion, or the fields'."""
        from p2p_cli.text.inline import InlineError, expand

        if self.inline:
            try:
                return expand(self.prompt)
            except InlineError as err:
                raise RecipeError([f"prompt: {err}"], "--prompt") from None
        targets = [t.strip() for t in self.targets.splitlines() if t.strip()]
        if not self.source.strip():
            raise RecipeError(["source: empty; write an inline edit such as \"a [red->blue] circle\" in the prompt"
                               " box, or a source prompt and a target a line"], RECIPE_LABEL)
        words = re.findall(r"[\w'-]+", self.source)
        name = "-".join(words[:8])[:48].strip("-").lower() or "recipe"
        return {"name": name, "source": self.source.strip(), "edits": [{"target": t} for t in targets]}

    def settings(self, edits: int, copies: bool = False) -> list[str]:
        """The settings as `--set` lines (seed and steps included: the CLI's --seed and --steps are these); copies:
        the picture and mask go by the names of their copies beside the pictures (picture.png, painted-mask.png)."""
        cross = _number(self.cross)
        if words := self.windows():
            cross = json.dumps({"default": float(cross), **words})  # a JSON object is a YAML flow mapping
        lines = [f"seed={self.seed}", f"steps={self.steps}", f"guidance={_number(self.guidance)}",
                 f"cross_replace={cross}", f"self_replace={_number(self.self_window)}"]
        if self.blend:
            words = ", ".join(json.dumps(w) for w in self.blend)  # a JSON string is a YAML flow scalar
            lines += [f"edits.{k}.local_blend.words=[{words}]" for k in range(edits)]
        if self.image:
            lines += [f"image={_path(self.picture_copy if copies else self.image)}", f"inversion={self.inversion}"]
        if self.mask:
            lines.append(f"mask={_path(PAINTED if copies else self.mask)}")
        return lines

    def windows(self) -> dict[str, float]:
        """The per-word cross windows ("blue: 0.3, circle: 0.6" -> {"blue": 0.3, "circle": 0.6}); RecipeError on
        `cross_replace` if they cannot be read."""
        words: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in re.split(r"[,;\n]", self.word_windows or ""))):
            word, sep, tau = part.replace("=", ":").rpartition(":")
            try:
                words[word.strip()] = float(tau)
            except ValueError:
                sep = ""
            if not sep or not word.strip():
                raise RecipeError([f"cross_replace: per-word window {part!r}: write word: tau, e.g. blue: 0.3"],
                                  self.label)
        return words

    def recipe(self) -> Recipe:
        """The recipe these controls stand for, checked as `p2p validate` checks it; RecipeError if it is not valid."""
        from p2p_cli.overrides import apply_overrides, inline_recipes
        from p2p_cli.recipe import parse_recipe

        data = self.document()
        sets = self.settings(len(data.get("edits") or []))
        if self.inline:  # exactly what `p2p edit --prompt TEXT --set ...` reads
            ((_, recipe),) = inline_recipes([self.prompt], sets)
            if isinstance(recipe, RecipeError):
                raise recipe
        else:
            try:
                recipe = parse_recipe(apply_overrides(data, sets), RECIPE_LABEL)
            except ValueError as err:
                if isinstance(err, RecipeError):
                    raise
                raise RecipeError([str(err)], RECIPE_LABEL) from None
        recipe = recipe.model_copy(update={"model": self.model})
        if recipe.image is not None:  # the CLI's check of the picture: readable, under Pillow's bomb limit
            from p2p_cli.files.real import resolve_image

            resolve_image(recipe, self.label)
        if recipe.mask is not None:
            from p2p_cli.files.real import resolve_mask

            resolve_mask(recipe, self.label)
        problems = problems_before_loading(recipe, self.model)  # what `p2p validate` finds
        if problems:
            raise RecipeError(problems, self.label)
        return recipe

    def command(self, recipe_file: str = "recipe.yaml") -> str:
        """The `p2p edit` command line that makes the same pictures, run in the folder of the files the app offers
        (the fields' recipe is its recipe.yaml; a real picture is its copy, picture.png)."""
        data = self.document()
        args = ["p2p", "edit"]
        args += ["--prompt", self.prompt] if self.inline else [recipe_file]
        args += ["--model", self.model]
        if self.inline:
            sets = self.settings(len(data.get("edits") or []), copies=True)
            args += ["--seed", str(self.seed), "--steps", str(self.steps)]
            for line in sets[2:]:
                args += ["--set", line]
        if self.baseline:
            args.append("--baseline")
        if self.attention:
            args.append("--save-attention")
        return " ".join(shlex.quote(a) for a in args)

    def words(self) -> list[str]:
        """The words of the source and target prompts (the local-blend choices), in order, each once."""
        try:
            data = self.document()
        except RecipeError:
            return []
        texts = [data.get("source") or ""] + [e.get("target", "") for e in data.get("edits") or []]
        seen: dict[str, None] = {}
        for text in texts:
            for word in re.findall(r"[\w'-]+", str(text)):
                seen.setdefault(word.lower(), None)
        return list(seen)


def recipe_yaml(recipe: Recipe) -> str:
    """A recipe as a YAML file `p2p edit` reads (the settings it was given, none of the defaults)."""
    data = recipe.model_dump(mode="json", exclude_unset=True, exclude_none=True)

    def window(value):  # a cross schedule as recipes write it: a window, or {default: ..., word: ...}
        if isinstance(value, dict) and set(value) <= {"default", "words"}:
            return {"default": value["default"], **value["words"]} if value.get("words") else value["default"]
        return value

    if "cross_replace" in data:
        data["cross_replace"] = window(data["cross_replace"])
    for edit in data.get("edits", []):
        if "cross_replace" in edit:
            edit["cross_replace"] = window(edit["cross_replace"])
    order = ["name", "model", "source", "seed", "steps", "guidance"]
    ordered = {k: data[k] for k in order if k in data} | {k: v for k, v in data.items() if k not in order}
    return yaml.dump(_flow_numbers(ordered), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False)


class _Flow(list):
    """A list of numbers (a window, a size), written on one line: [0.0, 0.8]."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value,
                                                                                flow_style=True))


def _flow_numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _flow_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return _Flow(value)
        if value and all(isinstance(v, str) for v in value):
            return _Flow(value)  # local-blend words
        return [_flow_numbers(v) for v in value]
    return value


def error_text(err: RecipeError) -> str:
    """A recipe's problems as `p2p validate` reports them: "--prompt: invalid recipe (1 problem)" and a line each."""
    n = len(err.problems)
    return "\n".join([f"{err.source}: invalid recipe ({n} problem{'s' if n != 1 else ''})"]
                     + [f"  {p}" for p in err.problems])


def from_recipe(recipe: Recipe) -> Controls:
    """The controls for a recipe (a PNG p2p wrote): its source and targets in the fields, its settings on the
    sliders; what the controls cannot show (a per-edit window, a reweight, a window that starts after 0) is left
    out."""
    model = recipe.model if recipe.model in BUNDLED else "shapes"
    defaults = family_defaults(model)
    first = recipe.edits[0]
    blend = first.local_blend.words if first.local_blend is not None else []
    words = recipe.cross_replace.words if recipe.cross_replace is not None else {}
    return Controls(word_windows=", ".join(f"{w}: {_number(end)}" for w, (start, end) in words.items() if not start),
                    source=recipe.source, targets="\n".join(e.target for e in recipe.edits), model=model,
                    seed=recipe.seed, steps=recipe.steps, guidance=recipe.guidance,
                    cross=recipe.cross_for(first).default[1] if recipe.cross_replace is not None else defaults["cross"],
                    self_window=recipe.self_for(first)[1] if recipe.self_replace is not None
                    else defaults["self_window"], blend=list(blend), baseline=recipe.baseline)


def _number(value: float) -> str:
    return f"{float(value):g}"


def _path(path: str) -> str:
    """A path as a --set value: plain, or a YAML (JSON) string when it holds other characters."""
    return path if re.fullmatch(r"[\w./-]+", path) else json.dumps(path)
