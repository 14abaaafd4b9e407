"""``autotune db``: autotune's own tables."""

from __future__ import annotations

import typer

from autotune.cli.common import StorageOpt, console, shown_url, storage_url

app = typer.Typer(no_args_is_help=True, help="Manage autotune's database tables.")


@app.command("upgrade")
def db_upgrade(storage: StorageOpt = None) -> None:
    """Create or migrate autotune's tables to the latest revision."""
    from autotune.store import upgrade_schema

    url = storage_url(storage)
    revision = upgrade_schema(url)
    console.print(f"autotune tables in {shown_url(url)} at revision {revision}")
