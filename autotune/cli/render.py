"""What the commands print: rich tables, progress and notes, apart from the commands' logic."""

from __future__ import annotations

import textwrap
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from autotune import short_names
from autotune.cli.common import console, err_console
from autotune.metrics import bound_mark, gain_mark, short_name, wide_columns


def short_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, pad_edge=False)


def _widest(items: Any, cap: int = 24) -> int:
    """The widest whole item (a ``k=v`` or a figure), so that cells wrap between items."""
    return min(max((len(i) for i in items), default=1), cap)


def _items(report: Any) -> list[str]:
    return [short_names.assignment(k, v) for t in report.trials
            for k, v in report.changed(t).items()]


def changed_cell(report: Any, t: Any) -> str:
    """The parameters that differ from the defaults, as short ``k=v`` items."""
    if t.is_default:
        return "defaults"
    changed = report.changed(t)
    return " ".join(escape(short_names.assignment(k, v)) for k, v in changed.items()) or "—"


def figure(t: Any, metric: str, spec: str = ".4g") -> str:
    """The trial's ``metric`` as ``spec`` formats it, after "≥" or "≤" when it is a bound
    (``autotune.metrics.bound_mark``); "—" when not measured."""
    if metric not in t.metrics:
        return "—"
    return f"{bound_mark(metric, t.metrics)}{t.metrics[metric]:{spec}}"


def gain_text(report: Any, t: Any, metric: str, gain: float) -> str:
    """``×1.20``, after "≥", "≤" or "?" when the trial or the defaults are a bound there."""
    default = report.trial(report.default_number) if report.default_number is not None else None
    mark = gain_mark(metric, t.metrics, default.metrics if default is not None else {})
    return f"{mark}×{gain:.2f}"


def any_bound(report: Any, rows: list[Any], metrics: list[str]) -> bool:
    return any(bound_mark(m, t.metrics) for t in rows for m in metrics)


# Printed under a table that shows a bound.
BOUND_NOTE = ("≥/≤: a bound, not an exact figure (every load level held the SLOs, so the ladder "
              "never found the edge: capacity is at least the top level's rate)")


def objective_cell(report: Any, t: Any, metric: str, two_lines: bool = False) -> str:
    """The value, then its gain over the defaults (``×1.20``) beside it or under it; "≥" or
    "≤" before a bound."""
    if metric not in t.metrics:
        return "—"
    text = figure(t, metric)
    g = None if t.is_default else report.gains(t).get(metric)
    if g is None:
        return text
    return f"{text}{chr(10) if two_lines else ' '}{gain_text(report, t, metric, g)}"


def result_cell(report: Any, t: Any) -> str:
    if t.state == "complete":
        if t.number in report.pareto_front:
            return "[green]front[/]"
        return "feasible" if t.feasible else "[yellow]infeasible[/]"
    if t.state == "running":
        return ""
    return f"[red]{escape(short_names.failure(t.failure_kind))}[/]"


def slo_cell(report: Any, t: Any) -> str:
    missed = report.missed(t)
    if missed is None:
        return "—"
    if not missed:
        return "met"
    # One missed constraint a line, without the unit: "✗ ttft p95".
    return "\n".join(f"[yellow]✗[/] {escape(short_name(m).removesuffix(' ms'))}"
                     for m in missed)


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "—"


# The named columns of `study show --columns` (objectives: one column per objective).
COLUMNS = ("trial", "state", "result", "params", "objectives", "slos", "startup", "bench",
           "measured", "failure")
COMPACT = ("trial", "state", "result", "params", "objectives", "slos")
_HEADERS = {"trial": "#", "state": "state", "result": "result",
            "params": "changed from defaults", "slos": "SLOs", "startup": "startup s",
            "bench": "bench s", "measured": "measured", "failure": "failure"}


def check_columns(report: Any, columns: list[str]) -> list[str]:
    """``--columns``: named columns or metric names; ValueError naming what is unknown."""
    metrics = {k for t in report.trials for k in t.metrics}
    unknown = [c for c in columns if c not in COLUMNS and c not in metrics]
    if unknown:
        raise ValueError(
            f"unknown column(s) {', '.join(unknown)}: use {', '.join(COLUMNS)} or a metric "
            f"name this study measured (study show NAME --format csv lists them)"
        )
    return columns


class CompactTable:
    """The compact trials table, laid out for the width it is printed at: only the parameters
    wrap (between whole ``k=v`` items); every other cell is short and kept whole, the gains
    going under their values when one line would not leave the parameters room. The title
    (console markup) is a paragraph of its own: as the table's title it would be cut at the
    table's width."""

    def __init__(self, report: Any, title: str, columns: tuple[str, ...] | list[str],
                 rows: list[Any] | None = None) -> None:
        self.report, self.title, self.columns, self.rows = report, title, columns, rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text.from_markup(self.title)
        yield trials_table(self.report, self.columns, options.max_width, self.rows)


