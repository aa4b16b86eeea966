"""`--set key=value` overrides applied to a recipe document before validation, so errors name the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from p2p_cli.paths import outside
from p2p_cli.recipe import (BUNDLED_MMDIT, BUNDLED_UNET, Recipe, RecipeError, beside_recipe, decode_text, default_name,
                            parse_recipe, read_bytes, read_document, safe_load, with_lines, without_lines)

UNSET = object()  # `--set key=` removes the key, so the field takes its default
_PART = re.compile(r"[^.\[\]]+|\[\d+\]")
_KEY = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[\d+\])*")


def parse_assignment(text: str) -> tuple[list[str | int], Any]:
    """"edits.0.cross_replace=0.6" (or "edits[0].cross_replace=0.6") -> (["edits", 0, "cross_replace"], 0.6).

    The value is a YAML scalar or flow collection ([0.2, 0.8], {lion: 0.4}); other text stays a string;
    an empty value is UNSET.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set {text}: expected KEY=VALUE, e.g. --set edits.0.cross_replace=0.6")
    if not _KEY.fullmatch(key):
        raise ValueError(f"--set {text}: {key!r} is not a dotted key such as edits.0.target")
    path: list[str | int] = []
    for part in _PART.findall(key):
        part = part.strip("[]")
        path.append(int(part) if part.isdigit() else part)
    value = value.strip()
    if not value:
        return path, UNSET
    try:
        parsed = safe_load(value)  # the recipe's own bounds: no alias bombs, no duplicate keys
    except yaml.YAMLError as err:
        if not value.startswith(("[", "{")):
            return path, value
        raise ValueError(f"--set {text}: the value is not valid YAML ({getattr(err, 'problem', err)})") from None
    except RecursionError:
        raise ValueError(f"--set {text}: the value is nested too deeply") from None
    except ValueError as err:  # duplicate keys, too many values with aliases expanded, a bad date
        raise ValueError(f"--set {text}: {err}") from None
    if isinstance(parsed, (list, dict)) and not value.startswith(("[", "{")):
        return path, value  # "a cat: on a mat" is a prompt, not a mapping
    return path, parsed


def apply_overrides(data: Any, assignments: list[str]) -> Any:
    """Set each dotted key of `assignments` in the decoded recipe (in order); raise ValueError on a bad one."""
    for text in assignments:
        path, value = parse_assignment(text)
        node = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = _show(path[: depth + 1])
            if isinstance(part, int):
                if not isinstance(node, list):
                    raise ValueError(f"--set {text}: {_show(path[:depth]) or 'the recipe'} is not a list")
                if not -len(node) <= part < len(node):
                    raise ValueError(f"--set {text}: {where} does not exist ({_show(path[:depth])} has {len(node)} items)")
            elif isinstance(node, list):
                raise ValueError(f"--set {text}: {_show(path[:depth])} is a list; name an item by number, e.g. .0")
            elif not isinstance(node, dict):
                raise ValueError(f"--set {text}: {_show(path[:depth])} is not a mapping")
            if last:
                if value is UNSET:
                    if isinstance(node, dict):
                        node.pop(part, None)
                    else:
                        del node[part]
                else:
                    node[part] = value
            else:
                if isinstance(part, str) and node.get(part) is None:
                    node[part] = [] if isinstance(path[depth + 1], int) else {}
                node = node[part]
    return data


