"""The metric catalogue: every metric autotune records, once, with what each reader needs.

One ``Metric`` per name: which way is better, its unit, its short name in the terminal's
compact tables, its group on the dashboard, who records it (``kind``), whether a space file may
name it as an objective, and what it means. The space schema (known names, the ladder's and
quality's metrics), scoring, the CLI and the dashboard read it; docs/metrics.md holds the
table ``markdown_table()`` makes (a unit test keeps them equal). A leaf module: it imports
nothing from autotune, so the space schema and the runtime can both use it.

Names a study stored before a metric was renamed still read: ``canonical_name`` maps them
(``ALIASES``), and every look-up here goes through it.

A capacity the ladder could not bracket is a bound, and so are the figures taken at it:
``bound_mark`` (and ``gain_mark`` for a gain over the defaults) is the one rule every display
(terminal, export, dashboard) uses to say "≥" or "≤" beside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Direction = Literal["maximize", "minimize"]

LATENCIES = ("ttft", "tpot", "itl", "e2e")
PERCENTILES = (50, 90, 95, 99)
STATS = ("mean",) + tuple(f"p{p}" for p in PERCENTILES)
LATENCY_METRIC = re.compile(r"^(ttft|tpot|itl|e2e)_(mean|p50|p90|p95|p99)_ms$")

# Runs with multi-turn conversations only (bench.metrics): first turns apart from later ones,
# and per conversation the sum of its turns' E2E.
TURN_LATENCIES = ("first_turn_ttft", "later_turn_ttft", "first_turn_e2e", "later_turn_e2e",
                  "conversation_duration")

# Dashboard groups, in the order a trial's page lists them ("other": a name not catalogued).
GROUPS = ("latency", "throughput", "capacity", "engine", "resources", "quality", "cost", "other")

# Capacity at SLO: the highest request rate at which every SLO holds, by either strategy of
# bench.capacity (the load ladder's interpolation, or the ``capacity:`` section's bisection).
CAPACITY_METRIC = "capacity_rps"
COST_METRIC = "cost_per_1m_output_tokens_usd"
# 1 when every ladder level held the SLOs: capacity is the top level's rate, a lower bound.
LOWER_BOUND_FLAG = "capacity_is_lower_bound"

# Old name → the name recorded now. Studies stored under the old name read as before.
ALIASES = {"capacity_request_rate": CAPACITY_METRIC}


@dataclass(frozen=True)
class Metric:
    """One metric. ``unit`` is the dashboard formatter's (ms, s, tok/s, req/s, % (a
    percentage), fraction (a share, shown as %), pt, tokens, requests, prompts, B, MiB, GiB,
    $, or "" for a plain number); ``short`` the name the terminal's compact tables print;
    ``kind`` who records it; ``objective`` whether a space file may name it as an objective;
    ``wide`` whether ``study show --wide`` gives it a column when measured; ``family`` the row
    of docs/metrics.md that stands for a pattern of names (``ttft_<stat>_ms``); ``bound`` the
    bound it is when the capacity is a lower bound (``LOWER_BOUND_FLAG``): "≥" (the true
    figure is at least this), "≤" (at most this), or "" (exact all the same)."""

    name: str
    direction: Direction
    unit: str
    group: str
    kind: str
    description: str
    short: str = ""
    objective: bool = False
    wide: bool = False
    family: str = ""
    bound: str = ""

    @property
    def short_name(self) -> str:
        return self.short or self.name


_LATENCY_TEXT = {"ttft": "time to first token", "tpot": "time per output token after the first",
                 "itl": "inter-token latency", "e2e": "end-to-end latency (send → last token)"}
_TURN_TEXT = {"first_turn_ttft": "TTFT of first turns", "later_turn_ttft": "TTFT of later turns",
              "first_turn_e2e": "E2E of first turns", "later_turn_e2e": "E2E of later turns",
              "conversation_duration": "per conversation, the sum of its turns' E2E"}
_STAT_TEXT = "<stat>: mean, p50, p90, p95, p99"


def _latency_metrics() -> list[Metric]:
    out = []
    for lat in LATENCIES:
        for stat in STATS:
            name = f"{lat}_{stat}_ms"
            out.append(Metric(name, "minimize", "ms", "latency", "latency",
                              f"{_LATENCY_TEXT[lat]}, over the measured requests ({_STAT_TEXT})",
                              short=f"{lat} {stat} ms", objective=True,
                              family=f"{lat}_<stat>_ms"))
            for bound in ("low", "high"):
                out.append(Metric(f"{name}_ci_{bound}", "minimize", "ms", "latency",
                                  "statistic",
                                  f"the {bound} end of the within-run confidence interval "
                                  "of a latency percentile (ttft_p95_ms, e2e_p95_ms)",
                                  family=f"<latency>_<stat>_ms_ci_{bound}"))
    for lat in TURN_LATENCIES:
        for stat in STATS:
            out.append(Metric(f"{lat}_{stat}_ms", "minimize", "ms", "latency", "conversation",
                              f"{_TURN_TEXT[lat]} ({_STAT_TEXT}; runs with conversations)",
                              objective=True, family=f"{lat}_<stat>_ms"))
    return out


CATALOGUE: tuple[Metric, ...] = (
    *_latency_metrics(),
    # throughput: the load driver's summary, then the robust measurement's statistics
    Metric("output_throughput", "maximize", "tok/s", "throughput", "throughput",
       "output tokens per second over the measured run", short="tok/s", objective=True),
    Metric("request_throughput", "maximize", "req/s", "throughput", "throughput",
       "completed requests per second", short="req/s", objective=True),
    Metric("total_token_throughput", "maximize", "tok/s", "throughput", "throughput",
       "prompt and output tokens per second", short="total tok/s", objective=True),
    Metric("request_goodput", "maximize", "req/s", "throughput", "throughput",
       "requests per second that met every latency limit (vLLM's goodput)",
       short="goodput req/s", objective=True),
    Metric("goodput_fraction", "maximize", "fraction", "throughput", "throughput",
       "share of the sent requests that met every latency limit", short="goodput share",
       objective=True),
    Metric("slo_attainment_worst", "maximize", "fraction", "throughput", "mix",
       "a mix's smallest goodput_fraction over its workloads (objective in a mix only)"),
    Metric("slo_attainment_weighted", "maximize", "fraction", "throughput", "mix",
       "a mix's weighted mean goodput_fraction over its workloads (objective in a mix only)"),
    Metric("output_throughput_robust", "maximize", "tok/s", "throughput", "statistic",
       "robust score of the output throughput over a disturbed trial's runs"),
    Metric("output_throughput_ci_low", "maximize", "tok/s", "throughput", "statistic",
       "the low end of the output throughput's within-run confidence interval (its windows)"),
    Metric("output_throughput_ci_high", "maximize", "tok/s", "throughput", "statistic",
       "the high end of the output throughput's within-run confidence interval (its windows)"),
    Metric("output_throughput_cv", "minimize", "fraction", "throughput", "statistic",
       "spread (CV) of the output throughput between the run's time windows", short="tput CV",
       wide=True),
    Metric("completed", "minimize", "requests", "throughput", "count",
       "requests that succeeded", objective=True),
    Metric("failed", "minimize", "requests", "throughput", "count",
       "requests that failed", objective=True),
    Metric("error_rate", "minimize", "fraction", "throughput", "count",
       "failed / sent requests", short="errors", objective=True),
    Metric("duration_s", "minimize", "s", "throughput", "count",
       "seconds the measured run took", objective=True),
    Metric("total_input_tokens", "minimize", "tokens", "throughput", "count",
       "prompt tokens of the successful requests", objective=True),
    Metric("total_output_tokens", "minimize", "tokens", "throughput", "count",
       "output tokens of the successful requests", objective=True),
    Metric("conversations_completed", "minimize", "", "throughput", "conversation",
       "conversations whose turns all succeeded (runs with conversations)", objective=True),
    Metric("conversations_failed", "minimize", "", "throughput", "conversation",
       "conversations with a failed turn (runs with conversations)", objective=True),
    Metric("steady_window_s", "minimize", "s", "throughput", "statistic",
       "length of the run's steady window (ramp-up and drain excluded)"),
    Metric("steady_window_requests", "minimize", "requests", "throughput", "statistic",
       "requests sent inside the steady window: the measured ones"),
    Metric("steady_ramp_requests", "minimize", "requests", "throughput", "statistic",
       "requests sent during ramp-up (not measured)"),
    Metric("steady_ramp_s", "minimize", "s", "throughput", "statistic",
       "seconds from the first send to the window's start"),
    Metric("steady_drain_requests", "minimize", "requests", "throughput", "statistic",
       "requests sent to hold the load while the measured ones finished (not measured)"),
    Metric("steady_window_short", "minimize", "", "throughput", "statistic",
       "1 when the window closed before its floors (prompts or max_requests ran out)"),
    Metric("measurement_runs", "minimize", "", "throughput", "statistic",
       "runs the measurement made on this server (repeats of disturbed ones included)"),
    Metric("disturbed_runs", "minimize", "", "throughput", "statistic",
       "of those, runs found disturbed (windows disagree, errors, a busy host)"),
    # capacity at SLO, by either strategy; then the ladder's curve; then the bisection's
    Metric(CAPACITY_METRIC, "maximize", "req/s", "capacity", "capacity",
       "capacity at SLO: the highest request rate at which every SLO holds (the load "
       "ladder's interpolation, or the `capacity:` section's bisection)",
       short="capacity req/s", objective=True, wide=True, bound="≥"),
    Metric(LOWER_BOUND_FLAG, "minimize", "", "capacity", "ladder",
       "1 when every ladder level held: capacity_rps is the top level's rate",
       objective=True),
    Metric("throughput_per_device_at_capacity", "maximize", "tok/s", "capacity", "ladder",
       "output tokens/s per device at capacity (interpolated)", objective=True, bound="≥"),
    Metric("interactivity_at_capacity", "maximize", "tok/s", "capacity", "ladder",
       "per-user output tokens/s at capacity: 1000 / mean TPOT (ms)", objective=True,
       bound="≤"),
    Metric("cost_per_1m_at_capacity", "minimize", "$", "capacity", "ladder",
       "dollars per million output tokens at capacity (every device paid)", objective=True,
       bound="≤"),
    Metric("ladder_levels_run", "minimize", "", "capacity", "ladder",
       "load levels the ladder ran", objective=True),
    Metric("ladder_levels_extended", "minimize", "", "capacity", "ladder",
       "of those, levels run above the listed ones (every listed level held)",
       objective=True),
    Metric("ladder_stopped_early", "minimize", "", "capacity", "ladder",
       "1 when the ladder stopped before its last level", objective=True),
    Metric("capacity_output_throughput", "maximize", "tok/s", "capacity", "bisection",
       "output tokens/s measured at the bisection's capacity", objective=True),
    Metric("capacity_resolution_rps", "minimize", "req/s", "capacity", "bisection",
       "width of the bisection's final bracket: the true capacity is within this"),
    Metric("capacity_load_points", "minimize", "", "capacity", "bisection",
       "load points the bisection measured"),
    # the engine's /metrics (bench.engine_metrics) and the memory fit's figures
    Metric("preemptions", "minimize", "", "engine", "engine",
       "requests preempted (the KV cache ran out)", short="preempt", wide=True),
    Metric("kv_cache_usage_peak_pct", "minimize", "%", "engine", "engine",
       "highest KV-cache usage seen in any scrape", short="KV peak %", wide=True),
    Metric("prefix_cache_hit_rate", "maximize", "fraction", "engine", "engine",
       "cached / queried prompt tokens", short="prefix hit", wide=True),
    Metric("spec_decode_acceptance_rate", "maximize", "fraction", "engine", "engine",
       "accepted / proposed draft tokens", short="spec accept", wide=True),
    Metric("spec_decode_mean_acceptance_length", "maximize", "", "engine", "engine",
       "1 + accepted tokens per draft (vLLM's definition)"),
    Metric("queue_time_mean_ms", "minimize", "ms", "engine", "engine",
       "mean time requests waited before scheduling", short="queue ms", wide=True),
    Metric("requests_waiting_peak", "minimize", "requests", "engine", "engine",
       "most requests waiting in any scrape"),
    Metric("requests_running_peak", "maximize", "requests", "engine", "engine",
       "most requests running in any scrape"),
    Metric("kv_cache_tokens", "maximize", "tokens", "engine", "memory_fit",
       "KV-cache capacity the engine reported, in tokens", short="KV tokens", wide=True),
    Metric("kv_cache_tokens_estimated", "maximize", "tokens", "engine", "memory_fit",
       "KV-cache capacity the memory fit predicted before launch"),
    Metric("memory_fit_kv_error", "minimize", "fraction", "engine", "memory_fit",
       "relative error of that prediction", short="KV estimate err", wide=True),
    Metric("model_weights_gib", "minimize", "GiB", "engine", "memory_fit",
       "model weights the engine loaded"),
    Metric("model_weights_gib_estimated", "minimize", "GiB", "engine", "memory_fit",
       "model weights the memory fit predicted"),
    # sampled around the benchmark (devices.sampling), the host's load
    Metric("engine_rss_peak_mib", "minimize", "MiB", "resources", "resource",
       "peak resident memory of the engine's processes", short="engine RSS MiB",
       objective=True, wide=True),
    Metric("gpu_mem_peak_mib", "minimize", "MiB", "resources", "resource",
       "peak GPU memory used on the trial's devices", short="GPU mem MiB", objective=True,
       wide=True),
    Metric("gpu_util_mean_pct", "maximize", "%", "resources", "resource",
       "mean GPU utilisation of the trial's devices", short="GPU util %", objective=True,
       wide=True),
    Metric("gpu_util_peak_pct", "maximize", "%", "resources", "resource",
       "peak GPU utilisation of the trial's devices", objective=True),
    Metric("cpu_util_mean_pct", "maximize", "%", "resources", "resource",
       "mean CPU utilisation of the trial's cores", short="CPU util %", objective=True,
       wide=True),
    Metric("cpu_util_peak_pct", "maximize", "%", "resources", "resource",
       "peak CPU utilisation of the trial's cores", objective=True),
    Metric("parallel_trials", "maximize", "", "resources", "resource",
       "trials that ran at once on this host", short="ran at once", objective=True,
       wide=True),
    Metric("host_foreign_cpu_pct", "minimize", "%", "resources", "host",
       "CPU used by processes that are not the trial's during the chosen run"),
    Metric("host_steal_pct", "minimize", "%", "resources", "host",
       "CPU time the hypervisor stole during the chosen run"),
    # the quality probe (docs/quality.md)
    Metric("quality_accuracy", "maximize", "fraction", "quality", "quality",
       "labelled eval score, 0..1", short="accuracy", objective=True),
    Metric("quality_accuracy_delta", "maximize", "pt", "quality", "quality",
       "accuracy − the reference trial's accuracy", short="Δ accuracy", objective=True),
    Metric("quality_seq_match", "maximize", "fraction", "quality", "quality",
       "generated token sequences identical to the reference", short="same output",
       objective=True),
    Metric("quality_top1_agreement", "maximize", "fraction", "quality", "quality",
       "teacher-forced argmax equal to the reference's", short="top-1 agree",
       objective=True),
    Metric("quality_logprob_drift", "minimize", "", "quality", "quality",
       "mean |Δ logprob| of the reference tokens", short="logprob drift", objective=True),
    Metric("quality_prompts", "minimize", "prompts", "quality", "quality_info",
       "prompts the probe sent"),
    Metric("quality_labelled", "minimize", "prompts", "quality", "quality_info",
       "of those, prompts with an answer to grade"),
    Metric("quality_s", "minimize", "s", "quality", "quality_info",
       "seconds the probe took"),
    Metric(COST_METRIC, "minimize", "$", "cost", "cost",
       "dollars per million output tokens at the measured rate (`cost.device_hour_usd`)",
       short="$/1M tok", objective=True, wide=True),
)

BY_NAME: Mapping[str, Metric] = {m.name: m for m in CATALOGUE}
_RANK = {m.name: i for i, m in enumerate(CATALOGUE)}


def canonical_name(name: str) -> str:
    """The name recorded now for ``name`` (itself unless it is an old one)."""
    return ALIASES.get(name, name)


def lookup(name: str) -> Metric | None:
    return BY_NAME.get(canonical_name(name))


def of_kind(*kinds: str) -> list[Metric]:
    return [m for m in CATALOGUE if m.kind in kinds]


def directions(metrics: Iterable[Metric]) -> dict[str, str]:
    return {m.name: m.direction for m in metrics}


def known_metric_names() -> list[str]:
    """The metrics a space file may name as objectives (a mix adds its own, ``MIX_METRICS``)."""
    return [m.name for m in CATALOGUE if m.objective]


def natural_direction(metric: str) -> str:
    """Which way is better for ``metric`` ('maximize' or 'minimize'; unknown: minimize)."""
    found = lookup(metric)
    return found.direction if found is not None else "minimize"


def short_name(name: str) -> str:
    """The terminal's short name (``tok/s``, ``e2e p95 ms``); an unknown name as it is."""
    found = lookup(name)
    return found.short_name if found is not None else name


