"""``autotune worker``: join an existing study and run its trials on this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from autotune.cli.common import (
    SpaceFileOpt,
    SpaceShaOpt,
    StorageOpt,
    console,
    fail,
    shown_url,
    storage_url,
    vouched_space,
)
from autotune.cli.launch import (
    device_pool,
    finish,
    parse_parallel,
    run_with_progress,
)


def worker(
    study: Annotated[str, typer.Option("--study", help="name of an existing study")],
    storage: StorageOpt = None,
    devices: Annotated[
        str, typer.Option(help="auto, cpu, cpu:CORES, gpu or gpu:INDICES (this machine's)")
    ] = "auto",
    trials: Annotated[
        int | None, typer.Option(help="run at most N trials in this worker", min=1)
    ] = None,
    parallel: Annotated[str, typer.Option(help="trials at once here: N or auto")] = "1",
    log_dir: Annotated[Path | None, typer.Option(help="engine logs folder")] = None,
    space: SpaceFileOpt = None,
    space_sha256: SpaceShaOpt = None,
) -> None:
    """Join a study (made by `study start`, e.g. with --no-run) and run its trials here until
    the study's trial budget is reached. The engine command stored with the study runs only
    if this machine's --space FILE (or --space-sha256) vouches for it."""
    from autotune.errors import StudyNotFoundError
    from autotune.store import open_catalog

    url = storage_url(storage)
    catalog = open_catalog(url)
    record = catalog.get_study(study) if catalog.has_schema() else None
    if record is None:
        raise fail(StudyNotFoundError(study, shown_url(url)))
    spec = vouched_space(record.space_yaml, study, space, space_sha256)
    wanted = parse_parallel(parallel)
    pool = device_pool(spec, devices, wanted)
    console.print(f"worker on {pool.describe()} joining study [bold]{study}[/] "
                  f"in {shown_url(url)}")
    started = time.monotonic()
    result = run_with_progress(spec, url, name=study, pool=pool, wanted=wanted, join=True,
                               max_trials_here=trials, log_dir=log_dir,
                               space_path=record.space_path, space_yaml=record.space_yaml)
    pin = f"--space {space}" if space is not None else "--space-sha256 HEX"
    finish(result, started, f"autotune worker --study {study} --storage {shown_url(url)} {pin}")
