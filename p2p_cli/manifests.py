"""Files of many recipes (manifests): a YAML stream (documents apart at `---` lines) or JSON lines (one object a
line), read as a stream, one record at a time. The bounds on a recipe (recipe.MAX_RECIPE_BYTES, values, depth)
apply to each record, not to the file, and a bad record (a truncated line, a line that is JSON but not an object)
is that record's RecipeError: the others still run."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator
from itertools import chain
from typing import IO, Any

from p2p_cli.overrides import from_document, read_recipe
from p2p_cli.recipe import MAX_DEPTH, MAX_RECIPE_BYTES, Recipe, RecipeError, decode_text

_DOC_START = re.compile(rb"^---[ \t]*(?:#.*)?$")  # a line holding only the YAML document marker
PEEK = 20  # non-blank lines looked at to tell JSON lines from a YAML stream
TOO_LONG = object()  # a line longer than a recipe may be (read past, never held)
JSON_HINT = 'each line is one recipe, {"name": "...", "source": "...", "edits": [{"target": "..."}]}'


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | object]]:
    """(number from 1, the line without its line break) of a binary stream; TOO_LONG for a line above
    MAX_RECIPE_BYTES, which is skipped without being held."""
    number = 0
    while line := stream.readline(MAX_RECIPE_BYTES + 2):
        number += 1
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM
        if not line.endswith(b"\n") and len(line) >= MAX_RECIPE_BYTES + 2:
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield number, TOO_LONG
            continue
        line = line.rstrip(b"\r\n")
        yield number, TOO_LONG if len(line) > MAX_RECIPE_BYTES else line


def _json_object_line(line: bytes | object) -> bool:
    if not isinstance(line, bytes) or not line.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def documents(stream: IO[bytes]) -> Iterator[tuple[int, bytes | object | None, bool]]:
    """The records of a file: (k, bytes, JSON line?) with k its line in JSON lines (blank lines count) or its
    document's number in a YAML stream (from 1); TOO_LONG for a record above the bounds. A file of one document
    yields (0, bytes, False); an empty file (0, None, False)."""
    lines = _lines(stream)
    head = []
    filled = 0
    for number, line in lines:
        head.append((number, line))
        filled += line is TOO_LONG or bool(line.strip())
        if filled >= PEEK:
            break
    every = chain(head, lines)
    marker = any(isinstance(line, bytes) and _DOC_START.match(line) for _, line in head)
    if filled > 1 and not marker and any(_json_object_line(line) for _, line in head):
        for number, line in every:  # JSON lines: one record a line
            if line is TOO_LONG or line.strip():
                yield number, line, True
        return
    for k, doc in _yaml_documents(every):
        yield k, doc, False


def _yaml_documents(lines) -> Iterator[tuple[int, bytes | object | None]]:
    k, held, parts, size, first = 0, None, [], 0, 1

    def document():
        if size > MAX_RECIPE_BYTES:
            return TOO_LONG
        text = b"\n".join(parts) + b"\n"
        return None if text.strip() in (b"", b"...") else text

    for number, line in chain(lines, [(0, b"---")]):
        if isinstance(line, bytes) and _DOC_START.match(line):
            doc = document()
            if doc is not None:
                k += 1
                if held is not None:  # a second document: the file is a stream, numbered from 1
                    yield held[:2]
                held = (k, doc, first)
            parts, size, first = [], 0, number + 1
            continue
        size += MAX_RECIPE_BYTES + 1 if line is TOO_LONG else len(line) + 1
        if size <= MAX_RECIPE_BYTES:
            parts.append(line)
    if held is None:
        yield 0, None
    elif k == 1:  # the file's one recipe: its lines keep their numbers in messages
        yield 0, held[1] if held[1] is TOO_LONG else b"\n" * (held[2] - 1) + held[1]
    else:
        yield held[:2]


def numbered_documents(text: str) -> list[tuple[int, str]]:
    """The records of a text with their numbers, as documents() reads them (k 1 for a single document)."""
    return [(max(k, 1), doc.decode("utf-8") if isinstance(doc, bytes) else text)
            for k, doc, _ in documents(io.BytesIO(text.encode("utf-8")))]


def split_documents(text: str) -> list[str]:
    """The recipes of one file or stream: YAML documents apart at `---` lines, or JSON lines (one object a line)."""
    return [doc for _, doc in numbered_documents(text)]


def _stdin() -> IO[bytes]:
    stream = sys.stdin
    if stream is None:
        raise RecipeError(["standard input is closed; give the recipe in a file, or pipe it in"], "-")
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return buffer
    return io.BytesIO(stream.read().encode("utf-8", "surrogateescape"))


def _unique(pairs: list[tuple[Any, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate key {twice!r}; keep one")
    return dict(pairs)


def json_record(line: bytes, label: str) -> dict:
    """One JSON line as a recipe document; RecipeError (labelled) when it is not a JSON object."""
    text = decode_text(line, label)
    try:
        data = json.loads(text, object_pairs_hook=_unique)
    except RecursionError:
        raise RecipeError([f"nested more than {MAX_DEPTH} levels deep"], label) from None
    except json.JSONDecodeError as err:
        raise RecipeError([f"not a JSON object: {err.msg} at column {err.colno} (a truncated line?); {JSON_HINT}"],
                          label) from None
    except ValueError as err:
        raise RecipeError([f"not a JSON object: {err}"], label) from None
    if not isinstance(data, dict):
        raise RecipeError([f"expected a JSON object (one recipe), got {json.dumps(data)[:40]}; {JSON_HINT}"], label)
    return data


def read_recipes(path: str, overrides: list[str] | None = None, trust: bool = False,
                 model_set: bool = False) -> Iterator[tuple[str, Recipe | RecipeError]]:
    """Every recipe in a file (or "-", standard input) with its label, one at a time: the path, or "path#k" (k
    from 1) when the file holds several (a `---` YAML stream or JSON lines). A recipe that is invalid comes as
    its RecipeError, so the others can still be checked and run; each of several needs a name of its own."""
    source = str(path)
    if source.lower().endswith(".png"):  # a picture written by p2p holds one recipe
        try:
            yield source, read_recipe(source, overrides, trust=trust, model_set=model_set)
        except RecipeError as err:
            yield source, err
        return
    try:
        if source == "-":
            stream, close = _stdin(), False
        else:
            from p2p_cli.paths import open_regular

            stream, close = open_regular(path, pipes=True), True
    except RecipeError as err:
        yield source, err
        return
    except OSError as err:
        yield source, RecipeError([f"cannot read the file: {err.strerror or err}"], source)
        return
    names: dict[str, str] = {}  # name -> the label that took it first
    try:
        for k, doc, json_line in documents(stream):
            label = source if k == 0 else f"{source}#{k}"
            try:
                if doc is TOO_LONG:
                    raise RecipeError([f"more than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short text"
                                       + (" (is this the right file?)" if k == 0 else "")], label)
                if k == 0:
                    yield label, read_recipe(source, overrides, stdin_text=decode_text(doc or b"", source),
                                             trust=trust, model_set=model_set)
                    continue
                if json_line:
                    data = json_record(doc, label)
                    recipe = from_document(data, label, overrides, require_name=True, trust=trust,
                                           model_set=model_set)
                else:
                    recipe = read_recipe(label, overrides, stdin_text=decode_text(doc, label), require_name=True,
                                         trust=trust, model_set=model_set)
                if recipe.name in names:
                    raise RecipeError([f"name: {recipe.name!r} is also the name of {names[recipe.name]}; each recipe"
                                       " of a file needs a name of its own (it writes OUT/<name>/)"], label)
                names[recipe.name] = label
                yield label, recipe
            except RecipeError as err:
                yield label, err
    except OSError as err:
        yield source, RecipeError([f"cannot read the file: {err.strerror or err}"], source)
    finally:
        if close:
            stream.close()
