"""``autotune build-demo-model``: the CPU quickstart's tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotune.cli.common import console, fail


def build_demo(
    path: Annotated[Path, typer.Argument()] = Path("~/.cache/autotune/demo-llama"),
) -> None:
    """Install the CPU quickstart's tiny trained demo model (offline; checked by hash)."""
    from autotune.model import DemoModelError, build_demo_model

    try:
        console.print(f"demo model at {build_demo_model(path.expanduser())}")
    except DemoModelError as exc:
        raise fail(exc) from None