def rank(name: str) -> int:
    """Position in the catalogue (its group's display order); unknown names after all."""
    return _RANK.get(canonical_name(name), len(_RANK))


def wide_columns() -> list[str]:
    """The metrics ``study show --wide`` gives a column of their own when measured, each
    followed by its old names (a study stored before a rename shows its column too)."""
    return [n for m in CATALOGUE if m.wide
            for n in (m.name, *(old for old, new in ALIASES.items() if new == m.name))]


def bound_mark(metric: str, metrics: Mapping[str, float]) -> str:
    """"≥" or "≤" when the trial's ``metric`` (of its ``metrics``) is a bound, not an exact
    figure, else "". A bound is what a capacity the ladder could not bracket gives: every level
    held (``LOWER_BOUND_FLAG`` is 1), so the capacity is at least the top level's rate and the
    figures taken there are bounds too, each in its catalogued ``bound`` direction (throughput
    rises with the rate, so ≥; cost per token and per-user tokens/s fall, so ≤)."""
    found = lookup(metric)
    flag = metrics.get(LOWER_BOUND_FLAG)
    if found is None or not found.bound or not (isinstance(flag, int | float) and flag > 0):
        return ""
    return found.bound


def gain_mark(metric: str, metrics: Mapping[str, float], default: Mapping[str, float]) -> str:
    """The mark of a gain over the defaults (times better) on ``metric``: "≥" when the true
    gain is at least the one shown, "≤" at most, "?" when the trial and the defaults are both
    bounds the same way (the ratio of two lower bounds bounds nothing), else ""."""
    found = lookup(metric)
    if found is None or not found.bound:
        return ""
    # A trial's bound towards better (≥ on a metric to maximize) makes its gain a lower bound;
    # the defaults' bound towards better makes it an upper bound.
    better = "≥" if found.direction == "maximize" else "≤"
    mine = bound_mark(metric, metrics)
    mine = mine and ("≥" if mine == better else "≤")
    theirs = bound_mark(metric, default)
    theirs = theirs and ("≤" if theirs == better else "≥")
    if mine and theirs and mine != theirs:
        return "?"
    return mine or theirs


