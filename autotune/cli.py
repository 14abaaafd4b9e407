"""The ``autotune`` command line (typer + rich)."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from autotune.errors import AutotuneError

app = typer.Typer(
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
    help="Find the best vLLM serving configuration for your model, load and SLOs.",
)
study_app = typer.Typer(no_args_is_help=True, help="Create, run and inspect tuning studies.")
db_app = typer.Typer(no_args_is_help=True, help="Manage autotune's database tables.")
app.add_typer(study_app, name="study")
app.add_typer(db_app, name="db")

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


def _fail(exc: AutotuneError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    return typer.Exit(exc.exit_code)


def _storage(value: str | None) -> str:
    from pydantic import ValidationError

    from autotune.settings import resolve_storage

    try:
        return resolve_storage(value)
    except ValidationError as exc:
        err_console.print(f"[bold red]error:[/] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None


def _short_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


class RichReporter:
    """Live progress: trial i of N, phase, elapsed, ETA; one line per finished trial."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("preparing", total=None)
        self.trial_label = ""

    def study_started(self, name: str, done: int, total: int) -> None:
        self.progress.update(self.task, total=total, completed=done, description=f"study {name}")
        if done:
            self.progress.console.print(
                f"resuming study [bold]{name}[/]: {done} of {total} trials already done"
            )

    def trial_started(self, index: int, total: int, number: int, params: dict[str, Any]) -> None:
        self.trial_label = f"trial {index} of {total} (#{number})"
        self.progress.console.print(
            f"[bold]{self.trial_label}[/] {_short_params(params) or 'vLLM defaults'}"
        )
        self.phase("starting")

    def phase(self, phase: str) -> None:
        self.progress.update(self.task, description=f"{self.trial_label}: {phase}")

    def notice(self, text: str) -> None:
        self.progress.console.print(f"[yellow]{escape(text)}[/]")

    def trial_finished(self, number: int, outcome: Any) -> None:
        t = outcome.timings
        if outcome.state == "complete":
            m = outcome.metrics
            text = (
                f"  [green]complete[/] {m.get('output_throughput', 0):.0f} tok/s, "
                f"TTFT p95 {m.get('ttft_p95_ms', 0):.0f} ms, "
                f"E2E p95 {m.get('e2e_p95_ms', 0):.0f} ms, errors {m.get('error_rate', 0):.1%}"
                f" (startup {t.get('startup_s', 0):.1f}s, benchmark "
                f"{t.get('benchmark_s', 0):.1f}s, teardown {t.get('teardown_s', 0):.1f}s)"
            )
        else:
            kind = outcome.failure.kind.value if outcome.failure else "?"
            reason = outcome.failure.reason if outcome.failure else ""
            text = f"  [red]{outcome.state}[/] [{kind}] {reason}"
        for note in outcome.notes:
            text += f"\n  [yellow]note:[/] {note}"
        self.progress.console.print(text, highlight=False)
        self.progress.advance(self.task)


def _parse_parallel(parallel: str) -> int | None:
    if parallel == "auto":
        return None
    if not (parallel.isdigit() and int(parallel) >= 1):
        err_console.print(f"[bold red]error:[/] --parallel {parallel!r}: use a number ≥ 1 or auto")
        raise typer.Exit(2)
    return int(parallel)


def _pool(spec: Any, devices: str | None, wanted: int | None) -> Any:
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


def _runner(spec: Any, *, name: str, url: str, pool: Any, log_dir: Path | None,
            space_path: str = "", space_yaml: str | None = None,
            warm_start: list[dict[str, Any]] | None = None) -> Any:
    from autotune.engines.base import create
    from autotune.errors import StorageError
    from autotune.settings import Settings
    from autotune.storage import claim_single_writer
    from autotune.study import StudyRunner

    try:
        claim_single_writer(url)
    except StorageError as exc:
        raise _fail(exc) from None
    if spec.model.build_demo:
        from autotune.demo_model import build_demo_model, is_built

        if not is_built(spec.model.resolved_path):
            console.print(f"building the demo model at {spec.model.resolved_path} ...")
            build_demo_model(spec.model.resolved_path)
    settings = Settings()
    return StudyRunner(
        spec, name=name, storage=url, launcher=create(spec.engine.kind), pool=pool,
        log_dir=log_dir or Path(settings.log_dir), space_path=space_path,
        space_yaml=space_yaml, heartbeat_interval_s=settings.heartbeat_interval_s,
        grace_period_s=settings.grace_period_s, max_retries=settings.max_retries,
        warm_start=warm_start or (),
    )


