"""YAML recipe -> validated Recipe; every problem is reported at once with its field path."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from p2p_cli.loading import Loading, quantize_problems
from p2p_cli.loading import parse as parse_loading
from p2p_cli.text.words import same_words, split_words

BUNDLED_UNET = ("shapes", "bundled:shapes")  # `model: shapes` (or none): the bundled model; run.json says bundled:shapes
BUNDLED_MMDIT = ("shapes-mmdit", "bundled:shapes-mmdit")  # the bundled transformer (SD3-layout) shapes model
DEFAULT_CROSS_REPLACE = 0.8
DEFAULT_SELF_REPLACE = 0.4

EditType = Literal["replace", "refine", "reweight"]
InversionMethod = Literal["direct", "null-text", "negative-prompt", "ddim", "ddpm", "flowedit"]
DEFAULT_INVERSION: InversionMethod = "direct"
Window = tuple[float, float]


class RecipeError(ValueError):
    """A recipe with problems; `problems` holds one "path: message" line each."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = problems
        self.source = source
        self.lines: list[int | None] | None = None  # each problem's line in the file, once known (with_lines)
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def parse_window(value: Any) -> Window:
    """A tau (float: window [0, tau)) or a [start, end] pair -> (start, end), both in [0, 1]."""
    if isinstance(value, bool):
        raise ValueError("expected a number in [0, 1] or a [start, end] pair, got a boolean")
    if isinstance(value, (int, float)):
        start, end = 0.0, float(value)
        if not 0.0 <= end <= 1.0:
            raise ValueError(f"tau {value} is outside [0, 1]")
        return start, end
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"expected [start, end] with two numbers, got {list(value)}")
        start, end = float(value[0]), float(value[1])
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"start {value[0]} is outside [0, 1]")
        if not 0.0 <= end <= 1.0:
            raise ValueError(f"end {value[1]} is above 1" if end > 1 else f"end {value[1]} is below 0")
        if start > end:
            raise ValueError(f"start {value[0]} is after end {value[1]}")
        return start, end
    raise ValueError(f"expected a number in [0, 1] or a [start, end] pair, got {value!r}")


