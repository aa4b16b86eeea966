"""`p2p ui`: the local web app (p2p_cli/app, on the API); gradio is imported only when it runs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from p2p_cli.cli import options as o
from p2p_cli.cli.common import use_threads
from p2p_cli.cli.errors import UsageError, handled

Host = Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")]
Port = Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="Port (default: a free one).")]
Share = Annotated[bool, typer.Option("--share", help="Also serve on a public gradio.live link (off by default).")]

INSTALL = "p2p ui needs the ui extra: pip install 'p2p-cli[ui]' (gradio {missing})"


def ui(model: o.ModelSpec = None, host: Host = "127.0.0.1", port: Port = None, share: Share = False,
       device: o.DeviceOpt = o.Device.auto, dtype: o.DtypeOpt = o.Dtype.auto, threads: o.Threads = None,
       debug: o.Debug = False) -> None:
    """Open the web app: edit by words, see the source, edits and baselines; with no --model, the bundled
    shapes models (CPU, no download)."""
    with handled(debug):
        try:
            import gradio  # noqa: F401
        except ImportError as err:
            raise UsageError(INSTALL.format(missing=f"is not installed: {err}")) from None
        from p2p_cli.app import SHARE_WARNING, launch

        if share:
            typer.echo(f"warning: {SHARE_WARNING}", err=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: --host {host}: the app is reachable from other machines", err=True)
        use_threads(threads)
        launch(model, host=host, port=port, share=share, device=device.value, dtype=dtype.value)
