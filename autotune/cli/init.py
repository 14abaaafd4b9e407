"""``autotune init``: a commented starting space file from a model and the devices here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotune.cli.common import err_console, fail


def init(
    model: Annotated[str, typer.Option("--model", help="local folder or hub id (in the cache)")],
    devices: Annotated[
        str, typer.Option(help="auto, cpu, cpu:CORES, gpu or gpu:INDICES")
    ] = "auto",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="space file to write "
                                  "(default: MODEL_NAME.yaml here)")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="longest prompt + answer (default: the model's context, "
                                 "at most 4096)", min=1)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a starting space file for MODEL: the memory fit picks the tensor-parallel sizes,
    quantization variants and gpu_memory_utilization range that fit the devices found; the
    file is checked as a valid space before it is written."""
    from autotune.devices import NoDevicesError, pool_from_spec
    from autotune.errors import AutotuneError, OptionError
    from autotune.space import devices_of, starter_space, write_starter_space

    target = output or Path(Path(model.rstrip("/")).name + ".yaml")
    if target.exists() and not force:  # before the devices and the model are looked at
        raise fail(OptionError(f"{target} exists: pass --force to overwrite it"))
    try:
        pool = pool_from_spec(devices)
    except (ValueError, NoDevicesError) as exc:
        raise fail(OptionError(str(exc))) from None
    found = devices_of(pool)
    try:
        text = starter_space(model, found, max_model_len=max_model_len)
        write_starter_space(text, target, force=force)
    except AutotuneError as exc:
        raise fail(exc) from None
    err_console.print(f"wrote {target} for {model} on {found.label}; next: edit its workload "
                      f"and SLOs, then `autotune study start --space {target}`")