class CrossSchedule(BaseModel):
    """Cross-attention injection windows: a default and optional per-word windows (paper sec. 3.2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    default: Window
    words: dict[str, Window] = Field(default_factory=dict)


def _parse_cross(value: Any) -> Any:
    if isinstance(value, CrossSchedule) or value is None:
        return value
    if isinstance(value, dict):
        words, problems = {}, []
        default = (0.0, 1.0)
        for key, window in value.items():
            try:
                parsed = parse_window(window)
            except ValueError as err:
                problems.append(f"[{key}] {err}")
                continue
            if key == "default":
                default = parsed
            else:
                words[str(key)] = parsed
        if problems:
            raise ValueError("; ".join(problems))
        return CrossSchedule(default=default, words=words)
    return CrossSchedule(default=parse_window(value))


def _parse_self(value: Any) -> Any:
    return None if value is None else parse_window(value)


def _parse_size(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected an int or [height, width]")
    if isinstance(value, int):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"expected an int or [height, width] of ints, got {value!r}")
    h, w = value
    for side in (h, w):
        if side < 8 or side % 8:
            raise ValueError(f"{side} is not a positive multiple of 8")
    return (h, w)


def _parse_pair(value: Any) -> Any:
    """[a, b] of non-negative ints (SDXL's size and crop ids, in pixels)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"expected [height, width] or [top, left] in pixels (2 ints), got {value!r}")
    if min(value) < 0:
        raise ValueError(f"{list(value)} has a negative number")
    return tuple(value)


def parse_crop(value: Any) -> Any:
    """[left, top, right, bottom] in pixels of the picture, right > left and bottom > top."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"expected [left, top, right, bottom] in pixels (4 ints), got {value!r}")
    left, top, right, bottom = value
    if min(value) < 0:
        raise ValueError(f"{list(value)} has a negative coordinate")
    if right <= left or bottom <= top:
        raise ValueError(f"{list(value)} is empty: right must be greater than left and bottom greater than top")
    return tuple(value)


CrossField = Annotated[CrossSchedule | None, BeforeValidator(_parse_cross)]
PairField = Annotated[tuple[int, int] | None, BeforeValidator(_parse_pair)]
SelfField = Annotated[Window | None, BeforeValidator(_parse_self)]


class LocalBlend(BaseModel):
    """Edit only where the words are (paper sec. 3.2, local editing): mask from their cross-attention.

    `words` are looked up in both prompts; `source_words` only in the source and `target_words` only in the
    target, as the reference's LocalBlend takes one word list per prompt ("cat" in the source, "hat" in the
    target: the hat's mask joined to the cat's, not the target's cat too)."""

    model_config = ConfigDict(extra="forbid")
    words: list[str] = Field(default_factory=list)
    source_words: list[str] = Field(default_factory=list)
    target_words: list[str] = Field(default_factory=list)
    threshold: float = Field(0.3, gt=0.0, lt=1.0)
    start: float = Field(0.2, ge=0.0, le=1.0)
    subtract: list[str] = Field(default_factory=list)
    subtract_threshold: float = Field(0.3, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _some_word(self) -> LocalBlend:
        if not (self.words or self.source_words or self.target_words):
            raise ValueError("local_blend needs a word: words (looked up in both prompts), source_words (in the"
                             " source only) or target_words (in the target only)")
        return self

    @property
    def all_words(self) -> list[str]:
        """Every blend word, each once (words, then the source's, then the target's)."""
        return list(dict.fromkeys(self.words + self.source_words + self.target_words))


class Lora(BaseModel):
    """LoRA weights to load into the model before sampling (diffusers' LoRA loader; safetensors only)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)  # a .safetensors file, relative to the recipe file
    scale: float = Field(1.0, ge=-10.0, le=10.0)

    @field_validator("path")
    @classmethod
    def _safetensors(cls, path: str) -> str:
        if not path.endswith(".safetensors"):
            raise ValueError(f"{path} is not a .safetensors file (pickled LoRA files are not loaded)")
        return path


class Edit(BaseModel):
    """One target prompt and how its attention is tied to the source's."""

    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1)
    type: EditType | None = None
    cross_replace: CrossField = None
    self_replace: SelfField = None
    reweight: dict[str, float] | None = None
    local_blend: LocalBlend | None = None
    baseline: bool = False

    @model_validator(mode="after")
    def _check(self) -> Edit:
        if self.type == "reweight" and not self.reweight:
            raise ValueError("type reweight needs reweight factors, e.g. reweight: {smiling: 5}")
        if self.cross_replace is not None and "default" in self.cross_replace.words:
            raise ValueError("cross_replace: 'default' is reserved")
        return self


# what recipes run in one batch (p2p edit --batch-rows) must share: the batch has one schedule, one size, one
# guidance, one set of layer rules and SDXL size/crop ids; seeds and negative prompts may differ
BATCH_SHARED = ("steps", "size", "guidance", "self_replace_max_res", "blend_res", "self_blocks", "blend_blocks",
                "text_mass", "original_size", "crops_coords_top_left", "target_size", "shift", "vae", "edit_start")


def batch_groups(recipes: list, baseline: bool = False, limit: int | None = None,
                 alone: list[bool] | None = None) -> list[list[int]]:
    """The batches several recipes run in (`p2p edit --batch-rows`, p2p.edit_many): each recipe in order with the
    later ones that share its model and what BATCH_SHARED names, up to `limit` denoiser rows a batch (None: no
    limit; a recipe with more rows than it runs alone). A real picture or a mask (and alone[k]) runs alone.
    Returns lists of indices, each recipe in exactly one."""
    def rows(r) -> int:  # its prompts (source, edits, baselines), twice with guidance above 1
        return (1 + len(r.edits) + len(r.baseline_edits(baseline))) * (2 if r.guidance and r.guidance > 1 else 1)

    def solo(k: int) -> bool:
        return bool(recipes[k].image is not None or recipes[k].mask is not None or (alone and alone[k]))

    def key(r) -> list[str]:
        return [repr(getattr(r, k)) for k in ("model", *BATCH_SHARED)]

    placed, groups = set(), []
    for first in range(len(recipes)):
        if first in placed:
            continue
        group, used = [first], rows(recipes[first])
        if not solo(first):
            for other in range(first + 1, len(recipes)):
                if (other not in placed and not solo(other) and key(recipes[other]) == key(recipes[first])
                        and (limit is None or used + rows(recipes[other]) <= limit)):
                    group.append(other)
                    used += rows(recipes[other])
        placed.update(group)
        groups.append(group)
    return groups


class _Checked(type(BaseModel)):
    """Recipe(...) raises RecipeError, with every problem and its field, instead of pydantic's ValidationError
    (a metaclass, so pydantic's own validation, which does not go through it, is unchanged)."""

    def __call__(cls, *args: Any, **data: Any):
        try:
            return super().__call__(*args, **data)
        except ValidationError as err:
            name = data.get("name")
            raise RecipeError(_problems(err), name if isinstance(name, str) else "recipe") from None


class Recipe(BaseModel, metaclass=_Checked):
    """A whole recipe: the source prompt, its edits and the sampling settings."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    model: str | None = None
    seed: int = Field(8888, ge=0, lt=2**63)
    steps: int = Field(50, ge=1, le=1000)
    guidance: float = Field(7.5, ge=0.0)
    size: Annotated[tuple[int, int] | None, BeforeValidator(_parse_size)] = None
    negative_prompt: str = ""
    source: str = Field(min_length=1)
    cross_replace: CrossField = None
    self_replace: SelfField = None
    self_replace_max_res: int | None = Field(None, ge=1)
    blend_res: int | None = Field(None, ge=1)
    # transformer families (SD3, FLUX): the blocks (numbered from 0; FLUX: double-stream first) whose image-image
    # attention a target takes from the source (the analogue of self_replace_max_res), and whose text maps local
    # blend reads; None: the family's default (SD3: every block; FLUX: Stable Flow's vital layers) / every block
    self_blocks: list[Annotated[int, Field(ge=0)]] | None = None
    blend_blocks: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)
    shift: float | None = Field(None, gt=0)  # flow-matching families: the sampler's fixed shift (None: the family's)
    # transformer families: whose share of attention an edited row gives its text keys (the rest goes to image
    # keys): the source's, the target's own, or the source's while the self window is open and the target's own
    # after it (None: self-window); engine/joint_attention.py says why
    text_mass: Literal["source", "target", "self-window"] | None = None
    # the fraction of the steps every target (and baseline) takes from its source before it edits: after each of
    # the first int(edit_start x steps) steps the rows are set to the source's latent (edit-friendly DDPM's T_skip,
    # FlowEdit's n_max = T - that); None: 0, every step edits
    edit_start: float | None = Field(None, ge=0.0, lt=1.0)
    baseline: bool = False
    image: str | None = Field(None, min_length=1)  # a real picture to edit (relative to the recipe file)
    mask: str | None = Field(None, min_length=1)  # where the edits may change the picture (white), relative too
    crop: Annotated[tuple[int, int, int, int] | None, BeforeValidator(parse_crop)] = None  # else a centre crop
    inversion: InversionMethod | None = None  # how `image` is inverted; None: direct
    # SDXL's micro-conditioning, in pixels: (height, width), (top, left), (height, width); None: the picture's
    original_size: PairField = None
    crops_coords_top_left: PairField = None
    target_size: PairField = None
    loras: list[Lora] = Field(default_factory=list)  # LoRA weights, loaded with the family pipeline's loader
    quantize: str | dict[str, str] | None = None  # loading.py: int8 / fp8 / bnb-8bit / bnb-4bit / a .gguf, per part
    offload: Literal["none", "model", "sequential", "group"] | None = None  # diffusers' offload hooks
    vae: Literal["auto", "tiled", "full"] | None = None  # diffusers' VAE tiling and slicing (loading.tile_side)
    edits: list[Edit] = Field(min_length=1)

    @model_validator(mode="after")
    def _resolve_edits(self) -> Recipe:
        problems: list[str] = []
        if not self.source.strip():
            problems.append("source: holds only spaces; describe the picture in words")
        if self.image is None:
            problems += [f"{key}: only applies to a real picture (add image: path/to/picture.png)"
                         for key in ("crop", "inversion") if getattr(self, key) is not None]
        problems += quantize_problems(self.quantize)
        for i, edit in enumerate(self.edits):
            problems += [f"edits[{i}].{p}" for p in _resolve_edit(self, edit)]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def baseline_edits(self, baseline: bool = False) -> list[int]:
        """Numbers (from 1) of the edits that get an uncontrolled baseline row: asked for (the run's flag, the
        recipe's or the edit's), and not reweight (its prompt is the source's: the source row again)."""
        return [k for k, e in enumerate(self.edits, start=1)
                if (baseline or self.baseline or e.baseline) and e.type != "reweight"]

    @property
    def loading(self) -> Loading:
        """The model's loading settings (quantize, offload: loading.py)."""
        return parse_loading(self.quantize, self.offload)

    @property
    def inversion_method(self) -> InversionMethod:
        """How the picture is inverted: the recipe's `inversion`, else direct."""
        return self.inversion or DEFAULT_INVERSION

    def cross_for(self, edit: Edit) -> CrossSchedule:
        """The edit's cross-attention schedule, falling back to the recipe's, then to the default tau 0.8."""
        return edit.cross_replace or self.cross_replace or CrossSchedule(default=(0.0, DEFAULT_CROSS_REPLACE))

    @property
    def text_mass_rule(self) -> str:
        """text_mass, or its default (None means "not set": UNet models refuse a set one)."""
        return self.text_mass or "self-window"

    def self_for(self, edit: Edit) -> Window:
        """The edit's self-attention window, falling back to the recipe's, then to the default tau 0.4."""
        return edit.self_replace or self.self_replace or (0.0, DEFAULT_SELF_REPLACE)


def infer_type(source: str, edit: Edit) -> EditType:
    """The rule when `type` is omitted: same words + reweight -> reweight; same word count -> replace; else refine."""
    if edit.reweight and same_words(source, edit.target):
        return "reweight"
    if len(split_words(source)) == len(split_words(edit.target)):
        return "replace"
    return "refine"


def _resolve_edit(recipe: Recipe, edit: Edit) -> list[str]:
    """Fill in the type and return the problems of one edit ("field: message")."""
    problems = []
    if not edit.target.strip():
        problems.append("target: holds only spaces; write the edited prompt")
    if edit.type is None:
        edit.type = infer_type(recipe.source, edit)
    n_src, n_tgt = len(split_words(recipe.source)), len(split_words(edit.target))
    if edit.type == "replace" and n_src != n_tgt:
        problems.append(
            f"type: replace needs the same number of words in source ({n_src}) and target ({n_tgt});"
            " use type: refine to add or remove words"
        )
    return problems


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-before[_parse_cross(), nullable[CrossSchedule]]",):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys a recipe may have where `loc` (a key's path, the key last) is: the fields of the model there."""
    import typing

    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        todo, model = [field.annotation] if field else [], None
        while todo:  # unwrap Optional[...], list[...], Annotated[...] down to a model
            kind = todo.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                model = kind
                break
            todo += list(typing.get_args(kind))
        if model is None:
            return []
    return list(model.model_fields)


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """"; did you mean cross_replace?" for a misspelt key, else the keys allowed there."""
    import difflib

    keys = _fields_at(loc)
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6) if loc else []
    if close:
        return f"; did you mean {close[0]}?"
    return f"; the keys here are {', '.join(keys)}" if keys else ""


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and ("function-" in p or p.startswith("nullable"))))


