"""Loads of the test run's read-only model folders, shared between tests, as `p2p ui` shares a loaded model
between runs (app/runs.py). A load of a folder that a session or module fixture wrote (and no test changes), or of
a bundled model, is read from disk once per test process and handed out again while the model is as loaded: no
LoRA in it, no offload hooks, every parameter and buffer unchanged in place (torch's version counters), and the
same attention processors. Anything else loads from disk as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUNDLED = {None, "shapes", "shapes-mmdit"}
_folders: set[str] = set()
_loaded: dict[tuple, tuple[Any, tuple]] = {}


def share(folder: Path) -> Path:
    """Marks a fixture's model folder as read-only for the run: its loads are shared."""
    _folders.add(str(Path(folder).resolve()))
    return folder


def _state(model: Any) -> tuple:
    """What a run could change in place: LoRAs, offload hooks, tensors (version counters) and processors."""
    tensors = tuple(t._version for net in model.networks() for t in (*net.parameters(), *net.buffers()))
    processors = tuple(sorted((k, type(v).__name__) for k, v in getattr(model.denoiser, "attn_processors", {}).items()))
    return tuple(model.loras), model.offload is not None, tensors, processors


def _bundled_in_place() -> bool:
    """The bundled models are where the package keeps them (a test may point p2p elsewhere)."""
    import p2p_cli.models as models
    from p2p_cli.resolve import BUNDLED as FOLDERS

    return models.bundled_weights() == FOLDERS["shapes"] and models.bundle_mmdit_weights() == FOLDERS["shapes-mmdit"]


def _key(spec: Any, args: tuple, kwargs: dict) -> tuple | None:
    shared = (spec in BUNDLED and _bundled_in_place()) or (
        isinstance(spec, (str, Path)) and str(Path(spec).resolve()) in _folders)
    loading = kwargs.get("loading")
    if not shared or (loading is not None and not loading.plain) or kwargs.get("allow_pickle"):
        return None
    return (str(spec), args, tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "threads")))


def shared(load):
    """load_model, with the loads of shared folders handed out again while the model is as loaded."""

    def load_model(spec=None, *args, **kwargs):
        from p2p_cli.models import use_threads

        key = _key(spec, args, kwargs)
        if key is not None and key in _loaded:
            model, state = _loaded[key]
            if _state(model) == state:
                use_threads(kwargs.get("threads"))  # what load_model does first
                return model
        model = load(spec, *args, **kwargs)
        if key is not None:
            _loaded[key] = (model, _state(model))
        return model

    return load_model
