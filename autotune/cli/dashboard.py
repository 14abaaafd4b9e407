"""``autotune dashboard``: serve the live, read-only dashboard of a storage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotune.cli.common import StorageOpt, err_console, fail, storage_url

HELP = "Serve the live, read-only dashboard (FastAPI + Plotly)."


def dashboard(
    ctx: typer.Context,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(
        help="address to listen on; anything but loopback exposes every study")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8080,
    token: Annotated[str | None, typer.Option(
        envvar="AUTOTUNE_DASHBOARD_TOKEN", show_default=False,
        help="require this token on every request (?token=T once, or Authorization: Bearer T); "
             "`ps` shows it to every user: prefer --token-file or the environment",
    )] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", metavar="PATH", show_default=False,
        help="read the token from this file (chmod 600); overrides AUTOTUNE_DASHBOARD_TOKEN",
    )] = None,
    log_dir: Annotated[Path | None, typer.Option(
        "--log-dir", metavar="DIR", show_default=False,
        help="engine logs are shown only from inside DIR (default: $AUTOTUNE_LOG_DIR or "
             "autotune_logs, where studies write them)")] = None,
) -> None:
    """Open a live, read-only dashboard of the studies in a storage, in the browser."""
    from autotune.dashboard.server import read_token_file, serve
    from autotune.errors import AutotuneError, OptionError

    # By name: typer carries its own copy of click's ParameterSource.
    source = ctx.get_parameter_source("token")
    typed = getattr(source, "name", None) == "COMMANDLINE"
    try:
        if token_file is not None:
            if typed:
                raise OptionError("give the token once: --token T or --token-file PATH")
            token, warnings = read_token_file(token_file)
        else:
            warnings = ["--token on the command line is visible to every user of this machine "
                        "(ps); use --token-file PATH or AUTOTUNE_DASHBOARD_TOKEN"] if typed else []
        url = storage_url(storage)
        for line in warnings:
            err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
        serve(url, host=host, port=port, token=token or None, log_dir=log_dir)
    except AutotuneError as exc:
        raise fail(exc) from None