def _problems(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = _clean_loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)" + _did_you_mean(loc)
        elif e["type"] in ("int_parsing", "float_parsing", "int_from_float"):
            kind = "a number" if e["type"] == "float_parsing" else "a whole number"
            msg = f"expected {kind} in digits, got {e['input']!r}"
        elif e["type"] == "missing":
            msg = "required, but missing"
        path = _format_loc(loc)
        for line in msg.split("\n"):  # the model validator joins per-edit problems that carry their own paths
            lines.append(line if (not path and line.startswith("edits[")) else f"{path}: {line}" if path else line)
    return lines


# Bounds on what a recipe may be, checked before it is parsed, validated or tokenized: a recipe is a short text.
MAX_RECIPE_BYTES = 256 * 1024  # the file (or standard input)
MAX_VALUES = 20_000  # keys, values and items, with YAML aliases expanded (a "billion laughs" document is refused)
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_TEXT = 4096  # characters in one string (a prompt is read as at most 77 tokens)
NAME_MAX_BYTES = 200  # a name becomes a folder, and its temporary sibling ".NAME.tmp-PID-XXXXXXXX" must fit in 255


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an output folder's name, or None when it can."""
    why = None
    if not name or name != name.strip():
        why = "it is empty or starts or ends with spaces"
    elif "/" in name or "\\" in name:
        why = "it holds a path separator"
    elif name.startswith("."):
        why = "it starts with a dot"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "it holds a control character"
    else:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            why = "it is not valid Unicode text"
        else:
            if size > NAME_MAX_BYTES:
                why = f"it is {size} bytes long; at most {NAME_MAX_BYTES}"
    return None if why is None else f"{name[:60]!r}{'...' if len(name) > 60 else ''} cannot be a folder name: {why}" \
        " (use letters, digits, - and _)"


