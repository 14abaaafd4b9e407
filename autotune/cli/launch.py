"""Running a study here, shared by ``study start`` and ``worker``: the device pool, the runner,
the live progress and the closing summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from autotune.cli.common import console, err_console, fail
from autotune.cli.progress import reporter_for
from autotune.cli.render import print_summary


def parse_parallel(parallel: str) -> int | None:
    """``--parallel``: a number ≥ 1, or None for auto; exit 2 otherwise."""
    if parallel == "auto":
        return None
    if not (parallel.isdigit() and int(parallel) >= 1):
        err_console.print(f"[bold red]error:[/] --parallel {parallel!r}: use a number ≥ 1 or auto")
        raise typer.Exit(2)
    return int(parallel)


def device_pool(spec: Any, devices: str | None, wanted: int | None) -> Any:
    """The pool of ``--devices`` (or the space's devices, detected); exit 2 on a bad spec, 1
    when no device is there."""
    from autotune.devices import NoDevicesError, detect_pool, pool_from_spec
    from autotune.devices.cpu import parse_bytes

    kv_bytes = parse_bytes(spec.engine.flags.get("kv_cache_memory_bytes")
                           or spec.engine.flags.get("kv-cache-memory-bytes"))
    try:
        if devices is not None:
            return pool_from_spec(devices, parallel=wanted, kv_cache_bytes=kv_bytes)
        return detect_pool(spec.engine.devices, parallel=wanted, kv_cache_bytes=kv_bytes)
    except (NoDevicesError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2 if isinstance(exc, ValueError) else 1) from None


def study_runner(spec: Any, *, name: str, url: str, pool: Any, log_dir: Path | None,
                 space_path: str = "", space_yaml: str | None = None,
                 warm_start: list[dict[str, Any]] | None = None) -> Any:
    """A StudyRunner for this process (the storage's single writer when it must be one),
    building the demo model first if the space asks for it."""
    from autotune.engines import create
    from autotune.errors import StorageError
    from autotune.settings import Settings
    from autotune.store.connection import claim_single_writer
    from autotune.study import StudyRunner

    try:
        claim_single_writer(url)
    except StorageError as exc:
        raise fail(exc) from None
    if spec.model.build_demo:
        from autotune.model.demo import DemoModelError, build_demo_model, is_built

        if not is_built(spec.model.resolved_path):
            console.print(f"building the demo model at {spec.model.resolved_path} ...")
            try:
                build_demo_model(spec.model.resolved_path)
            except DemoModelError as exc:
                raise fail(exc) from None
    settings = Settings()
    return StudyRunner.create(
        spec, name=name, storage=url, launcher=create(spec.engine.kind), pool=pool,
        log_dir=log_dir or Path(settings.log_dir), space_path=space_path,
        space_yaml=space_yaml, heartbeat_interval_s=settings.heartbeat_interval_s,
        grace_period_s=settings.grace_period_s, max_retries=settings.max_retries,
        warm_start=warm_start or (),
    )


def run_with_progress(runner: Any, pool: Any, wanted: int | None, *, out: Any = None,
                      **run_kwargs: Any) -> Any:
    """``runner.run`` on as many slots as wanted and free, behind the live progress (plain
    lines when ``out``, the console by default, is not a terminal)."""
    slots = pool.slots if wanted is None else min(wanted, pool.slots)
    with reporter_for(out or console, slots=slots,
                      defaults=runner.space.default_params()) as reporter:
        runner.reporter = reporter
        return runner.run(parallel=slots, **run_kwargs)


def finish(run: Any, pool: Any, url: str, name: str, started: float, resume_hint: str) -> None:
    """Print the study's summary; exit 130 when the run was interrupted."""
    from autotune.results.report import load_report
    from autotune.store import open_catalog

    print_summary(load_report(open_catalog(url), name))
    console.print(f"{run.trials_run} trial(s) run here in {time.monotonic() - started:.0f}s; "
                  f"at most {run.peak_parallel} ran at once")
    if pool.stuck():
        console.print(f"[yellow]devices stuck (memory never released): {pool.stuck()}[/]")
    if run.interrupted:
        console.print(f"[yellow]interrupted[/]: the engine was torn down and its trial queued "
                      f"again; resume with `{resume_hint}`")
        raise typer.Exit(130)
