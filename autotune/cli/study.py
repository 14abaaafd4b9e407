"""``autotune study``: start, list and show tuning studies."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autotune.cli.common import StorageOpt, console, err_console, fail, shown_url, storage_url
from autotune.cli.launch import (
    create_here,
    device_pool,
    finish,
    parse_parallel,
    run_with_progress,
)
from autotune.cli.render import (
    check_columns,
    print_study,
    studies_table,
    warm_start_ignored,
    warm_start_plan,
)
from autotune.errors import AutotuneError

if TYPE_CHECKING:
    from autotune.devices import DevicePool
    from autotune.space import Space

app = typer.Typer(no_args_is_help=True, help="Create, run and inspect tuning studies.")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _warm_start(spec: Space, *, name: str, url: str, source: str, source_storage: str | None,
                pool: DevicePool, force: bool, budget: int) -> list[dict[str, Any]]:
    """The configurations an earlier study seeds this one with, printed; [] on a resume."""
    from autotune.store import open_catalog
    from autotune.study.warm_start import find_study, plan

    if find_study(open_catalog(url), name) is not None:
        warm_start_ignored(name, source)
        return []
    other_url = storage_url(source_storage) if source_storage else url
    try:
        result = plan(spec, source=source, catalog=open_catalog(other_url), model=spec.model.path,
                      hardware=pool.describe(), force=force)
    except AutotuneError as exc:
        raise fail(exc) from None
    warm_start_plan(result, source=source, shown_url=shown_url(other_url),
                    objectives=spec.objectives, budget=budget)
    return result.configurations if result.seeds else []


@app.command("start")
def study_start(
    space: Annotated[Path, typer.Option("--space", help="search-space YAML file")],
    name: Annotated[
        str | None, typer.Option(help="study name (default: the space's name)")
    ] = None,
    storage: StorageOpt = None,
    trials: Annotated[int | None, typer.Option(help="total trials in the study", min=1)] = None,
    timeout: Annotated[
        float | None, typer.Option(help="stop starting trials after S seconds")
    ] = None,
    log_dir: Annotated[Path | None, typer.Option(help="engine logs folder")] = None,
    no_run: Annotated[
        bool, typer.Option("--no-run", help="create the study, run nothing")
    ] = False,
    parallel: Annotated[
        str | None,
        typer.Option(help="trials at once on disjoint devices: N or auto (as many as fit); "
                          "default 1, with --executor ray auto")
    ] = None,
    devices: Annotated[
        str | None, typer.Option(help="auto, cpu, cpu:CORES, gpu or gpu:INDICES")
    ] = None,
    warm_start: Annotated[
        str | None,
        typer.Option("--warm-start", metavar="STUDY",
                     help="first run the Pareto set of this earlier study (same model family "
                          "and hardware class); only when the study is created"),
    ] = None,
    warm_start_storage: Annotated[
        str | None,
        typer.Option("--warm-start-storage", metavar="URL",
                     help="database of the --warm-start study (default: --storage)"),
    ] = None,
    warm_start_any: Annotated[
        bool, typer.Option("--warm-start-any",
                           help="warm-start even from another model family or hardware class")
    ] = False,
    no_confirm_stage: Annotated[
        bool, typer.Option("--no-confirm-stage",
                           help="skip the confirm stage (the front's picks and the defaults "
                                "measured again on fresh servers at the end): the search gets "
                                "the whole budget")
    ] = False,
    executor: Annotated[
        str, typer.Option("--executor", metavar="local|ray",
                          help="local: trials on this machine's devices; ray: each trial a Ray "
                               "task on a node of a Ray cluster (docs/distributed.md)")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", metavar="ADDR",
                                 help="the Ray cluster of --executor ray (default: RAY_ADDRESS, "
                                      "else the one started on this machine)")
    ] = None,
    accept_space_change: Annotated[
        bool, typer.Option("--accept-space-change",
                           help="resume the study although --space differs from its stored "
                                "space in what can alter a measurement (its trials are kept "
                                "and reused): only for a change you know is harmless")
    ] = False,
) -> None:
    """Run a tuning study: each trial launches, measures and tears down a real engine."""
    from autotune.space import read_text
    from autotune.study.entrypoint import load_study_space

    url = storage_url(storage)
    try:
        # a study made for workers elsewhere (--no-run) may name a path only they hold
        spec = load_study_space(space, check=not no_run)
    except AutotuneError as exc:
        raise fail(exc) from None
    study_name = name or spec.name or space.stem
    if executor not in ("local", "ray"):
        err_console.print(f"[bold red]error:[/] --executor {executor!r}: use local or ray")
        raise typer.Exit(2)
    wanted = parse_parallel(parallel or ("auto" if executor == "ray" else "1"))
    trial_runner = None
    if executor == "ray" and not no_run:
        from autotune.cluster import connect
        from autotune.settings import Settings

        trial_runner = connect(spec, ray_address,
                               (log_dir or Path(Settings().log_dir)) / study_name)
        pool = trial_runner.pool
    else:
        pool = device_pool(spec, devices, wanted)
    total = trials or spec.search.trials
    seeds: list[dict[str, Any]] = []
    if warm_start is not None:  # before anything is written: a refusal leaves no study behind
        seeds = _warm_start(spec, name=study_name, url=url, source=warm_start,
                            source_storage=warm_start_storage, pool=pool,
                            force=warm_start_any, budget=total)
    elif warm_start_storage is not None or warm_start_any:
        err_console.print("[bold red]error:[/] --warm-start-storage and --warm-start-any need "
                          "--warm-start STUDY")
        raise typer.Exit(2)
    space_yaml = read_text(str(space))
    if no_run:
        create_here(spec, url, name=study_name, trials=total, pool=pool, log_dir=log_dir,
                    space_path=str(space), space_yaml=space_yaml, warm_start=seeds,
                    accept_space_change=accept_space_change)
        console.print(f"study [bold]{study_name}[/] ready in {shown_url(url)} "
                      f"(budget {total} trials); "
                      f"run it with `autotune worker --study {study_name} --storage URL "
                      f"--space {space}`")
        return
    console.print(f"study [bold]{study_name}[/] on {pool.describe()}, storage {shown_url(url)}")
    started = time.monotonic()
    result = run_with_progress(spec, url, name=study_name, pool=pool, wanted=wanted,
                               trials=total, timeout_s=timeout, log_dir=log_dir,
                               space_path=str(space), space_yaml=space_yaml, warm_start=seeds,
                               confirm_stage=False if no_confirm_stage else None,
                               trial_runner=trial_runner,
                               accept_space_change=accept_space_change)
    finish(result, started, f"autotune study start --space {space} --name {study_name}"
           + (" --executor ray" if executor == "ray" else ""))


@app.command("list")
def study_list(storage: StorageOpt = None) -> None:
    """List the studies in a storage."""
    from autotune.store import open_catalog

    url = storage_url(storage)
    catalog = open_catalog(url)
    if not catalog.has_schema():
        console.print(f"no autotune studies in {shown_url(url)}")
        return
    rows: list[tuple[str, ...]] = []
    for study in catalog.list_studies():
        trials = catalog.list_trials(study.name)
        rows.append((
            study.name,
            study.model,
            study.hardware,
            str(len(trials)),
            str(sum(t.state == "complete" for t in trials)),
            str(sum(t.state in ("failed", "rejected") for t in trials)),
            study.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        ))
    console.print(studies_table(shown_url(url), rows))


@app.command("show")
def study_show(
    name: str,
    storage: StorageOpt = None,
    format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    wide: Annotated[
        bool, typer.Option("--wide", help="every column, the parameters in full names")
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option("--columns", metavar="A,B,C",
                     help="the table's columns: trial, state, result, params, objectives, "
                          "slos, startup, bench, measured, failure, or metric names"),
    ] = None,
    trial: Annotated[
        int | None, typer.Option("--trial", metavar="N", help="one trial in full")
    ] = None,
) -> None:
    """Show a study's trials and Pareto front (table, json or csv), or one trial in full."""
    from autotune.cli.trial_view import print_trial
    from autotune.results import load_report
    from autotune.store import open_catalog

    url = storage_url(storage)
    try:
        report = load_report(open_catalog(url), name)
    except AutotuneError as exc:
        raise fail(exc) from None
    if format is OutputFormat.json:
        sys.stdout.write(report.to_json() + "\n")
        return
    if format is OutputFormat.csv:
        sys.stdout.write(report.to_csv())
        return
    if trial is not None:
        record = report.trial(trial)
        if record is None:
            err_console.print(f"[bold red]error:[/] study {name!r} has no trial {trial}; its "
                              f"trials are 0..{len(report.trials) - 1}")
            raise typer.Exit(2)
        from autotune.results import study_noise_model

        noise = study_noise_model(open_catalog(url), name)  # report.trials are means
        print_trial(report, record, noise.intervals(record))
        return
    try:
        chosen = check_columns(report, columns.split(",")) if columns else None
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] --columns: {exc}")
        raise typer.Exit(2) from None
    print_study(report, name, wide=wide, columns=chosen)