def _walk(data: Any) -> list[str]:
    """Problems of the decoded document that the schema does not see: sizes, nesting, non-finite numbers, text
    that is not Unicode. Raises RecipeError at once when the document is too big or too deep to look at."""
    problems: list[str] = []
    count = 0

    def visit(node: Any, path: str, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise _TooBig(f"the recipe holds more than {MAX_VALUES} values (with aliases expanded); a recipe is a"
                          " short list of edits")
        if depth > MAX_DEPTH:
            raise _TooBig(f"{path or 'the recipe'}: nested more than {MAX_DEPTH} levels deep")
        where = path or "the recipe"
        if isinstance(node, float) and not math.isfinite(node):
            problems.append(f"{where}: {node} is not a finite number")
        elif isinstance(node, str):
            if len(node) > MAX_TEXT:
                problems.append(f"{where}: {len(node)} characters; at most {MAX_TEXT} (a prompt reads 77 tokens)")
            _check_unicode(node, where)
        elif isinstance(node, dict):
            for key, value in node.items():
                count += 1
                if isinstance(key, str):
                    _check_unicode(key, f"{path}: the key {key.encode('utf-8', 'backslashreplace').decode()!r}"
                                   if path else f"the key {key.encode('utf-8', 'backslashreplace').decode()!r}")
                visit(value, f"{path}.{key}" if path else str(key), depth + 1)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]", depth + 1)

    visit(data, "", 0)
    return problems


