"""What every command shares: the consoles, the ``--storage`` option and the error exit."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from autotune.errors import AutotuneError

console = Console()
err_console = Console(stderr=True)

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="database URL (default: $AUTOTUNE_STORAGE or sqlite:///autotune.db)",
        show_default=False,
    ),
]


def fail(exc: AutotuneError) -> typer.Exit:
    """Print ``exc`` as one error line; the exit to raise carries its exit code."""
    # Soft wrap: a long path stays one piece that can be copied.
    err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def storage_url(value: str | None) -> str:
    """The database URL of ``--storage`` (or its default); exit 2 when it is not a URL."""
    from pydantic import ValidationError

    from autotune.settings import resolve_storage

    try:
        return resolve_storage(value)
    except ValidationError as exc:
        err_console.print(f"[bold red]error:[/] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None
