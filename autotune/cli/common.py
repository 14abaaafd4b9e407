"""What every command shares: the consoles, the ``--storage`` option and the error exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


SpaceFileOpt = Annotated[
    Path | None,
    typer.Option("--space", help="this machine's copy of the study's space file: the engine "
                                 "command stored in the database runs only if it matches"),
]
SpaceShaOpt = Annotated[
    str | None,
    typer.Option("--space-sha256", metavar="HEX",
                 help="run the stored space only if its sha256 is HEX "
                      "(default: $AUTOTUNE_SPACE_SHA256)", show_default=False),
]


def vouched_space(stored_yaml: str, study: str, local: Path | None, sha256: str | None) -> Any:
    """The study's stored space if this machine's --space or pinned hash vouches for it and
    this machine can run it (what ``study start`` checks: the model path, the data files read
    whole, the engine flags); exit 2 otherwise, naming file, field and line, before anything
    is written (see autotune/space/trust.py)."""
    from autotune.settings import Settings
    from autotune.space import trusted_space
    from autotune.study.entrypoint import check_here

    try:
        spec = trusted_space(stored_yaml, study=study, local=local,
                             sha256=sha256 or Settings().space_sha256)
        check_here(spec, local, text=stored_yaml,
                   label=f"the space stored with study {study!r}")
    except AutotuneError as exc:  # UntrustedSpace, SpaceError, the engine's flags unreadable
        raise fail(exc) from None
    return spec


def fail(exc: AutotuneError) -> typer.Exit:
    """Print ``exc`` as one error line; the exit to raise carries its exit code."""
    # Soft wrap: a long path stays one piece that can be copied.
    err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def shown_url(url: str) -> str:
    """A storage URL as every command prints it: its password masked (``***``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def storage_url(value: str | None) -> str:
    """The database URL of ``--storage`` (or its default); exit 2 when it is not a URL."""
    from pydantic import ValidationError

    from autotune.settings import resolve_storage

    try:
        return resolve_storage(value)
    except ValidationError as exc:
        err_console.print(f"[bold red]error:[/] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None
