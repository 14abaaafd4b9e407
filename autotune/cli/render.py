"""What the commands print: rich tables, progress and notes, apart from the commands' logic."""

from __future__ import annotations

from typing import Any

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

from autotune.cli.common import console, err_console

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


def short_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def progress_bar() -> Progress:
    """The live bar of a study run: description, bar, i of N, elapsed, ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


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
            f"[bold]{self.trial_label}[/] {short_params(params) or 'vLLM defaults'}"
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


def print_summary(report: Any) -> None:
    """The end of a run: trials by state, then the Pareto front."""
    states: dict[str, int] = {}
    for t in report.trials:
        states[t.state] = states.get(t.state, 0) + 1
    console.print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    if not report.pareto_front:
        console.print("[yellow]no feasible trial yet: no Pareto front[/]")
        return
    console.print(pareto_table(report))


def pareto_table(report: Any) -> Table:
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
            short_params(t.params) if not t.is_default else "vLLM defaults",
        ]
        for metric in report.metrics:
            row.append(f"{t.metrics.get(metric, float('nan')):.4g}")
            g = gains.get(metric)
            row.append("—" if g is None else f"{g:.2f}x")
        table.add_row(*row)
    return table


def measured(t: Any) -> str:
    """How far to trust the trial's figures: clean, clean after repeats, or disturbed."""
    runs = int(t.metrics.get("measurement_runs", 0))
    if not runs:
        return "—"
    if t.disturbed:
        return f"[red]DISTURBED[/] ×{runs}"
    if runs > 1:
        return f"[yellow]clean after {runs} runs[/]"
    return "clean"


def studies_table(url: str, rows: list[tuple[str, ...]]) -> Table:
    """`study list`: one row per study (name, model, hardware, trials, complete, failed,
    updated)."""
    table = Table(title=f"studies in {url}")
    for col in ("name", "model", "hardware", "trials", "complete", "failed", "updated"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


def print_study(report: Any, name: str) -> None:
    """`study show` as a table: the trials, what their columns mean, the Pareto front."""
    from autotune.quality.spec import QUALITY_LABELS, format_quality

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
            "vLLM defaults" if t.is_default else short_params(t.params),
            *(f"{t.metrics[m]:.4g}" if m in t.metrics else "—" for m in report.metrics),
            *(format_quality(m, t.metrics.get(m)) for m in quality),
            *(f"{t.metrics[m]:.3g}" if m in t.metrics else "—" for m in extra),
            f"{t.startup_s:.1f}" if t.startup_s is not None else "—",
            f"{t.benchmark_s:.1f}" if t.benchmark_s is not None else "—",
            measured(t),
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
        console.print(pareto_table(report))


def warm_start_ignored(name: str, source: str) -> None:
    console.print(
        f"[yellow]study [bold]{escape(name)}[/bold] already exists: it is resumed and "
        f"--warm-start {escape(source)} is ignored (a warm start seeds a study only when it "
        "is created; give another --name to start a new, warm-started study)[/]"
    )


def warm_start_plan(result: Any, *, source: str, shown_url: str, objectives: list[Any],
                    budget: int) -> None:
    """What a warm start found in ``source`` and enqueues, in order."""
    for warning in result.warnings:
        err_console.print(f"[bold yellow]warning:[/] --warm-start-any: {escape(warning)}")
    console.print(
        f"warm start from study [bold]{escape(source)}[/] ({shown_url}): "
        f"{result.complete} complete trial(s), {result.feasible} feasible under this space's "
        f"objectives and SLOs, {result.pareto} on their Pareto front"
    )
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")
    for skip in result.skipped:
        console.print(f"  [yellow]skipped[/] trial {skip.source_trial} "
                      f"({escape(short_params(skip.params))}): {escape(skip.reason)}")
    if not result.seeds:
        console.print("[yellow]nothing to enqueue: the study starts from the vLLM defaults "
                      "alone[/]")
        return
    table = Table(title=f"enqueued after the vLLM defaults, in order: {len(result.seeds)}")
    table.add_column("trial", justify="right")
    table.add_column("parameters, in this space")
    for objective in objectives:
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


def confirm_table(name: str, number: int, result: Any) -> Table:
    """`confirm`: each fresh server's throughput and whether the recorded interval holds it."""
    table = Table(title=f"trial {number} of {name}: output_throughput (tok/s)")
    for col in ("run", "value", "inside the recorded interval"):
        table.add_column(col)
    for i, value in enumerate(result.values, 1):
        table.add_row(str(i), f"{value:.1f}", "yes" if result.inside(value) else "no")
    return table


def gpu_table(gpus: Any) -> Table:
    table = Table(title=f"NVIDIA GPUs: {gpus.describe()}")
    for col in ("index", "uuid", "name", "memory total MiB", "memory free MiB"):
        table.add_column(col)
    for gpu in gpus.inventory():
        table.add_row(str(gpu["index"]), str(gpu["uuid"]), str(gpu["name"]),
                      str(gpu["memory_total_mib"]), str(gpu["memory_free_mib"]))
    return table


def print_cpu_slots(cpu: Any) -> None:
    console.print(cpu.describe())
    for slot in cpu.inventory():
        console.print(f"  slot {slot['slot']}: cores {slot['cores']}")
