"""Which files p2p opens: regular files only (a FIFO or a device would hang or never end), and, for a recipe
that p2p did not write for this user (a PNG's recipe, a run.json, a benchmark's mapping file), only files inside
that recipe's own folder."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO


class NotRegularFile(OSError):
    """A path that is there but is not a regular file (a FIFO, a socket, a device, a folder)."""

    def __init__(self, path: str | Path, kind: str):
        super().__init__(errno.EINVAL, f"not a regular file (a {kind}); give a file", str(path))
        self.kind = kind


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def check_regular(path: str | Path) -> Path:
    """`path` if it is a regular file (links followed); NotRegularFile if it is something else, FileNotFoundError
    if it is not there. For libraries that open a path themselves (safetensors, diffusers): check first."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, _kind(mode))
    return Path(path)


def open_regular(path: str | Path, pipes: bool = False) -> IO[bytes]:
    """The file opened for reading in binary, without ever blocking on a FIFO: it is opened non-blocking and
    checked on its descriptor (no race with a swapped path). pipes: a pipe is accepted too (`p2p edit <(...)`);
    one with no writer reads as empty instead of hanging."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or (pipes and stat.S_ISFIFO(mode))):
            raise NotRegularFile(path, _kind(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file (at most limit + 1 of them when limit is given, to tell an oversized file)."""
    with open_regular(path) as f:
        return f.read() if limit is None else f.read(limit + 1)


def read_regular_text(path: str | Path) -> str:
    """A regular file's UTF-8 text."""
    return read_regular(path).decode("utf-8")


def outside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` (links resolved) lies outside `folder` (links resolved)."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return True
    return False
