"""Output folders that appear whole or not at all, and the run.json record of how they were made."""

from __future__ import annotations

import json
import os
import platform
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import p2p_cli
from p2p_cli.recipe import Recipe

DTYPE_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


class OutputExistsError(FileExistsError):
    """The output folder is already there and overwriting was not asked for."""

    def __init__(self, folder: Path):
        self.folder = folder
        super().__init__(f"{folder}/ already exists; pass --overwrite to replace it, or --out for another folder")


# Sub-folders other commands write inside a recipe's folder (`p2p sweep` -> <name>/sweep/): replacing the
# folder keeps them, and a folder holding nothing else counts as free.
FOREIGN = ("sweep",)


def _taken(folder: Path) -> bool:
    return folder.exists() and any(p.name not in FOREIGN for p in folder.iterdir())


def check_free(folder: Path, overwrite: bool) -> None:
    """Raise OutputExistsError when `folder` holds results and may not be replaced."""
    if _taken(folder) and not overwrite:
        raise OutputExistsError(folder)


@contextmanager
def atomic_folder(folder: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `folder` to write into; on success it becomes `folder` in one rename.

    On an error the temporary folder is removed and an existing `folder` is left as it was. With
    overwrite, the old folder is swapped out only after the new one is complete. Sub-folders that other
    commands own (FOREIGN) are carried over into the new folder.
    """
    folder = Path(folder)
    check_free(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = folder.parent / f".{folder.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if folder.exists():
            check_free(folder, overwrite)  # it may have appeared while we were working
            for name in FOREIGN:  # another command's results move into the new folder first
                if (folder / name).exists() and not (tmp / name).exists():
                    (folder / name).rename(tmp / name)
            old = folder.parent / f".{folder.name}.old-{tag}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolved_recipe(recipe: Recipe, size: tuple[int, int] | None = None, model_id: str | None = None) -> dict:
    """The recipe with every default filled in (edit types, windows, size, model); loadable as a recipe again."""
    data = recipe.model_dump(mode="json")
    data["size"] = list(size or recipe.size or ()) or None
    data["model"] = model_id or recipe.model
    data["cross_replace"] = _cross_yaml(recipe.cross_replace) if recipe.cross_replace else None
    data["self_replace"] = list(recipe.self_replace) if recipe.self_replace else None
    for edit, out in zip(recipe.edits, data["edits"]):
        out["cross_replace"] = _cross_yaml(recipe.cross_for(edit))
        out["self_replace"] = list(recipe.self_for(edit))
        if out.get("local_blend") is None:
            out.pop("local_blend", None)
        if out.get("reweight") is None:
            out.pop("reweight", None)
    return data


def _cross_yaml(schedule) -> dict:
    """A CrossSchedule in the recipe's own form: {default: [s, e], word: [s, e], ...}."""
    return {"default": list(schedule.default), **{w: list(win) for w, win in schedule.words.items()}}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide the pictures."""
    versions = {"p2p": p2p_cli.__version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_record(
    recipe: Recipe,
    *,
    recipe_file: str,
    overrides: list[str],
    model,
    size: tuple[int, int],
    attention: str,
    prompts: dict[str, str],
    images: dict[str, str],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """Everything needed to make the same pictures again (run.json)."""
    return {
        "name": recipe.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe_file": recipe_file,
        "overrides": overrides,
        "recipe": resolved_recipe(recipe, size, model.id),
        "seed": recipe.seed,
        "model": {"id": model.id, "revision": model.revision, "path": model.path},
        "family": model.family.name,
        "loras": model.loras,  # [{path, scale, sha256}]
        "device": str(model.device),
        "dtype": DTYPE_NAMES.get(str(model.dtype), str(model.dtype)),
        "attention": attention,
        "versions": library_versions(),
        "prompts": prompts,
        "images": images,
        "seconds": seconds,
    }


def write_json(path: Path, data: dict) -> Path:
    """Write `data` as indented JSON (UTF-8, trailing newline)."""
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)
