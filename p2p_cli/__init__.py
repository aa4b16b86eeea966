"""p2p: Prompt-to-Prompt image editing (Hertz et al., ICLR 2023) on Stable Diffusion 1.x/2.x, SDXL, SD3, FLUX.1,
Qwen-Image, FLUX.2 ([klein], [dev]) and Chroma.

    import p2p_cli as p2p
    model = p2p.load_model("shapes")
    result = p2p.edit(model, "a big [red->blue] circle on the left on a white background")

The names below are imported on first use, so `import p2p_cli` (and the command line's --help) stays fast.
Importing p2p sets OMP_WAIT_POLICY=PASSIVE unless it is set, and load_model sets torch's CPU threads (half the
CPUs, `threads=` to choose) unless OMP_NUM_THREADS or torch.set_num_threads chose already.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__version__ = "0.1.0"
TORCH_BEFORE_P2P = "torch" in sys.modules  # else torch's thread count, read when p2p imports it, is torch's own


def cpu_defaults(environ=os.environ) -> None:
    """Before torch is imported: OpenMP threads that sleep when idle rather than spin (OMP_WAIT_POLICY=PASSIVE).

    Spinning threads made CPU runs on a shared machine up to 10x slower (issue 19). A user's own setting wins; a
    torch imported before p2p keeps the policy it started with (OpenMP reads it once)."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


cpu_defaults()  # for the library as for the CLI: a notebook gets the command line's speed

_EXPORTS = {
    "load_model": "p2p_cli.api",
    "load_recipe": "p2p_cli.api",
    "edit": "p2p_cli.api",
    "invert": "p2p_cli.api",
    "sweep": "p2p_cli.api",
    "edit_many": "p2p_cli.api",
    "dataset": "p2p_cli.runs.datasets",
    "Result": "p2p_cli.api",
    "AttentionMaps": "p2p_cli.api",
    "Recipe": "p2p_cli.recipe",
    "RecipeError": "p2p_cli.recipe",
    "ModelLoadError": "p2p_cli.models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'p2p_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