class _TooBig(ValueError):
    """A document refused before validation: too big, too deep, or text that is not Unicode."""


def _check_unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\\ud800" escapes make lone surrogates, which nothing downstream can encode
        where = where.encode("utf-8", "backslashreplace").decode()
        raise _TooBig(f"{where}: holds a character that is not valid Unicode text (a lone surrogate)") from None


def _strict_problems(data: dict) -> list[str]:
    """Values of the wrong kind that pydantic's lax mode would convert: a boolean or text where a number goes
    (`steps: true` is 1, `guidance: "1e400"` is inf, `steps: "5"` is 5), bytes where text goes (`!!binary`)."""
    try:
        Recipe.model_validate(data, strict=True)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where, value = _format_loc(_clean_loc(e["loc"])), e.get("input")
            if e["type"] in ("int_type", "float_type") and isinstance(value, bool):
                lines.append(f"{where}: expected a number, got {str(value).lower()} (a boolean)")
            elif e["type"] in ("int_type", "float_type") and isinstance(value, str):
                shown = value if len(value) <= 40 else value[:37] + "..."
                lines.append(f"{where}: expected a number, got the text {shown!r}; write the number without quotes")
            elif e["type"] == "string_type" and isinstance(value, (bytes, bytearray)):
                lines.append(f"{where}: expected text, got binary data (a !!binary value); write the text itself")
        return lines
    except Exception:  # noqa: BLE001 - strict mode is only asked about values of the wrong kind
        return []
    return []


def recipe_document(recipe: Recipe) -> dict:
    """A Recipe as the document it reads from (windows as [start, end], cross schedules as {default: ..., word:
    ...}), with whatever was assigned to its fields since it was made: parse_recipe checks it again. Only the
    fields that were given or assigned (a default left out stays "not set": a model family's default applies)."""
    def cross(value: Any) -> Any:
        if isinstance(value, CrossSchedule):
            return {"default": list(value.default), **{w: list(win) for w, win in value.words.items()}}
        return value

    def plain(model: BaseModel) -> dict:
        out = {}
        for key in type(model).model_fields:
            if key not in model.model_fields_set:  # left to its default: unset again (a family default may fill it)
                continue
            value = getattr(model, key)
            if isinstance(value, BaseModel):
                value = cross(value) if isinstance(value, CrossSchedule) else plain(value)
            elif isinstance(value, (list, tuple)):
                value = [plain(v) if isinstance(v, BaseModel) else v for v in value]
            out[key] = value
        return out

    return plain(recipe)


