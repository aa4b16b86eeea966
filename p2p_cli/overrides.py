"""`--set key=value` overrides applied to a recipe document before validation, so errors name the field."""

from __future__ import annotations

import re
from typing import Any

import yaml

from p2p_cli.recipe import Recipe, RecipeError, default_name, parse_recipe, read_document, safe_load

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


def read_recipe(path: str, overrides: list[str] | None = None, stdin_text: str | None = None) -> Recipe:
    """Like recipe.load_recipe, with `overrides` applied to the document first; "-" reads standard input."""
    source = str(path)
    data = read_document(path, stdin_text) if stdin_text is not None else read_document(path)
    if overrides:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RecipeError([f"the top level must be a mapping of keys, got {type(data).__name__}"], source)
        try:
            data = apply_overrides(data, overrides)
        except ValueError as err:
            raise RecipeError([str(err)], source) from None
    return parse_recipe(data, source, default_name=default_name(path))
