"""SIGINT and SIGTERM as one exception that commands clean up after: never lost, never half a folder.

Python turns SIGINT into KeyboardInterrupt and lets SIGTERM kill the process on the spot (temporary folders stay
behind). While `handlers()` is active both raise `Interrupted` in the main thread instead, so every `finally` and
`except BaseException` runs. Two more guarantees:
- an interrupt is never lost: the signal is also recorded, and `checkpoint()` raises it again if library code
  swallowed the exception (one raised inside a `__del__` or a callback is only printed by Python);
- one that arrives while an object's `__del__` (or a weakref finalizer) runs, e.g. inside a library while a model
  loads, is raised again a moment later, outside it (SIGALRM), so it is neither printed as "Exception ignored"
  nor lost;
- `deferred()` holds interrupts back over a few lines that must not be cut in half (renaming a finished folder
  into place), and raises them at its end.
`Interrupted` derives from BaseException and not from KeyboardInterrupt, so `except Exception` does not catch it
and neither does click, which would turn a KeyboardInterrupt into "Aborted!" and exit 1.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; `code` is the exit status a shell expects (130, 143)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.code = 128 + self.signum
        self.name = signal.Signals(self.signum).name
        super().__init__(self.name)


_pending: int | None = None  # the signal that arrived and has not been reported yet
_deferring = 0


RETRY_S = 0.02  # how soon an interrupt that arrived inside a __del__ is raised again, outside it


def _in_cleanup(frame) -> bool:
    """Whether the interrupted code runs inside an object's __del__ or a weakref finalizer: an exception raised
    there is only printed by Python ("Exception ignored in: <function Group.__del__>") and lost."""
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_globals.get("__name__") == "weakref":
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame) -> None:
    global _pending
    _pending = signum
    if _deferring == 0:
        if _in_cleanup(frame):  # raise it again in a moment, once the cleanup has returned
            signal.setitimer(signal.ITIMER_REAL, RETRY_S)
            return
        raise Interrupted(signum)


def _retry(signum, frame) -> None:
    """SIGALRM after an interrupt that arrived inside a cleanup: raise it now, or wait a little more."""
    if _pending is not None and _deferring == 0:
        _handler(_pending, frame)


def pending() -> int | None:
    """The signal that arrived and was not reported yet, if any."""
    return _pending


def clear() -> None:
    """Forget the pending signal (once it has been reported)."""
    global _pending
    _pending = None


def checkpoint() -> None:
    """Raise the interrupt that arrived, if any, also one that library code swallowed."""
    if _pending is not None and _deferring == 0:
        raise Interrupted(_pending)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back inside the block; raise the one that arrived at its end."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    checkpoint()


def install() -> None:
    """From now on SIGINT and SIGTERM raise Interrupted (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)
        signal.signal(signal.SIGALRM, _retry)


@contextmanager
def handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted inside the block; the previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear()
    previous = {sig: signal.getsignal(sig) for sig in (*SIGNALS, signal.SIGALRM)}
    install()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