def parse_recipe(data: Any, source: str = "recipe", default_name: str | None = None) -> Recipe:
    """Validate a decoded YAML document; raise RecipeError listing every problem with its path."""
    if not isinstance(data, dict):
        raise RecipeError([f"the top level must be a mapping of keys, got {type(data).__name__}"], source)
    try:
        early = _walk(data)
    except _TooBig as err:
        raise RecipeError([str(err)], source) from None
    if "name" not in data and default_name is not None:
        data = {**data, "name": default_name}
    problems = list(early)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        recipe, problems = None, problems + _problems(err)
    problems += _strict_problems(data)
    if isinstance(data.get("name"), str) and (why := name_problem(data["name"])):
        problems.append(f"name: {why}")
    if problems:
        seen = [p.split(": ", 1)[0] for p in early]  # one line per field: the early one says most
        problems = list(dict.fromkeys(p for p in problems if p in early or p.split(": ", 1)[0] not in seen))
        raise RecipeError(problems, source)
    return recipe


class _Loader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (with their lines) and documents that expand beyond the bounds."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                try:
                    key = self.construct_object(key_node)
                    hash(key)
                except Exception:  # noqa: BLE001 - the constructor itself reports bad keys below
                    continue
                line = key_node.start_mark.line + 1
                if key in first:
                    self.duplicates.append(f"duplicate key {key!r} at line {line} (first at line {first[key]});"
                                           " keep one")
                else:
                    first[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 reads 1e-3 and 1e400 as numbers; PyYAML (YAML 1.1) wants a dot and a signed exponent and keeps them as
# text, which pydantic would then turn into a float (1e400: inf) behind the recipe's back
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _check_nodes(root: yaml.Node) -> None:
    """Raise _TooBig when the composed document, aliases expanded, holds too many values or nests too deep."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key], depths[key]
        if key in active:
            raise _TooBig(f"line {node.start_mark.line + 1}: an alias refers to the mapping or list that holds it")
        if level > MAX_DEPTH:
            raise _TooBig(f"line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        active.add(key)
        size, depth = 1, 0
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        for child in children:
            s, d = visit(child, level + 1)
            size, depth = size + s, max(depth, d + 1)
            if size > MAX_VALUES:
                raise _TooBig(f"the recipe holds more than {MAX_VALUES} values with its aliases expanded"
                              f" (line {node.start_mark.line + 1}); a recipe is a short list of edits")
        active.discard(key)
        sizes[key], depths[key] = size, depth
        return size, depth

    visit(root, 0)


def safe_load(text: str) -> Any:
    """yaml.safe_load with the recipe's bounds: duplicate keys, alias bombs, deep nesting refused.

    Raises yaml.YAMLError for malformed YAML and RecipeError-ready ValueError (_Refused) for the rest."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    if loader.duplicates:
        raise _Refused(loader.duplicates)
    return data


class _Refused(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_yaml(text: str, where: str) -> Any:
    """The decoded YAML of `text`; RecipeError (naming `where`) for anything that cannot be a recipe."""
    try:
        return safe_load(text)
    except _Refused as err:
        raise RecipeError(err.problems, where) from None
    except _TooBig as err:
        raise RecipeError([str(err)], where) from None
    except RecursionError:
        raise RecipeError([f"nested more than {MAX_DEPTH} levels deep"], where) from None
    except yaml.YAMLError as err:
        raise RecipeError([yaml_problem(err, text)], where) from None
    except (ValueError, TypeError, OverflowError) as err:  # e.g. a date such as 2001-02-30
        raise RecipeError([f"not valid YAML: {err}"], where) from None


def yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """PyYAML's error as a recipe problem: the line and column, what is wrong, and for a tab or a misaligned key
    what to do (never PyYAML's "<unicode string>")."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = "; ".join(str(p) for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p) or str(err)
    if mark is None:
        return f"not valid YAML: {what}"
    lines = text.splitlines()
    here = lines[mark.line] if mark.line < len(lines) else ""
    hint = ""
    if "\t" in here[: mark.column + 1] or "'\\t'" in what:
        hint = "; the line is indented with a tab: YAML indents with spaces only"
    elif "mapping values are not allowed" in what or "expected <block end>" in what:
        hint = "; check the indentation: keys of one mapping start in the same column (spaces, not tabs)"
    return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}{hint}"


def with_lines(err: RecipeError, text: str) -> RecipeError:
    """The error with `lines` set: each problem's line (from 1) in the recipe's `text`, where its field (or the
    closest key above it) is written, else None. `p2p` shows it after the problem as "(FILE:LINE)"."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError, ValueError):
        root = None
    err.lines = [_line_of(root, p.split(": ", 1)[0]) if root is not None and ": " in p and "line " not in p
                 else None for p in err.problems]
    return err


def without_lines(err: RecipeError) -> RecipeError:
    """The error marked as having no lines to show (standard input, a picture, one document of several)."""
    err.lines = [None] * len(err.problems)
    return err


def with_file_lines(err: RecipeError) -> RecipeError:
    """with_lines for an error about a whole recipe file (not a picture, standard input or one of several
    documents), read again; the error as it is when its lines are known or cannot be."""
    path = Path(err.source)
    if getattr(err, "lines", None) is not None or path.suffix.lower() == ".png" or not path.is_file():
        return err
    try:
        return with_lines(err, decode_text(read_bytes(path), err.source))
    except RecipeError:
        return err


def _line_of(node: yaml.Node, path: str) -> int | None:
    """The line (from 1) of a dotted path such as edits[0].cross_replace in a composed YAML tree."""
    import re

    line = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if isinstance(node, yaml.SequenceNode) and part.startswith("["):
            index = int(part[1:-1])
            if index >= len(node.value):
                return line
            node = node.value[index]
        elif isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not match:
                return line
            key, node = match[0]
            line = key.start_mark.line + 1
            continue
        else:
            return line
        line = node.start_mark.line + 1
    return line


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 bytes (a BOM allowed) -> text; RecipeError saying where the first byte that is not UTF-8 is."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise RecipeError([f"not UTF-8 text{hint}: byte 0x{data[err.start]:02x} at line {line}, column {column};"
                           " save the file as UTF-8"], where) from None


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a recipe file ("-": standard input), at most MAX_RECIPE_BYTES; RecipeError otherwise."""
    where = str(path)
    try:
        if where == "-":
            if sys.stdin is None:  # `p2p edit - <&-`
                raise RecipeError(["standard input is closed; give the recipe in a file, or pipe it in"], where)
            stream = getattr(sys.stdin, "buffer", None)
            data = stream.read(MAX_RECIPE_BYTES + 1) if stream is not None else \
                sys.stdin.read(MAX_RECIPE_BYTES + 1).encode("utf-8", "surrogateescape")
        else:
            from p2p_cli.paths import open_regular

            with open_regular(path, pipes=True) as f:  # pipes too (`p2p edit <(...)`); the bound keeps them short
                data = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as err:
        raise RecipeError([f"cannot read the file: {err.strerror or err}"], where) from None
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError([f"more than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short text (is this the right"
                           " file?)"], where)
    return data


def read_document(path: str | Path, text: str | None = None) -> Any:
    """The decoded YAML of a recipe file (or of `text`); RecipeError when it cannot be read or parsed."""
    if text is None:
        text = decode_text(read_bytes(path), str(path))
    elif len(text) > MAX_RECIPE_BYTES:
        raise RecipeError([f"more than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short text"], str(path))
    return parse_yaml(text, str(path))


def beside_recipe(path: str, recipe_path: str) -> Path:
    """A file a recipe names (image, mask, LoRA): ~ expanded, and a relative path taken from the recipe file's
    folder (as given for standard input, "-")."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or recipe_path == "-" else Path(recipe_path).parent / p


