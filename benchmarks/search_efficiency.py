"""How many trials each search strategy needs on a measured grid (the measure of issue 8).

Every strategy runs as a study runs: autotune's own ``StudyRunner`` (the vLLM-default
configuration enqueued as trial 1, the claim loop with its reuse of measured configurations,
crash model and Pareto local search, scoring and SLO constraints from ``autotune.scoring``),
with a ``ReplayTrialRunner``: the replay engine behind the engine boundary answers each trial
with the grid's recorded metrics or failure; known-invalid configurations are rejected by the
study's own rules. The studies live in one SQLite file in a temporary folder (RAM-backed when
the host has /dev/shm).

The search space is the grid's own space (its meta line) restricted to the grid's values
(``Grid.search_space``: numeric values become ordered choices, searched on their scale).

Strategies: ``grid`` (every grid point once, in a seeded random order), ``random-plain``
(random search that runs repeated configurations again: the peers' baseline), ``random``,
``tpe``, ``gp``, ``nsga2`` (autotune's study policy with that ``search.sampler``), ``tpe-plain``
(TPE without reuse, crash model or local search) and ``auto`` (autotune's defaults).

Hypervolume: of the feasible trials' objective vectors (complete and every constraint met),
against a reference point that is, per objective, the SLO limit when the metric has one, 0 for
a maximised metric otherwise, else 1.1x the worst feasible value on the grid. "Trials to 99%"
counts the trials that count toward a study's budget (launched or rejected before launch; the
default trial included) until they reach 99% of the hypervolume of the whole grid; reused and
skipped suggestions cost no engine and are reported apart.

    .venv/bin/python benchmarks/search_efficiency.py --grid benchmarks/grids/quickstart-cpu.jsonl
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.engines.replay import Grid, GridRow  # noqa: E402
from autotune.scoring import (  # noqa: E402
    is_feasible,
    objective_values,
    violations,
)
from autotune.space import Space  # noqa: E402
from autotune.store.attrs import STATE_ATTR  # noqa: E402
from autotune.study import SilentReporter, StudyRunner  # noqa: E402
from autotune.trial import ReplayTrialRunner  # noqa: E402

STRATEGIES = ("grid", "random-plain", "random", "tpe-plain", "tpe", "gp", "nsga2", "auto")
LEVELS = (0.95, 0.99)
BUDGETS = (10, 20, 30)


# --- hypervolume -------------------------------------------------------------------------------


def hypervolume(
    points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]
) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact, any dimension;
    quadratic per dimension, meant for fronts of at most a few hundred points). Points not
    strictly better than the reference in every objective add nothing."""
    flip = [1.0 if d == "minimize" else -1.0 for d in directions]
    ref = [r * f for r, f in zip(reference, flip, strict=True)]
    pts = [[v * f for v, f in zip(p, flip, strict=True)] for p in points]
    pts = [p for p in pts if all(v < r for v, r in zip(p, ref, strict=True))]
    return _hv_min(pts, ref)