def markdown_table() -> str:
    """The table of docs/metrics.md: one row per metric, or per family of pattern names."""
    lines = ["| metric | better | unit | short | group | objective | meaning |",
             "|---|---|---|---|---|---|---|"]
    seen: set[str] = set()
    for m in CATALOGUE:
        row = m.family or m.name
        if row in seen:
            continue
        seen.add(row)
        short = "" if m.family or not m.short else f"`{m.short}`"
        if m.family and m.short:
            short = "`" + m.family.replace("_<stat>_ms", " <stat> ms") + "`"
        meaning = m.description.replace("|", "\\|")  # a bar would end the cell
        lines.append(f"| `{row}` | {m.direction[:3]} | {m.unit or '—'} | {short or '—'} | "
                     f"{m.group} | {'yes' if m.objective else '—'} | {meaning} |")
    old = ", ".join(f"`{a}` (now `{n}`)" for a, n in ALIASES.items())
    bounds = {mark: ", ".join(f"`{m.name}`" for m in CATALOGUE if m.bound == mark)
              for mark in ("≥", "≤")}
    return "\n".join(lines) + (
        f"\n\nOld names read as the new ones: {old}.\n\n"
        f"Bounds: when every load level held the SLOs (`{LOWER_BOUND_FLAG}` 1), the ladder "
        "never found the edge: the capacity is the top level's rate, and the figures taken "
        "there are bounds, not exact. `study show`, the trial view, the front, the export's "
        "header and the dashboard write them with a mark (`bound_mark`): **≥** (the true "
        f"figure is at least this) for {bounds['≥']}; **≤** (at most this: cost per token "
        f"and per-user tokens/s fall as the rate rises) for {bounds['≤']}. A gain over the "
        "defaults on such a metric is marked the same way (`gain_mark`): ≥ or ≤, or ? when "
        "the trial and the defaults are both bounds and their ratio bounds nothing.\n")


if __name__ == "__main__":
    print(markdown_table(), end="")