def _run_with_progress(runner: Any, pool: Any, wanted: int | None, **run_kwargs: Any) -> Any:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        runner.reporter = RichReporter(progress)
        slots = pool.slots if wanted is None else min(wanted, pool.slots)
        return runner.run(parallel=slots, **run_kwargs)


def _finish(run: Any, pool: Any, url: str, name: str, started: float, resume_hint: str) -> None:
    _print_summary(url, name)
    console.print(f"{run.trials_run} trial(s) run here in {time.monotonic() - started:.0f}s; "
                  f"at most {run.peak_parallel} ran at once")
    if pool.stuck():
        console.print(f"[yellow]devices stuck (memory never released): {pool.stuck()}[/]")
    if run.interrupted:
        console.print(f"[yellow]interrupted[/]: the engine was torn down and its trial queued "
                      f"again; resume with `{resume_hint}`")
        raise typer.Exit(130)


def _warm_start(spec: Any, *, name: str, url: str, source: str, source_storage: str | None,
                pool: Any, force: bool, budget: int) -> list[dict[str, Any]]:
    """The configurations an earlier study seeds this one with, printed; [] on a resume."""
    from autotune.warm_start import find_study, plan, shown_url

    if find_study(url, name) is not None:
        console.print(
            f"[yellow]study [bold]{escape(name)}[/bold] already exists: it is resumed and "
            f"--warm-start {escape(source)} is ignored (a warm start seeds a study only when it "
            "is created; give another --name to start a new, warm-started study)[/]"
        )
        return []
    other_url = _storage(source_storage) if source_storage else url
    try:
        result = plan(spec, source=source, storage=other_url, model=spec.model.path,
                      hardware=pool.describe(), force=force)
    except AutotuneError as exc:
        raise _fail(exc) from None
    for warning in result.warnings:
        err_console.print(f"[bold yellow]warning:[/] --warm-start-any: {escape(warning)}")
    console.print(
        f"warm start from study [bold]{escape(source)}[/] ({shown_url(other_url)}): "
        f"{result.complete} complete trial(s), {result.feasible} feasible under this space's "
        f"objectives and SLOs, {result.pareto} on their Pareto front"
    )
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")
    for skip in result.skipped:
        console.print(f"  [yellow]skipped[/] trial {skip.source_trial} "
                      f"({escape(_short_params(skip.params))}): {escape(skip.reason)}")
    if not result.seeds:
        console.print("[yellow]nothing to enqueue: the study starts from the vLLM defaults "
                      "alone[/]")
        return []
    table = Table(title=f"enqueued after the vLLM defaults, in order: {len(result.seeds)}")
    table.add_column("trial", justify="right")
    table.add_column("parameters, in this space")
    for objective in spec.objectives:
        arrow = "↑" if objective.resolved_direction == "maximize" else "↓"
        table.add_column(f"{objective.metric} {arrow}", justify="right")
    for seed in result.seeds:
        table.add_row(str(seed.source_trial),
                      "\n".join(escape(f"{k}={v}") for k, v in seed.params.items()),
                      *(f"{v:.4g}" for v in seed.values))
    console.print(table)
    if 1 + len(result.seeds) > budget:
        console.print(f"[yellow]the budget of {budget} trial(s) runs only the defaults and the "
                      f"first {budget - 1} of them; raise --trials to run them all[/]")
    return result.configurations


@study_app.command("start")
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
        str, typer.Option(help="trials at once on disjoint devices: N or auto (as many as fit)")
    ] = "1",
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
) -> None:
    """Run a tuning study: each trial launches, measures and tears down a real engine."""
    from autotune.space import load_space

    url = _storage(storage)
    try:
        spec = load_space(space)
    except AutotuneError as exc:
        raise _fail(exc) from None
    study_name = name or spec.name or space.stem
    wanted = _parse_parallel(parallel)
    pool = _pool(spec, devices, wanted)
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
    runner = _runner(spec, name=study_name, url=url, pool=pool, log_dir=log_dir,
                     space_path=str(space), space_yaml=space.read_text(), warm_start=seeds)
    if no_run:
        runner.prepare(budget=total)
        console.print(f"study [bold]{study_name}[/] ready in {url} (budget {total} trials); "
                      f"run it with `autotune worker --study {study_name} --storage URL`")
        return
    console.print(f"study [bold]{study_name}[/] on {pool.describe()}, storage {url}")
    started = time.monotonic()
    run = _run_with_progress(runner, pool, wanted, n_trials=total,
                             timeout_s=timeout or spec.search.timeout_s)
    _finish(run, pool, url, study_name, started,
            f"autotune study start --space {space} --name {study_name}")


