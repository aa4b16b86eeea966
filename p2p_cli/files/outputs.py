"""Output folders that appear whole or not at all, and the run.json record of how they were made."""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import p2p_cli
from p2p_cli.files import interrupts
from p2p_cli.paths import read_regular_text
from p2p_cli.recipe import Recipe

DTYPE_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


class OutputExistsError(FileExistsError):
    """The output folder is already there and overwriting was not asked for."""

    def __init__(self, folder: Path):
        self.folder = folder
        super().__init__(f"{folder}/ already exists; pass --overwrite to replace it, or --out for another folder")


class OutputPathError(OSError):
    """An output path that cannot become a folder: a file, a symbolic link, a name too long, a parent that is a file."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


class DegenerateResult(RuntimeError):
    """Sampling diverged: some rows' final latents are NaN, infinite or far beyond any real picture's."""


LATENT_LIMIT = 1e4  # a final latent's |values| sit within a few units; beyond this the picture is one flat colour


def check_latents(latents, roles: list[str], recipe: Recipe) -> None:
    """Raise DegenerateResult, before anything is written, when a row's final latent is not a picture's."""
    import torch

    flat = latents.detach().float().flatten(1)
    bad = [role for role, row in zip(roles, flat) if not bool(torch.isfinite(row).all()) or
           float(row.abs().max()) > LATENT_LIMIT]
    if bad:
        factors = any(e.reweight for e in recipe.edits)
        raise DegenerateResult(
            f"sampling diverged for {', '.join(bad)} (NaN, infinite or huge latent values), so nothing was written;"
            f" lower guidance ({recipe.guidance:g}){' or the reweight factors' if factors else ''}")


# Sub-folders other commands write inside a recipe's folder (`p2p sweep` -> <name>/sweep/, `p2p attn-viz` ->
# <name>/attention/): replacing the folder keeps them (unless the new one has its own), and a folder holding
# nothing else counts as free.
FOREIGN = ("sweep", "attention")

# Folders this process finished (renamed into place), for the message when it is interrupted.
finished: list[Path] = []

_TMP_TAG = len(".tmp-4194304-12345678.")  # what a temporary sibling adds to the name (pid up to 2**22)


def _taken(folder: Path) -> bool:
    return folder.exists() and any(p.name not in FOREIGN for p in folder.iterdir())


def short_path(path: str | Path, keep: int = 80) -> str:
    """A path for a message: at most about `keep` characters, its start and end kept."""
    text = str(path)
    return text if len(text) <= keep else f"{text[:keep // 2]}...{text[-(keep // 2 - 3):]} ({len(text)} characters)"


def _length_problem(out: Path) -> str | None:
    """Why a path is too long for the file system (a component or the whole), or None."""
    try:
        longest_name, longest_path = os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        longest_name, longest_path = 255, 4096
    absolute = os.path.abspath(out)
    if len(os.fsencode(absolute)) >= longest_path:
        return f"the path is {len(os.fsencode(absolute))} bytes long; at most {longest_path - 1}"
    for part in out.parts:
        if len(os.fsencode(part)) > longest_name:
            return f"a folder name of {len(os.fsencode(part))} bytes ({part[:20]}...); at most {longest_name}"
    return None


def check_out_dir(out: Path, option: str | None = "--out") -> None:
    """`out` (the --out folder) is a folder or can become one: not too long a path, it and its nearest existing
    parent are folders, and a folder can be made in that parent (tried: /proc says it is writable and is not)."""
    out = Path(out)
    head = f"{option} {short_path(out)}: " if option else ""
    advice = f"; pass another {option}" if option else ""
    if why := _length_problem(out):
        raise OutputPathError(f"{head or short_path(out) + ': '}{why}{advice}")
    for path in (out, *out.parents):
        if path.is_symlink() and not path.exists():
            raise OutputPathError(f"{head}{path} is a symbolic link to {os.readlink(path)}, which does not exist"
                                  f"{advice or '; create that folder'}")
        if path.exists():
            if not path.is_dir():
                raise OutputPathError(f"{head}{path} exists and is not a folder{advice}")
            if not os.access(path, os.W_OK | os.X_OK):
                raise OutputPathError(f"{head}cannot write in {short_path(path)} (permission denied)")
            if path != out and option:  # --out is to be made: try (/proc says it is writable and is not)
                try:
                    os.rmdir(tempfile.mkdtemp(prefix=".p2p-probe-", dir=path))
                except OSError as err:
                    raise OutputPathError(f"{head}cannot make a folder in {short_path(path)}"
                                          f" ({err.strerror or err}){advice}") from None
            return


def check_free(folder: Path, overwrite: bool) -> None:
    """Raise before any work when `folder` cannot be written: OutputExistsError when it holds results and may not
    be replaced, OutputPathError when the path is a file, a symbolic link (without overwrite), or too long a name."""
    folder = Path(folder)
    check_out_dir(folder.parent, option=None)
    if folder.is_symlink():
        if not overwrite:
            target = os.readlink(folder)
            state = "which does not exist" if not folder.exists() else "a folder" if folder.is_dir() else "a file"
            raise OutputPathError(f"{folder} is a symbolic link to {target} ({state}); p2p does not write through"
                                  f" links: remove it, or pass --overwrite to replace the link itself by the new"
                                  f" folder ({target} is left as it is)")
        return
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{folder} exists and is not a folder; move it away, or give the recipe another"
                              f" name (name:) or another --out (--overwrite replaces only folders)")
    try:
        longest = os.pathconf(folder.parent if folder.parent.exists() else ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        longest = 255
    if len(os.fsencode(folder.name)) + _TMP_TAG > longest:
        raise OutputPathError(f"{folder.name[:40]}...: the name is too long for this file system (at most"
                              f" {longest - _TMP_TAG} bytes here); give a shorter name (name:)")
    if _taken(folder) and not overwrite:
        raise OutputExistsError(folder)


def _gone(pid: int) -> bool:
    """Whether no process `pid` runs on this machine."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    return False


