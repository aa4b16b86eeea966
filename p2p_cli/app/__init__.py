"""`p2p ui`: a local Gradio app on the Python API (pip install 'p2p-cli[ui]'). This package is the only place that
imports gradio: controls.py (what the widgets mean), runs.py (models and runs), blocks.py (the page)."""

from __future__ import annotations

import socket
from typing import Any

SHARE_WARNING = ("--share: the app gets a public gradio.live address for 72 hours; anyone with the link can run"
                 " the model on this machine and read the pictures it makes")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the system has free now (an ephemeral one)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(model: str | None = None, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           device: str = "auto", dtype: str = "auto", block: bool = True, quiet: bool = False) -> Any:
    """Build the app (on `model`, else the bundled shapes models) and serve it; returns the Blocks (its
    .local_url) when `block` is False, else serves until interrupted."""
    import gradio as gr

    import threading

    from p2p_cli.app.blocks import CSS, build, checked, warm_up
    from p2p_cli.app.controls import Controls, family_defaults
    from p2p_cli.app.runs import Runner

    runner = Runner(device=device, dtype=dtype)
    start = None
    if model is not None:
        d = family_defaults(model)
        start = Controls(prompt="a [cat->dog] sitting on a mat" if model not in ("shapes", "shapes-mmdit") else
                         "a big [red->blue] circle on the left on a white background", model=model,
                         guidance=d["guidance"], self_window=d["self_window"])
    app = build(runner, models=[model] if model else None, start=start)
    checked(app.start)  # the tokenizers read here, before any other thread imports transformers (warm_up)
    threading.Thread(target=warm_up, args=(runner, app.start), daemon=True).start()
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port or free_port(host), share=share, prevent_thread_lock=not block,
               allowed_paths=[str(runner.out)], max_file_size="50mb", theme=gr.themes.Soft(), css=CSS, quiet=quiet,
               footer_links=["api"], show_error=True)
    app.runner = runner
    return app
