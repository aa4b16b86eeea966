"""`--set key=value` overrides applied to a recipe document before validation, so errors name the field."""

from __future__ import annotations

import re
from typing import Any

import yaml

from p2p_cli.recipe import (Recipe, RecipeError, decode_text, default_name, parse_recipe, read_bytes, read_document,
                            safe_load, with_lines, without_lines)

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


_DOC_START = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)  # a line holding only the YAML document marker


def split_documents(text: str) -> list[str]:
    """The recipes of one file or stream: YAML documents apart at `---` lines, or JSON lines (one object a line).

    One document gives a list of one; empty documents (a leading `---`) are dropped.
    """
    return [doc for _, doc in numbered_documents(text)]


def numbered_documents(text: str) -> list[tuple[int, str]]:
    """split_documents with each recipe's number: its line in a JSON-lines file (blank lines count), its
    document's number (from 1) in a YAML stream."""
    lines = text.splitlines()
    filled = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if len(filled) > 1 and all(line.lstrip().startswith("{") and line.rstrip().endswith("}") for _, line in filled):
        return filled  # JSON lines
    parts = [part for part in _DOC_START.split(text) if part.strip() and part.strip() != "..."]
    return list(enumerate(parts, 1)) if parts else [(1, text)]


def read_recipes(path: str, overrides: list[str] | None = None, stdin_text: str | None = None
                 ) -> list[tuple[str, Recipe | RecipeError]]:
    """Every recipe in a file (or "-", standard input) with its label: the path, or "path#k" (k from 1) when the
    file holds several (a `---` YAML stream or JSON lines). Several unnamed recipes of one file are named
    <stem>-<k>. A recipe that is invalid comes as its RecipeError, so the others can still be checked."""
    source = str(path)
    try:
        if stdin_text is not None:
            text = stdin_text
        elif source.lower().endswith(".png"):  # a picture written by p2p holds one recipe
            return [(source, read_recipe(path, overrides))]
        else:
            text = decode_text(read_bytes(path), source)  # "-": standard input
    except RecipeError as err:
        return [(source, err)]
    docs = numbered_documents(text)
    if len(docs) == 1:
        try:
            return [(source, read_recipe(path, overrides, stdin_text=text))]
        except RecipeError as err:
            return [(source, err)]
    out: list[tuple[str, Recipe | RecipeError]] = []
    names: dict[str, str] = {}  # name -> the label that took it first
    for k, doc in docs:
        label = f"{source}#{k}"
        try:
            recipe = read_recipe(label, overrides, stdin_text=doc, require_name=True)
            if recipe.name in names:
                raise RecipeError([f"name: {recipe.name!r} is also the name of {names[recipe.name]}; each recipe of a"
                                   " file needs a name of its own (it writes OUT/<name>/)"], label)
            names[recipe.name] = label
            out.append((label, recipe))
        except RecipeError as err:
            out.append((label, err))
    return out


NAME_REQUIRED = ("name: required in a file of several recipes (each writes OUT/<name>/); give every recipe a name"
                 " of its own, e.g. \"name\": \"{stem}-{k}\"")


def read_recipe(path: str, overrides: list[str] | None = None, stdin_text: str | None = None,
                name: str | None = None, require_name: bool = False) -> Recipe:
    """Like recipe.load_recipe, with `overrides` applied to the document first; "-" reads standard input.

    stdin_text: the text to read instead of the file (or of standard input); name: the default name;
    require_name: a recipe without a name is a problem (one recipe of a file of several, labelled "path#k").
    A whole file's problems get their lines (RecipeError.lines), but for the fields an override set.
    """
    source = str(path)
    if stdin_text is None and source != "-" and not source.lower().endswith(".png"):
        stdin_text = decode_text(read_bytes(path), source)
    try:
        return _read_recipe(path, overrides, stdin_text, name, require_name)
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
                 require_name: bool) -> Recipe:
    source = str(path)
    data = read_document(path, stdin_text) if stdin_text is not None else read_document(path)
    if isinstance(data, dict) and isinstance(data.get("recipe"), dict) and "versions" in data:
        data = data["recipe"]  # a run.json: the recipe it records (its image: is relative to the run's folder)
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
        return parse_recipe(data, source, default_name=name or default_name(path))
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


def inline_recipes(prompts: list[str], overrides: list[str] | None = None) -> list[tuple[str, Recipe | RecipeError]]:
    """The recipes inline prompts expand to (text/inline.py), labelled "--prompt" (or "--prompt#k"), with the
    overrides applied; an invalid one comes as its RecipeError."""
    from p2p_cli.text.inline import InlineError, expand

    out: list[tuple[str, Recipe | RecipeError]] = []
    for k, text in enumerate(prompts, 1):
        label = "--prompt" if len(prompts) == 1 else f"--prompt#{k}"
        try:
            data = expand(text)
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