def remove_stale(folders: list[Path]) -> list[Path]:
    """Remove the temporary siblings (.NAME.tmp-PID-XXXXXXXX) that killed runs (SIGKILL, a power cut) left beside
    these folders, those whose process is gone; return what was removed. Only folders this process is to write
    are looked at: under a launcher each recipe belongs to one process, so no live run's folder is touched."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        try:
            siblings = list(folder.parent.glob(f".{glob.escape(folder.name)}.tmp-*"))
        except OSError:
            continue
        for path in siblings:
            pid = path.name[len(folder.name) + len(".") + len(".tmp-"):].split("-", 1)[0]
            if not pid.isdigit() or not _gone(int(pid)):
                continue
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


@contextmanager
def atomic_folder(folder: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `folder` to write into; on success it becomes `folder` in one rename.

    On an error or an interrupt the temporary folder is removed and an existing `folder` is left as it was. With
    overwrite, the old folder is swapped out only after the new one is complete; a symbolic link at `folder` is
    replaced itself (what it points to is never touched). Sub-folders that other commands own (FOREIGN) are carried
    over into the new folder. SIGINT and SIGTERM are held back while the finished folder is renamed into place, so
    the folder is either whole or absent; one that arrived while writing (even if swallowed) stops the commit.
    """
    folder = Path(folder)
    check_free(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = folder.parent / f".{folder.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        interrupts.checkpoint()  # an interrupt that library code swallowed while writing: no commit
        with interrupts.deferred():
            _commit(tmp, folder, overwrite, tag)
            finished.append(folder)
    except BaseException:
        with interrupts.deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, folder: Path, overwrite: bool, tag: str) -> None:
    """Rename the finished `tmp` to `folder`, swapping an old folder (or link) out and removing it after."""
    if not (folder.is_symlink() or folder.exists()):
        tmp.rename(folder)
        return
    check_free(folder, overwrite)  # it may have appeared while we were working
    link = folder.is_symlink()
    carried = []
    if not link:  # another command's results move into the new folder first
        for name in FOREIGN:
            if (folder / name).exists() and not (tmp / name).exists():
                (folder / name).rename(tmp / name)
                carried.append(name)
    old = folder.parent / f".{folder.name}.old-{tag}"
    try:
        folder.rename(old)
        try:
            tmp.rename(folder)
        except BaseException:
            old.rename(folder)
            raise
    except BaseException:
        for name in carried:  # put them back where they were
            (tmp / name).rename(folder / name)
        raise
    if link:
        old.unlink()  # the link only; never what it points to
    else:
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():
            raise OutputPathError(f"{folder}/ was written, but the folder it replaced could not be removed"
                                  f" completely: remove {old} by hand")


