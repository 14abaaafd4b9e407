"""``autotune dashboard``: serve the live, read-only dashboard of a storage."""

from __future__ import annotations

from typing import Annotated

import typer

from autotune.cli.common import StorageOpt, fail, storage_url

HELP = "Serve the live, read-only dashboard (FastAPI + Plotly)."


def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(
        help="address to listen on; anything but loopback exposes every study")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8080,
    token: Annotated[str | None, typer.Option(
        envvar="AUTOTUNE_DASHBOARD_TOKEN", show_default=False,
        help="require this token on every request (?token=T once, or Authorization: Bearer T)",
    )] = None,
) -> None:
    """Open a live, read-only dashboard of the studies in a storage, in the browser."""
    from autotune.dashboard.server import serve
    from autotune.errors import AutotuneError

    try:
        serve(storage_url(storage), host=host, port=port, token=token or None)
    except AutotuneError as exc:
        raise fail(exc) from None