def trials_table(report: Any, columns: tuple[str, ...] | list[str] = COMPACT,
                 width: int = 80, rows: list[Any] | None = None) -> Table:
    """The compact trials table at ``width`` columns (see ``CompactTable``)."""
    if rows is None:
        rows = [t for t in report.trials if t.state != "reused"]  # reused: counted below
    for two_lines in (False, True):
        cols = _compact_columns(report, columns, two_lines)
        cells = [[cell(t) for _, cell, _ in cols] for t in rows]
        fixed = sum(max([_cell_width(c[i]) for c in cells] + [_word(h, two_lines)])
                    for i, (h, _, _) in enumerate(cols) if h != _HEADERS["params"])
        room = width - fixed - 2 * (len(cols) - 1)
        # Inline gains only while the parameters keep room for two items a line.
        if room > 2 * _widest(_items(report)) or "objectives" not in columns:
            break
    table = _table()
    table.show_edge = False
    table.collapse_padding = True
    for i, (header, _, right) in enumerate(cols):
        wraps = header == _HEADERS["params"]
        widest = max([_cell_width(c[i]) for c in cells] + [_word(header, two_lines)])
        table.add_column(header if wraps else textwrap.fill(header, widest),
                         justify="right" if right else "left", overflow="fold",
                         no_wrap=not wraps,
                         min_width=_widest(_items(report)) if wraps else None)
    for row in cells:
        table.add_row(*row)
    return table


def _cell_width(cell: str) -> int:
    return max(Text.from_markup(line).cell_len for line in cell.split("\n"))


def _word(header: str, tight: bool) -> int:
    """A header's width: on one line up to 12 characters (unless ``tight``), else its longest
    word."""
    return len(header) if len(header) <= 12 and not tight else max(map(len, header.split()))


def _compact_columns(report: Any, columns: tuple[str, ...] | list[str], two_lines: bool,
                     ) -> list[tuple[str, Any, bool]]:
    """(header, cell of a trial, right-aligned) per column."""
    out: list[tuple[str, Any, bool]] = []
    for col in columns:
        if col == "objectives":
            for metric, direction in zip(report.metrics, report.directions, strict=True):
                arrow = "↑" if direction == "maximize" else "↓"
                out.append((f"{short_name(metric)} {arrow}",
                            lambda t, m=metric: objective_cell(report, t, m, two_lines), True))
        elif col in _HEADERS:
            out.append((_HEADERS[col], lambda t, cell=_CELLS[col]: cell(report, t),
                        col in ("trial", "startup", "bench")))
        else:
            out.append((escape(short_name(col)), lambda t, m=col: figure(t, m), True))
    return out


def _trial(report: Any, t: Any) -> str:
    return str(t.number) + ("*" if t.number in report.pareto_front else "")


def _failure(report: Any, t: Any) -> str:
    kind = f"{t.failure_kind}: " if t.failure_kind else ""
    return escape(kind + (t.failure_reason or ""))


_CELLS: dict[str, Any] = {
    "trial": _trial,
    "state": lambda report, t: t.state,
    "result": result_cell,
    "params": changed_cell,
    "slos": slo_cell,
    "startup": lambda report, t: _seconds(t.startup_s),
    "bench": lambda report, t: _seconds(t.benchmark_s),
    "measured": lambda report, t: measured(t),
    "failure": _failure,
}


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
    console.print(f"×N: times better than the vLLM defaults; one trial in full: autotune study "
                  f"show {escape(report.name)} --trial N", highlight=False)
    front = [report.trial(n) for n in report.pareto_front]
    if any_bound(report, front, report.metrics):
        console.print(BOUND_NOTE, highlight=False)


def pareto_table(report: Any) -> CompactTable:
    """The feasible Pareto front, compact: trial, changed parameters, objectives with gains."""
    return CompactTable(report, f"Pareto front of {escape(report.name)}: feasible, every SLO "
                        "met", ("trial", "params", "objectives"),
                        [report.trial(n) for n in report.pareto_front])


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