def resolved_recipe(recipe: Recipe, size: tuple[int, int] | None = None, model_id: str | None = None) -> dict:
    """The recipe with every default filled in (edit types, windows, size, model); loadable as a recipe again."""
    data = recipe.model_dump(mode="json")
    data["size"] = list(size or recipe.size or ()) or None
    data["model"] = model_id or recipe.model
    if data["model"] in ("bundled:shapes", "bundled:shapes-mmdit"):  # the loader's record of a bundled model;
        data["model"] = data["model"].removeprefix("bundled:")  # recipes name it "shapes" / "shapes-mmdit"
    data["cross_replace"] = _cross_yaml(recipe.cross_replace) if recipe.cross_replace else None
    data["self_replace"] = list(recipe.self_replace) if recipe.self_replace else None
    for key in ("quantize", "offload", "vae"):  # loading settings: recorded when given (loading.py), else left out
        if data.get(key) is None:
            data.pop(key, None)
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
    import torch  # loaded already: a model ran

    return {
        "name": recipe.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe_file": recipe_file,
        "overrides": overrides,
        "recipe": resolved_recipe(recipe, size, model.id),
        "seed": recipe.seed,
        "model": {"id": model.id, "revision": model.revision, "path": model.path},
        "family": model.family.name,
        # the model folder's real-picture defaults (p2p-defaults.json), which the recipe's windows may come from
        **({"model_defaults": {"file": model.defaults.file, **model.defaults.model_dump(exclude_none=True)}}
           if getattr(model, "defaults", None) is not None and recipe.image is not None else {}),
        "loras": model.loras,  # [{path, scale, sha256}]
        **({} if model.loading.plain else {"loading": model.loading.record()}),  # quantize per part, offload
        "device": str(model.device),
        "dtype": DTYPE_NAMES.get(str(model.dtype), str(model.dtype)),
        "threads": torch.get_num_threads(),
        "attention": attention,
        "versions": library_versions(),
        "prompts": prompts,
        "images": images,
        "seconds": seconds,
    }


SIZES = "file_sizes"  # a record's every other file in its folder: relative path -> bytes (what --resume checks)


def file_sizes(folder: Path, but: str) -> dict[str, int]:
    """Every file under `folder` but `but` (the record itself): relative path -> size in bytes, sorted."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and str(p.relative_to(folder)) != but}


def write_record(folder: Path, name: str, record: dict) -> Path:
    """The folder's record (run.json, pair.json) with the size of every other file it holds (SIZES)."""
    record[SIZES] = file_sizes(folder, name)
    return write_json(Path(folder) / name, record)


def read_record(folder: Path, record_file: str = "run.json") -> dict | None:
    """A folder's record (run.json, a dataset pair's pair.json) as a JSON object; None when it is missing,
    unreadable or not an object."""
    try:
        record = json.loads(read_regular_text(Path(folder) / record_file))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def intact(folder: Path, record: Any) -> bool:
    """Whether every file a folder's record lists (SIZES; a record written before it: its images) is still there,
    a regular file inside the folder of the recorded size: a finished folder that lost a file is not finished."""
    import stat

    from p2p_cli.paths import outside

    if not isinstance(record, dict):
        return False
    listed = record.get(SIZES)
    if listed is None:  # written before sizes were recorded
        listed = {name: None for name in (record.get("images") or {}).values()}
    if not isinstance(listed, dict) or not listed:
        return False
    for name, size in listed.items():
        if not isinstance(name, str) or not (size is None or isinstance(size, int)):
            return False
        path = Path(folder) / name
        try:
            found = path.lstat()
        except OSError:
            return False
        if not stat.S_ISREG(found.st_mode) or outside(path, folder) or (size is not None and found.st_size != size):
            return False
    return True


def write_json(path: Path, data: dict) -> Path:
    """Write `data` as indented JSON (UTF-8, trailing newline)."""
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)
