"""``autotune build-demo-model``: the CPU quickstart's tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotune.cli.common import console


def build_demo(
    path: Annotated[Path, typer.Argument()] = Path("~/.cache/autotune/demo-llama"),
) -> None:
    """Build the CPU quickstart's tiny demo model (offline; trained in ~6 CPU-minutes)."""
    from autotune.demo_model import build_demo_model

    console.print(f"demo model at {build_demo_model(path.expanduser())}")