def print_study(report: Any, name: str, *, wide: bool = False,
                columns: list[str] | None = None) -> None:
    """`study show` as a table: compact by default (``columns`` to choose), every column with
    ``wide``; then what the columns mean, the failures, the Pareto front."""
    title = f"study [bold]{escape(name)}[/]: {escape(report.model)} on {escape(report.hardware)}"
    if wide:
        console.print(title, highlight=False)
        console.print(wide_table(report))
        console.print("* = on the feasible Pareto front; measured: clean, clean after repeats "
                      "(a disturbed run was measured again on the same server), or DISTURBED "
                      "(no clean run: treat its figures with care)")
        if any_bound(report, report.trials, [*report.metrics, *wide_columns()]):
            console.print(BOUND_NOTE, highlight=False)
    else:
        shown = columns or list(COMPACT)
        console.print(CompactTable(report, title, shown))
        console.print(
            "* on the feasible Pareto front · ✗ a missed SLO · ×N: times better than the vLLM "
            f"defaults (trial {report.default_number}) · more: --wide or --columns (see "
            "--help) · one trial in full: --trial N", highlight=False)
        named = [*(report.metrics if "objectives" in shown else ()), *shown]
        if any_bound(report, report.trials, named):
            console.print(BOUND_NOTE, highlight=False)
        if "failure" not in shown:
            for t in report.trials:
                if t.failure_reason and t.state != "reused":
                    # a complete trial's reason is a note on its measurement, not a failure
                    kind = (short_names.failure(t.failure_kind)
                            if t.failure_kind or t.state != "complete" else "note")
                    console.print(f"  trial {t.number} {escape(kind)}: "
                                  f"{escape(t.failure_reason)}", highlight=False)
        if report.quality_columns:
            from autotune.space import format_quality

            alike: dict[str, list[int]] = {}  # trials with the same figures share a line
            for t in report.trials:
                measured = [f"{short_name(m)} {format_quality(m, t.metrics.get(m))}"
                            for m in report.quality_columns if m in t.metrics]
                if measured:
                    alike.setdefault(" · ".join(measured), []).append(t.number)
            for text, numbers in alike.items():
                listed = ", ".join(map(str, numbers))
                which = f"trials {listed}" if len(numbers) > 1 else f"trial {listed}"
                console.print(f"  {which} quality: {text}", highlight=False)
    no_engine = {s: sum(1 for t in report.trials if t.state == s) for s in ("reused", "skipped")}
    if any(no_engine.values()):
        console.print(
            f"suggestions answered without an engine: {no_engine['reused']} reused (the same "
            f"configuration was measured already; not listed above, see --format json), "
            f"{no_engine['skipped']} skipped (the crash model predicted a failure; the reason is "
            "given with the trial) — docs/search.md"
        )
    if report.quality_columns and report.default_number is not None:
        console.print(
            f"quality: accuracy on the study's eval set; agreement with trial "
            f"{report.default_number} (vLLM defaults, the reference) — docs/quality.md"
        )
    if wide and report.pareto_front:
        console.print(pareto_table(report))
    elif report.pareto_front:
        console.print("Pareto front (feasible, every SLO met): trial(s) "
                      + ", ".join(map(str, report.pareto_front)), highlight=False)
    else:
        console.print("[yellow]no feasible trial yet: no Pareto front[/]")


def wide_table(report: Any) -> Table:
    """`study show --wide`: every column, parameters in full, one per line."""
    from autotune.space import format_quality

    table = Table()
    extra = [m for m in wide_columns()
             if m not in report.metrics and any(m in t.metrics for t in report.trials)]
    quality = report.quality_columns
    for col in (
        "trial",
        "state",
        "feasible",
        "parameters",
        *report.metrics,
        *(short_name(m) for m in quality),
        *(short_name(m) for m in extra),
        "startup s",
        "bench s",
        "measured",
        "failure",
    ):
        table.add_column(col, overflow="fold")
    for t in report.trials:
        if t.state == "reused":
            continue  # counted below; listed by --format json/csv
        table.add_row(
            _trial(report, t),
            t.state,
            "yes" if t.feasible else "no",
            "vLLM defaults" if t.is_default
            else "\n".join(escape(f"{k}={v}") for k, v in t.params.items()),
            *(figure(t, m) for m in report.metrics),
            *(format_quality(m, t.metrics.get(m)) for m in quality),
            *(figure(t, m, ".3g") for m in extra),
            _seconds(t.startup_s),
            _seconds(t.benchmark_s),
            measured(t),
            _failure(report, t),
        )
    return table


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
    """`confirm`: each fresh server's headline figures, each marked inside or outside the
    study's fresh-server interval, with the interval and the coverage below."""
    metrics = list(result.intervals) or ["output_throughput"]
    table = Table(title=f"trial {number} of {name} on fresh servers")
    table.add_column("run")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for i, run in enumerate(result.runs, 1):
        table.add_row(str(i), *(
            f"{run[m]:.1f} " + ("in" if result.inside(run[m], m) else "[yellow]OUT[/]")
            if m in run else "—" for m in metrics))
    table.add_row("recorded", *(f"{result.recorded[m]:.1f}" if m in result.recorded else "—"
                                for m in metrics), end_section=True)
    table.add_row("interval", *(result.intervals[m].text() if m in result.intervals else "—"
                                for m in metrics))
    table.add_row("inside", *("{} of {}".format(*result.coverage(m)) for m in metrics))
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