def _show(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


NAME_REQUIRED = ("name: required in a file of several recipes (each writes OUT/<name>/); give every recipe a name"
                 " of its own, e.g. \"name\": \"{stem}-{k}\"")


def stranger_problems(data: Any, recipe_path: str, what: str, touched: set[str], model_set: bool) -> list[str]:
    """Why a recipe p2p did not write for this user (a PNG's, a run.json) cannot run as it is: it names a picture,
    mask or LoRA file outside its own folder (links resolved), or a model other than a bundled one or a folder
    inside it (a hub id would download). Fields the user set (--set, `touched`; --model, model_set) are theirs."""
    if not isinstance(data, dict):
        return []
    folder = Path(recipe_path.rpartition("#")[0] or recipe_path).parent if recipe_path != "-" else Path.cwd()
    flag = " (pass --trust-recipe if you trust it)"
    why = (f"lies outside {folder}/, the folder of this {what}; a recipe p2p did not write for you may only name"
           f" files inside its own folder{flag}")
    named: list[tuple[str, Any]] = [(key, data.get(key)) for key in ("image", "mask") if key not in touched]
    if "loras" not in touched and isinstance(data.get("loras"), list):
        named += [(f"loras[{i}].path", lora.get("path")) for i, lora in enumerate(data["loras"]) if isinstance(lora, dict)]
    problems = [f"{field}: {value!r} {why}" for field, value in named
                if isinstance(value, str) and value and outside(beside_recipe(value, recipe_path), folder)]
    model = data.get("model")
    if not model_set and "model" not in touched and isinstance(model, str) and model not in BUNDLED_UNET + BUNDLED_MMDIT:
        local = Path(model).expanduser()
        if local.exists() or model.startswith(("/", ".", "~")) or model.count("/") != 1:
            if outside(beside_recipe(model, recipe_path), folder):
                problems.append(f"model: {model!r} {why}")
        else:
            problems.append(f"model: {model!r} is a hub id, and a recipe p2p did not write for you does not download"
                            f" a model on its own: pass --model {model} to choose it yourself{flag}")
    return problems


def _touched(overrides: list[str]) -> set[str]:
    """The top-level fields --set assignments change."""
    keys = set()
    for text in overrides:
        try:
            keys.add(str(parse_assignment(text)[0][0]))
        except ValueError:
            pass  # reported when the overrides are applied
    return keys


def stranger(source: str, data: Any) -> str | None:
    """What makes a recipe document untrusted ("picture's recipe", "run.json"), or None for a recipe file."""
    if source.rpartition("#")[0].lower().endswith(".png") or source.lower().endswith(".png"):
        return "picture's recipe"
    if isinstance(data, dict) and isinstance(data.get("recipe"), dict) and "versions" in data:
        return "run.json"
    return None


def read_recipe(path: str, overrides: list[str] | None = None, stdin_text: str | None = None,
                name: str | None = None, require_name: bool = False, trust: bool = False,
                model_set: bool = False) -> Recipe:
    """The one recipe reader: a recipe file (YAML, JSON, a run.json, a PNG p2p wrote; "-" reads standard input),
    validated, with `overrides` applied to the document first (api.load_recipe is its public door).

    stdin_text: the text to read instead of the file (or of standard input); name: the default name;
    require_name: a recipe without a name is a problem (one recipe of a file of several, labelled "path#k");
    trust: a PNG's recipe or a run.json may name files outside its folder and hub models (stranger_problems);
    model_set: --model overrides the recipe's model. A whole file's problems get their lines (RecipeError.lines),
    but for the fields an override set.
    """
    source = str(path)
    if stdin_text is None and source != "-" and not source.lower().endswith(".png"):
        stdin_text = decode_text(read_bytes(path), source)
    try:
        return _read_recipe(path, overrides, stdin_text, name, require_name, trust, model_set)
    except RecipeError as err:
        if stdin_text is None or require_name:  # standard input, or one document of several: no file lines
            raise without_lines(err) from None
        keys = {_top_key(a.partition("=")[0].strip()) for a in overrides or ()}
        with_lines(err, stdin_text)
        err.lines = [None if _top_key(p) in keys else n for p, n in zip(err.problems, err.lines)]  # --set's own
        raise


def _top_key(problem: str) -> str:
    """The top-level key a "path: message" problem is about ("edits" for edits[0].target)."""
    return re.split(r"[.\[:]", problem, maxsplit=1)[0]


def _read_recipe(path: str, overrides: list[str] | None, stdin_text: str | None, name: str | None,
                 require_name: bool, trust: bool, model_set: bool) -> Recipe:
    if stdin_text is not None:
        data = read_document(path, stdin_text)
    elif str(path).lower().endswith(".png"):  # a picture p2p wrote holds its recipe
        from p2p_cli.picture_texts import png_document

        data = png_document(Path(path))
    else:
        data = read_document(path)
    return from_document(data, str(path), overrides, name or default_name(path), require_name, trust, model_set)


def from_document(data: Any, source: str, overrides: list[str] | None = None, name: str | None = None,
                  require_name: bool = False, trust: bool = False, model_set: bool = False) -> Recipe:
    """A decoded recipe document (labelled `source`) -> Recipe, as read_recipe does after reading it."""
    what = None if trust else stranger(source, data)
    if isinstance(data, dict) and isinstance(data.get("recipe"), dict) and "versions" in data:
        data = data["recipe"]  # a run.json: the recipe it records (its image: is relative to the run's folder)
    if what is not None:
        if problems := stranger_problems(data, source, what, _touched(overrides or []), model_set):
            raise RecipeError(problems, source)
    if overrides:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RecipeError([f"the top level must be a mapping of keys, got {type(data).__name__}"], source)
        try:
            data = apply_overrides(data, overrides)
        except ValueError as err:
            raise RecipeError([str(err)], source) from None
    if not require_name:
        return parse_recipe(data, source, default_name=name)
    missing = isinstance(data, dict) and data.get("name") in (None, "")
    head, _, k = source.rpartition("#")
    problem = NAME_REQUIRED.format(stem=default_name(head or source), k=k or 1)
    try:
        recipe = parse_recipe(data, source)
    except RecipeError as err:
        if missing:
            err = RecipeError([problem] + [p for p in err.problems if not p.startswith("name:")], source)
        raise err from None
    if missing:
        raise RecipeError([problem], source)
    return recipe


def inline_recipes(prompts: list[str], overrides: list[str] | None = None, names: list[str] | tuple = ()
                   ) -> list[tuple[str, Recipe | RecipeError]]:
    """The recipes inline prompts expand to (text/inline.py), labelled "--prompt" (or "--prompt#k"), with the
    overrides applied; an invalid one comes as its RecipeError. names: --name, the k-th for the k-th prompt; a
    prompt without one is named after its source's first words, and a later prompt whose name an earlier one
    took gets a number (-2, -3, ...), so two different edits never write one folder."""
    from p2p_cli.text.inline import InlineError, expand

    out: list[tuple[str, Recipe | RecipeError]] = []
    taken: set[str] = set()
    for k, text in enumerate(prompts, 1):
        label = "--prompt" if len(prompts) == 1 else f"--prompt#{k}"
        try:
            data = expand(text, names[k - 1] if k <= len(names) else None)
            if k > len(names):
                base, n = data["name"], 1
                while data["name"] in taken:
                    n += 1
                    data["name"] = f"{base}-{n}"
            taken.add(data["name"])
            if overrides:
                data = apply_overrides(data, overrides)
            out.append((label, parse_recipe(data, label)))
        except InlineError as err:
            out.append((label, RecipeError([f"prompt: {err}"], label)))
        except RecipeError as err:
            out.append((label, err))
        except ValueError as err:
            out.append((label, RecipeError([str(err)], label)))
    return out