def _hv_min(points: list[list[float]], ref: list[float]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    # Slice along the last objective: between consecutive levels, the dominated region is the
    # (d-1)-dimensional volume of the points at or below the level.
    points = sorted(points, key=lambda p: p[-1])
    total = 0.0
    for i, point in enumerate(points):
        upper = points[i + 1][-1] if i + 1 < len(points) else ref[-1]
        height = upper - point[-1]
        if height > 0:
            total += height * _hv_min([p[:-1] for p in points[: i + 1]], ref[:-1])
    return total


def reference_point(space: Space, rows: Sequence[GridRow]) -> list[float]:
    ref: list[float] = []
    for objective in space.objectives:
        direction = objective.resolved_direction
        if objective.metric in space.slos:
            ref.append(float(space.slos[objective.metric]))
        elif direction == "maximize":
            ref.append(0.0)
        else:
            worst = max(
                (r.metrics[objective.metric] for r in rows if objective.metric in r.metrics),
                default=1.0,
            )
            ref.append(1.1 * worst)
    return ref


# --- the search space restricted to the grid ---------------------------------------------------


# --- one replayed study ------------------------------------------------------------------------


@dataclass
class Run:
    hv: list[float] = field(default_factory=list)  # hypervolume after each counted trial
    best: list[float] = field(default_factory=list)  # best feasible first objective so far
    reused: int = 0  # suggestions answered with an earlier result (no engine)
    skipped: int = 0  # suggestions the crash model rejected (no engine)


STRATEGY_SEARCH: dict[str, dict[str, Any]] = {
    # The peers' baseline: random search that measures a repeated configuration again.
    "random-plain": {"sampler": "random", "remeasure": True, "crash_learning": False},
    # TPE as peers use it: no reuse of measured configurations, no crash model, no local search.
    "tpe-plain": {
        "sampler": "tpe", "remeasure": True, "crash_learning": False, "local_search": False
    },
    "grid": {"sampler": "random"},  # every grid point is enqueued: the sampler is never asked
}


class _Tracker(SilentReporter):
    """A StudyReporter that follows the hypervolume and stops the study at the target."""

    def __init__(
        self, space: Space, reference: list[float], target: float, min_trials: int,
        stop: Callable[[], None],
    ) -> None:
        self.space, self.reference, self.target = space, reference, target
        self.min_trials, self.stop = min_trials, stop
        self.run = Run()
        self.feasible: list[list[float]] = []
        first = space.objectives[0]
        self.sign = 1.0 if first.resolved_direction == "maximize" else -1.0
        self.best = -math.inf

    def notice(self, text: str) -> None:
        pass  # e.g. "every configuration is measured": expected here, not news

    def trial_finished(self, number: int, outcome: Any) -> None:
        if outcome.state == "complete":
            constraints = violations(self.space, outcome.metrics)
            if is_feasible(constraints):
                values = objective_values(self.space, outcome.metrics)
                self.feasible.append(values)
                self.best = max(self.best, self.sign * values[0])
        run = self.run
        run.hv.append(hypervolume(self.feasible, self.space.directions, self.reference))
        run.best.append(self.sign * self.best if math.isfinite(self.best) else math.nan)
        if len(run.hv) >= self.min_trials and run.hv[-1] >= self.target:
            self.stop()


def strategy_space(kind: str, search_space: Space, seed: int) -> Space:
    update: dict[str, Any] = {"sampler": kind, "seed": seed}
    update.update(STRATEGY_SEARCH.get(kind, {}))
    search = search_space.search.model_copy(update=update)
    return search_space.model_copy(update={"search": search})


def replay_study(
    kind: str,
    seed: int,
    *,
    search_space: Space,
    grid: Grid,
    reference: list[float],
    full_hv: float,
    max_trials: int,
    min_trials: int,
    storage: str,
    log_dir: Path,
) -> Run:
    """One study, run by autotune's own StudyRunner: the replay engine answers each trial."""
    space = strategy_space(kind, search_space, seed)
    warm: list[dict[str, Any]] = []
    if kind == "grid":
        warm = [dict(r.params) for r in grid.points]
        random.Random(seed).shuffle(warm)
        max_trials = min(max_trials, len(warm) + 1)
    runner = ReplayTrialRunner(space, grid)
    tracker = _Tracker(
        space, reference, LEVELS[-1] * full_hv * (1 - 1e-12), min_trials, runner.stop_event.set
    )
    study = StudyRunner.create(
        space,
        name=f"{kind}-{seed}",
        storage=storage,
        launcher=runner.launcher,
        pool=runner.pool,
        log_dir=log_dir,
        reporter=tracker,
        warm_start=warm,
        runner=runner,
    )
    study.run(n_trials=max_trials)
    optuna_study = optuna.load_study(study_name=f"{kind}-{seed}", storage=storage)
    for t in optuna_study.get_trials(deepcopy=False):
        state = t.user_attrs.get(STATE_ATTR)
        tracker.run.reused += state == "reused"
        tracker.run.skipped += state == "skipped"
    return tracker.run


def trials_to(run: Run, level: float, full_hv: float) -> float:
    for i, value in enumerate(run.hv):
        if value >= level * full_hv * (1 - 1e-12):
            return float(i + 1)
    return math.inf


def best_within(run: Run, budget: int) -> float:
    if not run.best:
        return math.nan
    return run.best[min(budget, len(run.best)) - 1]


# --- the table ---------------------------------------------------------------------------------


def _fmt_trials(values: list[float], cap: int) -> tuple[str, str]:
    med = statistics.median(values)
    worst = max(values)

    def f(v: float) -> str:
        return f">{cap}" if math.isinf(v) else (f"{v:.1f}" if v != int(v) else f"{int(v)}")

    return f(med), f(worst)


def _fmt_best(values: list[float], default: float | None, maximize: bool) -> str:
    """Median/worst over seeds; a seed with no feasible trial yet counts as 0 (maximised)
    or infinity (minimised), and is shown as ``-``."""
    missing = 0.0 if maximize else math.inf
    filled = [v if math.isfinite(v) else missing for v in values]
    med = statistics.median(filled)
    worst = (min if maximize else max)(filled)

    def f(v: float) -> str:
        return f"{v:.0f}" if math.isfinite(v) and (v or not maximize) else "-"

    text = f"{f(med)}/{f(worst)}"
    if default and math.isfinite(med) and med:
        text += f" ({med / default:.2f}x)" if maximize else f" ({default / med:.2f}x)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--seeds-for",
        action="append",
        default=[],
        metavar="STRATEGY=N",
        help="another number of seeds for one strategy (e.g. gp=5: GP is slow)",
    )
    parser.add_argument(
        "--max-trials-for",
        action="append",
        default=[],
        metavar="STRATEGY=N",
        help="another trial cap for one strategy",
    )
    parser.add_argument(
        "--max-trials", type=int, default=None, help="per study (default: twice the grid's size)"
    )
    parser.add_argument("--progress", action="store_true", help="one line per study (stderr)")
    parser.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="KEY=LIMIT",
        help="override one of the space's SLOs (e.g. e2e_p95_ms=8000)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    grid = Grid.load(args.grid)
    space = grid.space()
    if args.slo:
        slos = dict(space.slos)
        for item in args.slo:
            key, _, limit = item.partition("=")
            slos[key] = float(limit)
        space = space.model_copy(update={"slos": slos})
    search_space = grid.search_space(space)
    runner = ReplayTrialRunner(space, grid)
    workdir = Path(tempfile.mkdtemp(prefix="autotune-search-", dir=_fast_tmp()))
    storage = f"sqlite:///{workdir / 'studies.db'}"

    rows = grid.rows
    scored = []
    for row in rows:
        outcome = runner.run(0, row.params, is_default=row.default)
        ok = outcome.state == "complete" and is_feasible(violations(space, outcome.metrics))
        scored.append((row, outcome, ok))
    feasible_rows = [row for row, _, ok in scored if ok]
    reference = reference_point(space, feasible_rows)
    full_points = [objective_values(space, row.metrics) for row in feasible_rows]
    full_hv = hypervolume(full_points, space.directions, reference)
    first = space.objectives[0]
    maximize = first.resolved_direction == "maximize"
    default_row = grid.default_row()
    default_ok = next((ok for row, _, ok in scored if row is default_row), False)
    default_value = default_row.metrics.get(first.metric) if default_row else None

    states = {s: sum(1 for r in rows if r.state == s) for s in ("complete", "failed", "rejected")}
    print(
        f"grid {args.grid}: {len(rows)} rows ({len(grid.points)} points + "
        f"{len(rows) - len(grid.points)} default), "
        + ", ".join(f"{n} {s}" for s, n in states.items())
        + f"; {len(feasible_rows)} SLO-feasible"
    )
    print(
        "objectives: "
        + ", ".join(f"{o.metric} ({o.resolved_direction})" for o in space.objectives)
        + f"; SLOs {dict(space.slos)}; reference point {reference}"
    )
    print(
        f"full-grid hypervolume {full_hv:.6g}; Pareto-optimal feasible rows: "
        f"{_pareto_size(full_points, space.directions)}"
    )
    if default_row is not None:
        state = "SLO-feasible" if default_ok else "NOT SLO-feasible"
        print(
            f"vLLM default: {first.metric} {default_value:.0f}, "
            + ", ".join(f"{k} {default_row.metrics.get(k, math.nan):.0f}" for k in space.slos)
            + f" ({state})"
        )
    twin = next(
        (r for r in grid.points if r.params == (default_row.params if default_row else None)), None
    )
    if twin is not None:
        print(
            f"  the same values as explicit flags (an ordinary grid point): {first.metric} "
            f"{twin.metrics.get(first.metric, math.nan):.0f}, "
            + ", ".join(f"{k} {twin.metrics.get(k, math.nan):.0f}" for k in space.slos)
            + f" ({twin.state})"
        )
    if full_hv > 0:
        shares = sorted(
            (hypervolume([p], space.directions, reference) / full_hv for p in full_points),
            reverse=True,
        )
        print(
            "share of the full hypervolume reached by the best single configurations: "
            + ", ".join(f"{v:.0%}" for v in shares[:5])
        )
    if full_hv <= 0:
        raise SystemExit(
            "no SLO-feasible configuration in the grid: nothing to search for "
            "(relax an SLO with --slo KEY=LIMIT)"
        )
    max_trials = args.max_trials or 2 * len(grid.points)
    min_trials = max(BUDGETS)
    print(
        f"{args.seeds} seeds per strategy; studies stop at 99% of "
        f"the hypervolume once past {min_trials} trials, or after {max_trials} trials\n"
    )

    header = (
        f"{'strategy':9s} {'95% med':>8s} {'95% worst':>9s} {'99% med':>8s} "
        f"{'99% worst':>9s} "
        + " ".join(f"{'best@' + str(b) + ' med/worst':>24s}" for b in BUDGETS)
        + f" {'s/study':>8s}"
    )
    print(header)
    print("-" * len(header))
    # Gains are shown against the default's throughput even when the default misses an SLO
    # (then any feasible configuration is an improvement the ratio understates).
    base = default_value or None
    seeds_for = {k: int(v) for k, _, v in (item.partition("=") for item in args.seeds_for)}
    cap_for = {k: int(v) for k, _, v in (item.partition("=") for item in args.max_trials_for)}
    for kind in args.strategies.split(","):
        seeds = seeds_for.get(kind, args.seeds)
        cap = cap_for.get(kind, max_trials)
        started = time.monotonic()
        runs = []
        for seed in range(seeds):
            t0 = time.monotonic()
            runs.append(
                replay_study(
                    kind,
                    seed,
                    search_space=search_space,
                    grid=grid,
                    reference=reference,
                    full_hv=full_hv,
                    max_trials=cap,
                    min_trials=min_trials,
                    storage=storage,
                    log_dir=workdir / "logs",
                )
            )
            if args.progress:
                print(
                    f"  {kind} seed {seed}: {len(runs[-1].hv)} trials, 99% at "
                    f"{trials_to(runs[-1], LEVELS[-1], full_hv)} "
                    f"({time.monotonic() - t0:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
        per = (time.monotonic() - started) / seeds
        cells: list[str] = []
        for level in LEVELS:
            cells += _fmt_trials([trials_to(r, level, full_hv) for r in runs], cap)
        bests = [_fmt_best([best_within(r, b) for r in runs], base, maximize) for b in BUDGETS]
        reused = statistics.median(r.reused for r in runs)
        skipped = statistics.median(r.skipped for r in runs)
        print(
            f"{kind:9s} {cells[0]:>8s} {cells[1]:>9s} {cells[2]:>8s} {cells[3]:>9s} "
            + " ".join(f"{b:>24s}" for b in bests)
            + f" {per:8.1f}"
            + (f"  ({seeds} seeds)" if seeds != args.seeds else "")
            + (f"  (cap {cap} trials)" if cap != max_trials else "")
            + f"  reused {reused:.0f}, skipped {skipped:.0f} (median)",
            flush=True,
        )
    if default_row is not None and not default_ok:
        print(
            f"\nthe vLLM default misses an SLO here: the ratios compare with its {first.metric} "
            "all the same"
        )


def _fast_tmp() -> str | None:
    """A RAM-backed folder for the replayed studies' database, when the host has one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _pareto_size(points: Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    from autotune.scoring import pareto_indices

    return len(pareto_indices(points, directions))


if __name__ == "__main__":
    main()
