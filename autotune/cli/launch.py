"""Running a study from the command line, shared by ``study start`` and ``worker``: options
to typed values (exit 2 on a bad one), ``autotune.study.run_study`` behind the live progress,
and the closing summary."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from autotune.cli.common import console, err_console
from autotune.cli.progress import reporter_for
from autotune.cli.render import print_summary
from autotune.study.reporter import SilentReporter

if TYPE_CHECKING:  # the study package pulls Optuna in: `autotune --help` stays quick
    from rich.console import Console

    from autotune.devices import DevicePool
    from autotune.space import Space
    from autotune.study.entrypoint import StudyResult
    from autotune.trial import TrialRunner


def parse_parallel(parallel: str) -> int | None:
    """``--parallel``: a number ≥ 1, or None for auto; exit 2 otherwise."""
    if parallel == "auto":
        return None
    if not (parallel.isdigit() and int(parallel) >= 1):
        err_console.print(f"[bold red]error:[/] --parallel {parallel!r}: use a number ≥ 1 or auto")
        raise typer.Exit(2)
    return int(parallel)


def device_pool(spec: Space, devices: str | None, wanted: int | None) -> DevicePool:
    """The pool of ``--devices`` (or the space's devices, detected); exit 2 on a bad spec, 1
    when no device is there."""
    from autotune.devices import NoDevicesError
    from autotune.study.entrypoint import device_pool as pool_of

    try:
        return pool_of(spec, devices, parallel=wanted)
    except (NoDevicesError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2 if isinstance(exc, ValueError) else 1) from None


class ConsoleNotices(SilentReporter):
    """A StudyReporter with nothing but its notices, on the console: for ``--no-run``, where
    no trial runs and no progress is shown."""

    def notice(self, text: str) -> None:
        console.print(text, markup=False, highlight=False)


def create_here(spec: Space, url: str, *, name: str, trials: int, pool: DevicePool,
                log_dir: Path | None, space_path: str, space_yaml: str,
                warm_start: Sequence[Mapping[str, Any]],
                accept_space_change: bool = False) -> None:
    """``autotune.study.create_study``, its notices on the console. Its errors (an unusable
    storage, the demo model not built) reach ``autotune.cli.main``: one line, their exit code."""
    from autotune.study.entrypoint import create_study

    create_study(spec, url, name=name, trials=trials, devices=pool, log_dir=log_dir,
                 warm_start=warm_start, reporter=ConsoleNotices(), space_path=space_path,
                 space_yaml=space_yaml, accept_space_change=accept_space_change)


def run_with_progress(spec: Space, url: str, *, name: str, pool: DevicePool,
                      wanted: int | None, log_dir: Path | None = None, space_path: str = "",
                      space_yaml: str | None = None, trials: int | None = None,
                      timeout_s: float | None = None, join: bool = False,
                      max_trials_here: int | None = None,
                      warm_start: Sequence[Mapping[str, Any]] = (),
                      trial_runner: TrialRunner | None = None,
                      out: Console | None = None,
                      confirm_stage: bool | None = None,
                      accept_space_change: bool = False) -> StudyResult:
    """``autotune.study.run_study`` on as many slots as wanted and free, behind the live
    progress (plain lines when ``out``, the console by default, is not a terminal). Its
    errors reach ``autotune.cli.main``: one line, their exit code."""
    from autotune.study.entrypoint import run_study, slots_for

    with reporter_for(out or console, slots=slots_for(pool, wanted),
                      defaults=spec.default_params()) as reporter:
        return run_study(spec, url, name=name, trials=trials, timeout_s=timeout_s,
                         parallel=wanted, devices=pool, log_dir=log_dir, warm_start=warm_start,
                         reporter=reporter, join=join, max_trials_here=max_trials_here,
                         space_path=space_path, space_yaml=space_yaml,
                         trial_runner=trial_runner, confirm_stage=confirm_stage,
                         accept_space_change=accept_space_change)


def finish(result: StudyResult, started: float, resume_hint: str) -> None:
    """Print the study's summary; exit 130 when the run was interrupted."""
    run = result.run
    print_summary(result.report)
    stage = (f", and {run.confirm_starts} fresh server(s) in the confirm stage"
             if run.confirm_starts else "")
    console.print(f"{run.trials_run} trial(s) run here{stage} in "
                  f"{time.monotonic() - started:.0f}s; at most {run.peak_parallel} ran at once")
    if result.stuck_devices:
        console.print(f"[yellow]devices stuck (memory never released): "
                      f"{result.stuck_devices}[/]")
    if run.host_problem is not None:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/] this machine stopped claiming trials of study "
                          f"{escape(result.name)}: {escape(run.host_problem)}. Resume here with "
                          f"`{escape(resume_hint)}` once this machine holds what the study "
                          "needs", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if run.interrupted:
        console.print(f"[yellow]interrupted[/]: the engine was torn down and its trial queued "
                      f"again; resume with `{resume_hint}`")
        raise typer.Exit(130)
