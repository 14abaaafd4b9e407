"""The ``autotune`` command line (typer + rich): the app, its command groups, the entry point.

One module per command group (study, worker, export/confirm, init, db, devices, demo,
dashboard); ``common`` holds the consoles, the ``--storage`` option and the error exit;
``render`` (tables), ``trial_view`` (one trial in full) and ``progress`` (the live display) what
is printed; ``launch`` the run shared by ``study start`` and ``worker``.
"""

from __future__ import annotations

import sys

import typer

from autotune.cli import dashboard, db, demo, devices, export, init, study, worker
from autotune.cli.common import console, err_console

__all__ = ["app", "console", "err_console", "main"]

app = typer.Typer(
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
    help="Find the best vLLM serving configuration for your model, load and SLOs.",
)
app.add_typer(study.app, name="study")
app.add_typer(db.app, name="db")
app.command("worker")(worker.worker)
app.command("export")(export.export)
app.command("confirm")(export.confirm)
app.command("devices")(devices.devices)
app.command("init")(init.init)
app.command("build-demo-model")(demo.build_demo)
app.command("dashboard", help=dashboard.HELP)(dashboard.dashboard)


def main() -> None:
    """Console entry point: database errors become one clear line and exit code 1."""
    from rich.markup import escape
    from sqlalchemy.exc import ArgumentError, OperationalError

    from autotune.errors import AutotuneError

    try:
        app()
    except AutotuneError as exc:  # raised mid-run (e.g. a full disk): one line, its exit code
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except (OperationalError, ArgumentError) as exc:
        err_console.print(f"[bold red]error:[/] cannot use the storage: {exc.args[0]}")
        sys.exit(1)
    except ModuleNotFoundError as exc:
        err_console.print(f"[bold red]error:[/] the storage's database driver is not installed "
                          f"({exc}); for PostgreSQL: pip install 'psycopg\\[binary]'")
        sys.exit(1)