def default_name(path: str | Path) -> str:
    """A recipe's name when it sets none: the file's stem ("recipe" for standard input)."""
    return "recipe" if str(path) == "-" else Path(path).stem


# What help(p2p.Recipe) and help(p2p.recipe.Edit) say about each field (README's recipe reference in short).
FIELD_DOCS = {
    Recipe: {
        "source": "the source prompt (for image: what the picture shows)",
        "edits": "the edits, at least one: Edit(target=...) or {target: ...}",
        "name": "the output folder's name (default: the file's stem)",
        "model": "hub id, local folder, single file or 'shapes' (default: the bundled shapes model)",
        "seed": "seed of the one initial noise all prompts share, drawn on the CPU (default 8888)",
        "steps": "sampling steps, 1-1000 (default 50)",
        "guidance": "classifier-free guidance scale (default: the family's, 7.5 for SD)",
        "size": "pixels: 512 or (height, width) (default: the model's native size)",
        "negative_prompt": "the unconditional prompt of guidance",
        "cross_replace": "window for edits that set none: tau for [0, tau), (start, end), or {default: .., word: ..}"
                         " (default 0.8); larger keeps more of the source's layout and can block the edit",
        "self_replace": "self-attention window for edits that set none (default 0.4; SD3 / FLUX.1 0.2); larger"
                        " keeps the layout and the shapes",
        "self_replace_max_res": "self-attention is injected in layers of at most this side (default latent / 4)",
        "blend_res": "side of the maps local blend reads (default latent / 4, at least 8)",
        "self_blocks": "SD3 / FLUX.1: the blocks whose image attention a target takes from the source",
        "blend_blocks": "SD3 / FLUX.1: the blocks whose text attention local blend reads",
        "shift": "SD3 / FLUX.1: the flow sampler's fixed shift (default: the family's)",
        "text_mass": "SD3 / FLUX.1: whose share of attention an edited row gives the text (default self-window)",
        "edit_start": "fraction of the steps the edits take from the source before they edit (default 0; keeps the"
                      " layout, too late and colours cannot change)",
        "baseline": "also render every edit's prompt without control",
        "image": "a real picture to edit (a path, relative to the recipe file; the API also takes a PIL image)",
        "mask": "a picture: every edit may change only its white part",
        "crop": "(left, top, right, bottom) pixels of image (default: the largest centred box)",
        "inversion": "how image is inverted: direct (default), null-text, negative-prompt, ddim, ddpm (SD, SDXL), flowedit"
                     " (SD3, FLUX)",
        "original_size": "SDXL: the size id, (height, width)",
        "crops_coords_top_left": "SDXL: the crop id, (top, left)",
        "target_size": "SDXL: the target size id, (height, width)",
        "loras": "LoRA files and scales: [{path: style.safetensors, scale: 0.8}]",
        "quantize": "quantize the denoiser (int8, fp8, bnb-8bit, bnb-4bit or a .gguf file), or {part: kind}",
        "offload": "diffusers' offload hooks: none (default), model, sequential or group",
        "vae": "diffusers' VAE tiling: auto (default: tiled, and sliced by picture, only where the picture is larger"
               " than the VAE's tile), tiled (always; smaller tiles where the picture fits in one) or full (never)",
    },
    Edit: {
        "target": "the edited prompt",
        "type": "replace (same number of words), refine (words added or removed) or reweight (default: inferred)",
        "cross_replace": "when the edit follows the source's cross-attention (default: the recipe's)",
        "self_replace": "when the edit takes the source's self-attention, the layout (default: the recipe's)",
        "reweight": "{word: factor}: scale the attention to a word of the target (negative removes a property)",
        "local_blend": "LocalBlend(words=[...]): change only where these words are",
        "baseline": "also render this edit's prompt without control",
    },
    LocalBlend: {
        "words": "the words (in the source or the target) whose attention marks where the edit may change",
        "source_words": "blend words looked up in the source only (the reference's per-prompt word lists)",
        "target_words": "blend words looked up in the target only",
        "threshold": "a word map's share of its maximum above which the edit shows (default 0.3; lower: larger)",
        "start": "the fraction of the steps from which the blend applies (default 0.2)",
        "subtract": "words whose region is kept from the source",
        "subtract_threshold": "the same share for the subtracted words (default 0.3)",
    },
}


def _document_fields() -> None:
    """Each model's docstring lists its fields with their meaning and default (help() shows it)."""
    for model, docs in FIELD_DOCS.items():
        lines = [f"    {name}: {docs[name]}" for name in model.model_fields if name in docs]
        model.__doc__ = f"{model.__doc__}\n\nFields:\n" + "\n".join(lines)


_document_fields()