@app.command("worker")
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
) -> None:
    """Join a study (made by `study start`, e.g. with --no-run) and run its trials here until
    the study's trial budget is reached."""
    import yaml
    from pydantic import ValidationError

    from autotune.db import repository
    from autotune.db.session import has_schema
    from autotune.errors import StudyNotFoundError
    from autotune.space import Space

    url = _storage(storage)
    record = repository.get_study(url=url, name=study) if has_schema(url) else None
    if record is None:
        raise _fail(StudyNotFoundError(study, url))
    try:
        spec = Space.model_validate(yaml.safe_load(record.space_yaml))
    except (ValidationError, yaml.YAMLError) as exc:
        err_console.print(f"[bold red]error:[/] the space stored with study {study!r} is not "
                          f"valid for this autotune version: {exc}")
        raise typer.Exit(2) from None
    wanted = _parse_parallel(parallel)
    pool = _pool(spec, devices, wanted)
    runner = _runner(spec, name=study, url=url, pool=pool, log_dir=log_dir,
                     space_path=record.space_path, space_yaml=record.space_yaml)
    console.print(f"worker on {pool.describe()} joining study [bold]{study}[/] in {url}")
    started = time.monotonic()
    run = _run_with_progress(runner, pool, wanted, register=False, max_trials_here=trials)
    _finish(run, pool, url, study, started, f"autotune worker --study {study} --storage {url}")


def _print_summary(url: str, name: str) -> None:
    from autotune.report import load_report

    report = load_report(url, name)
    states: dict[str, int] = {}
    for t in report.trials:
        states[t.state] = states.get(t.state, 0) + 1
    console.print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    if not report.pareto_front:
        console.print("[yellow]no feasible trial yet: no Pareto front[/]")
        return
    console.print(_pareto_table(report))


def _pareto_table(report: Any) -> Table:
    table = Table(title=f"Pareto front of {report.name} (feasible trials)")
    table.add_column("trial", justify="right")
    table.add_column("parameters")
    for metric, direction in zip(report.metrics, report.directions, strict=True):
        arrow = "↑" if direction == "maximize" else "↓"
        table.add_column(f"{metric} {arrow}", justify="right")
        table.add_column("vs default", justify="right")
    for number in report.pareto_front:
        t = report.trial(number)
        gains = report.gains(t)
        row = [
            str(number) + (" (default)" if t.is_default else ""),
            _short_params(t.params) if not t.is_default else "vLLM defaults",
        ]
        for metric in report.metrics:
            row.append(f"{t.metrics.get(metric, float('nan')):.4g}")
            g = gains.get(metric)
            row.append("—" if g is None else f"{g:.2f}x")
        table.add_row(*row)
    return table


# Shown by `study show` when measured (column titles).
SHOWN_RESOURCE_METRICS = {
    "output_throughput_cv": "tput CV",
    "kv_cache_usage_peak_pct": "KV peak %",
    "preemptions": "preempt",
    "prefix_cache_hit_rate": "prefix hit",
    "spec_decode_acceptance_rate": "spec accept",
    "queue_time_mean_ms": "queue ms",
    "capacity_request_rate": "capacity req/s",
    "gpu_util_mean_pct": "GPU util %",
    "gpu_mem_peak_mib": "GPU mem MiB",
    "cpu_util_mean_pct": "CPU util %",
    "engine_rss_peak_mib": "engine RSS MiB",
    "cost_per_1m_output_tokens_usd": "$/1M tok",
    "parallel_trials": "ran at once",
    "kv_cache_tokens": "KV tokens",
    "memory_fit_kv_error": "KV estimate err",
}


def _measured(t: Any) -> str:
    """How far to trust the trial's figures: clean, clean after repeats, or disturbed."""
    runs = int(t.metrics.get("measurement_runs", 0))
    if not runs:
        return "—"
    if t.disturbed:
        return f"[red]DISTURBED[/] ×{runs}"
    if runs > 1:
        return f"[yellow]clean after {runs} runs[/]"
    return "clean"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@study_app.command("list")
def study_list(storage: StorageOpt = None) -> None:
    """List the studies in a storage."""
    from autotune.db import repository
    from autotune.db.session import has_schema

    url = _storage(storage)
    if not has_schema(url):
        console.print(f"no autotune studies in {url}")
        return
    table = Table(title=f"studies in {url}")
    for col in ("name", "model", "hardware", "trials", "complete", "failed", "updated"):
        table.add_column(col)
    for study in repository.list_studies(url=url):
        trials = repository.list_trials(url=url, study_name=study.name)
        table.add_row(
            study.name,
            study.model,
            study.hardware,
            str(len(trials)),
            str(sum(t.state == "complete" for t in trials)),
            str(sum(t.state in ("failed", "rejected") for t in trials)),
            study.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@study_app.command("show")
def study_show(
    name: str,
    storage: StorageOpt = None,
    format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Show a study's trials and Pareto front (table, json or csv)."""
    from autotune.quality.spec import QUALITY_LABELS, format_quality
    from autotune.report import load_report

    url = _storage(storage)
    try:
        report = load_report(url, name)
    except AutotuneError as exc:
        raise _fail(exc) from None
    if format is OutputFormat.json:
        sys.stdout.write(report.to_json() + "\n")
        return
    if format is OutputFormat.csv:
        sys.stdout.write(report.to_csv())
        return
    table = Table(title=f"study {name}: {report.model} on {report.hardware}")
    extra = [m for m in SHOWN_RESOURCE_METRICS
             if m not in report.metrics and any(m in t.metrics for t in report.trials)]
    quality = report.quality_columns
    for col in (
        "trial",
        "state",
        "feasible",
        "parameters",
        *report.metrics,
        *(QUALITY_LABELS[m] for m in quality),
        *(SHOWN_RESOURCE_METRICS[m] for m in extra),
        "startup s",
        "bench s",
        "measured",
        "failure",
    ):
        table.add_column(col)
    for t in report.trials:
        if t.state == "reused":
            continue  # counted below; listed by --format json/csv
        failure = (
            f"{t.failure_kind}: {t.failure_reason}" if t.failure_kind else t.failure_reason or ""
        )
        table.add_row(
            str(t.number) + ("*" if t.number in report.pareto_front else ""),
            t.state,
            "yes" if t.feasible else "no",
            "vLLM defaults" if t.is_default else _short_params(t.params),
            *(f"{t.metrics[m]:.4g}" if m in t.metrics else "—" for m in report.metrics),
            *(format_quality(m, t.metrics.get(m)) for m in quality),
            *(f"{t.metrics[m]:.3g}" if m in t.metrics else "—" for m in extra),
            f"{t.startup_s:.1f}" if t.startup_s is not None else "—",
            f"{t.benchmark_s:.1f}" if t.benchmark_s is not None else "—",
            _measured(t),
            failure[:120],
        )
    console.print(table)
    console.print("* = on the feasible Pareto front; measured: clean, clean after repeats "
                  "(a disturbed run was measured again on the same server), or DISTURBED (no "
                  "clean run: treat its figures with care)")
    no_engine = {s: sum(1 for t in report.trials if t.state == s) for s in ("reused", "skipped")}
    if any(no_engine.values()):
        console.print(
            f"suggestions answered without an engine: {no_engine['reused']} reused (the same "
            f"configuration was measured already; not listed above, see --format json), "
            f"{no_engine['skipped']} skipped (the crash model predicted a failure; the reason is "
            "in the failure column) — docs/search.md"
        )
    if quality and report.default_number is not None:
        console.print(
            f"quality: accuracy on the study's eval set; agreement with trial "
            f"{report.default_number} (vLLM defaults, the reference) — docs/quality.md"
        )
    if report.pareto_front:
        console.print(_pareto_table(report))


def _picked(name: str, storage: str | None, trial: int | None, pick: str | None) -> Any:
    from autotune.export import pick_trial
    from autotune.report import load_report

    if trial is not None and pick is not None:
        err_console.print("[bold red]error:[/] give --trial or --pick, not both")
        raise typer.Exit(2)
    url = _storage(storage)
    try:
        report = load_report(url, name)
        return url, report, pick_trial(report, number=trial, pick=pick)
    except AutotuneError as exc:
        raise _fail(exc) from None


def _confirm(url: str, name: str, record: Any, times: int, log_dir: Path | None) -> Any:
    from autotune.confirm import confirm_trial
    from autotune.db import repository
    from autotune.settings import Settings

    study = repository.get_study(url=url, name=name)
    assert study is not None
    console.print(f"confirming trial {record.number} of {name} on {times} fresh server(s) ...")
    return confirm_trial(study.space_yaml, record, times=times,
                         log_dir=(log_dir or Path(Settings().log_dir)) / name)


TrialOpt = Annotated[int | None, typer.Option("--trial", help="trial number")]
PickOpt = Annotated[str | None, typer.Option("--pick", help="max:METRIC or min:METRIC")]


@app.command("export")
def export(
    name: str,
    storage: StorageOpt = None,
    trial: TrialOpt = None,
    pick: PickOpt = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write to FILE")] = None,
    confirm: Annotated[
        int, typer.Option("--confirm", help="first re-measure it on K fresh servers", min=0)
    ] = 0,
    log_dir: Annotated[Path | None, typer.Option(help="engine logs folder")] = None,
) -> None:
    """Write a trial's configuration as a YAML for `vllm serve --config`."""
    from autotune.export import export_yaml

    url, report, record = _picked(name, storage, trial, pick)
    text = export_yaml(report, record)
    if confirm:
        confirmation = _confirm(url, name, record, confirm, log_dir)
        text = "\n".join(confirmation.comment_lines()) + "\n" + text
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(output)
    err_console.print(f"wrote trial {record.number} of {name} to {output}")


@app.command("confirm")
def confirm(
    name: str,
    storage: StorageOpt = None,
    trial: TrialOpt = None,
    pick: PickOpt = None,
    times: Annotated[int, typer.Option(help="fresh servers to measure on", min=1)] = 3,
    log_dir: Annotated[Path | None, typer.Option(help="engine logs folder")] = None,
) -> None:
    """Re-measure a trial's configuration on fresh servers: does the study's figure hold?"""
    url, _, record = _picked(name, storage, trial, pick)
    result = _confirm(url, name, record, times, log_dir)
    table = Table(title=f"trial {record.number} of {name}: output_throughput (tok/s)")
    for col in ("run", "value", "inside the recorded interval"):
        table.add_column(col)
    for i, value in enumerate(result.values, 1):
        table.add_row(str(i), f"{value:.1f}", "yes" if result.inside(value) else "no")
    console.print(table)
    for line in result.comment_lines():
        console.print(escape(line.lstrip("# ")))
    if not result.holds:
        raise typer.Exit(3)


@db_app.command("upgrade")
def db_upgrade(storage: StorageOpt = None) -> None:
    """Create or migrate autotune's tables to the latest revision."""
    from autotune.db.session import upgrade

    url = _storage(storage)
    revision = upgrade(url)
    console.print(f"autotune tables in {url} at revision {revision}")


@app.command("devices")
def devices(
    parallel: Annotated[str, typer.Option(help="slots for N parallel trials, or auto")] = "auto",
) -> None:
    """Print the device inventory autotune would use on this host."""
    from autotune.devices import CpuSlotPool, NvmlGpuPool

    gpus = NvmlGpuPool.discover()
    if gpus is not None:
        table = Table(title=f"NVIDIA GPUs: {gpus.describe()}")
        for col in ("index", "uuid", "name", "memory total MiB", "memory free MiB"):
            table.add_column(col)
        for gpu in gpus.inventory():
            table.add_row(str(gpu["index"]), str(gpu["uuid"]), str(gpu["name"]),
                          str(gpu["memory_total_mib"]), str(gpu["memory_free_mib"]))
        console.print(table)
        return
    console.print("no NVIDIA GPU found (NVML unavailable or no device): trials run on the CPU")
    cpu = CpuSlotPool.for_parallel(None if parallel == "auto" else int(parallel))
    console.print(cpu.describe())
    for slot in cpu.inventory():
        console.print(f"  slot {slot['slot']}: cores {slot['cores']}")


@app.command("build-demo-model")
def build_demo(
    path: Annotated[Path, typer.Argument()] = Path("~/.cache/autotune/demo-llama"),
) -> None:
    """Build the CPU quickstart's tiny demo model (offline; trained in ~6 CPU-minutes)."""
    from autotune.demo_model import build_demo_model

    console.print(f"demo model at {build_demo_model(path.expanduser())}")


def _register_dashboard() -> None:
    from autotune.dashboard.cli import dashboard

    app.command("dashboard", help="Serve the live, read-only dashboard (FastAPI + Plotly).")(
        dashboard
    )


_register_dashboard()


def main() -> None:
    """Console entry point: database errors become one clear line and exit code 1."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        app()
    except (OperationalError, ArgumentError) as exc:
        err_console.print(f"[bold red]error:[/] cannot use the storage: {exc.args[0]}")
        sys.exit(1)
    except ModuleNotFoundError as exc:
        err_console.print(f"[bold red]error:[/] the storage's database driver is not installed "
                          f"({exc}); for PostgreSQL: pip install 'psycopg\\[binary]'")
        sys.exit(1)


if __name__ == "__main__":
    main()
