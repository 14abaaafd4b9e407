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
(TPE without reuse, crash model, screen or local search), ``auto`` (autotune's defaults) and
``auto-noscreen`` (the defaults without the screen around the vLLM defaults).

Hypervolume: of the feasible trials' objective vectors (complete and every constraint met),
against a reference point that is, per objective, the SLO limit when the metric has one, 0 for
a maximised metric otherwise, else 1.1x the worst feasible value on the grid. "Trials to 99%"
counts the trials that count toward a study's budget (launched or rejected before launch; the
default trial included) until they reach 99% of the hypervolume of the whole grid; reused and
skipped suggestions cost no engine and are reported apart.

Engine-seconds: per counted trial, what it held an engine for as the grid recorded it
(``timings["engine_s"]`` of the replayed trial: start, measurements, the ladder levels that ran,
teardown; docs/grid-format.md), summed until the study first holds 95% / 99%. On a ladder grid
(format v2) every strategy runs with the space's ``ladder.early_stop`` off and on
(``--early-stop``), and a last table puts trials and engine-seconds of both side by side.

    .venv/bin/python benchmarks/search_efficiency.py --grid benchmarks/grids/quickstart-cpu.jsonl

Several grids in one run: ``--grid`` repeated, or ``--ladder-grids benchmarks/grids`` (every
ladder grid there); with ``auto`` and ``random`` among the strategies a last table gives issue
22's verdict per grid (auto within half of random's median trials and engine-seconds to 95% and
99%, its worst seed no worse than random's).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autotune.replay import ENGINE_S, Grid, GridError, ReplayTrialRunner
from autotune.scoring import (
    is_feasible,
    objective_values,
    violations,
)
from autotune.space.ladder import LadderSpec
from autotune.space.model import Space
from autotune.store.attrs import DEFAULT_ATTR, STATE_ATTR
from autotune.study import SilentReporter, StudyRunner

STRATEGIES = ("grid", "random-plain", "random", "tpe-plain", "tpe", "gp", "nsga2", "auto",
              "auto-noscreen")
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


def reference_point(space: Space, rows: Sequence[Mapping[str, float]]) -> list[float]:
    """Per objective: the SLO limit when the metric has one, 0 for a maximised metric, else
    1.1x the worst value over ``rows`` (the feasible trials' metrics)."""
    ref: list[float] = []
    for objective in space.objectives:
        direction = objective.resolved_direction
        if objective.metric in space.slos:
            ref.append(float(space.slos[objective.metric]))
        elif direction == "maximize":
            ref.append(0.0)
        else:
            worst = max(
                (r[objective.metric] for r in rows if objective.metric in r),
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
    engine_s: list[float] = field(default_factory=list)  # engine-seconds spent, cumulative
    reused: int = 0  # suggestions answered with an earlier result (no engine)
    # the counted trials' params, in order (None: the engine-default trial, no flag passed)
    path: list[dict[str, Any] | None] = field(default_factory=list)
    skipped: int = 0  # suggestions the crash model rejected (no engine)


STRATEGY_SEARCH: dict[str, dict[str, Any]] = {
    # The peers' baseline: random search that measures a repeated configuration again.
    "random-plain": {"sampler": "random", "remeasure": True, "crash_learning": False},
    # TPE as peers use it: no reuse of measured configurations, no crash model, no local search.
    "tpe-plain": {
        "sampler": "tpe", "remeasure": True, "crash_learning": False, "local_search": False,
        "screen": False,
    },
    # autotune's defaults without the screen around the defaults (the model from trial 2).
    "auto-noscreen": {"sampler": "auto", "screen": False},
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
        spent = float(outcome.timings.get(ENGINE_S, 0.0))
        run.engine_s.append((run.engine_s[-1] if run.engine_s else 0.0) + spent)
        run.hv.append(hypervolume(self.feasible, self.space.directions, self.reference))
        run.best.append(self.sign * self.best if math.isfinite(self.best) else math.nan)
        if len(run.hv) >= self.min_trials and run.hv[-1] >= self.target:
            self.stop()


def strategy_space(kind: str, search_space: Space, seed: int) -> Space:
    # The search alone: no confirm stage (a replayed grid has one figure per configuration,
    # and every trial of the budget goes to the search being compared).
    stage = search_space.search.confirm_stage.model_copy(update={"enabled": False})
    update: dict[str, Any] = {"sampler": kind, "seed": seed, "confirm_stage": stage}
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
    name: str | None = None,
) -> Run:
    """One study, run by autotune's own StudyRunner: the replay engine answers each trial
    (with its ladder's early stop as ``search_space`` says)."""
    name = name or f"{kind}-{seed}"
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
        name=name,
        storage=storage,
        launcher=runner.launcher,
        pool=runner.pool,
        log_dir=log_dir,
        reporter=tracker,
        warm_start=warm,
        runner=runner,
    )
    study.run(n_trials=max_trials)
    optuna_study = optuna.load_study(study_name=name, storage=storage)
    for t in optuna_study.get_trials(deepcopy=False):
        state = t.user_attrs.get(STATE_ATTR)
        tracker.run.reused += state == "reused"
        tracker.run.skipped += state == "skipped"
        if state not in ("reused", "skipped"):
            tracker.run.path.append(None if t.user_attrs.get(DEFAULT_ATTR) else dict(t.params))
    return tracker.run


def trace(run: Run, space: Space, full_hv: float, title: str) -> str:
    """One study trial by trial: where its hypervolume stood and what each trial changed."""
    defaults = space.default_params()
    lines = [f"trace of {title}:"]
    for number, (params, hv) in enumerate(zip(run.path, run.hv, strict=False), start=1):
        changed = "(the engine-default trial: no flag)" if params is None else " ".join(
            f"{name}={value}" for name, value in params.items() if defaults.get(name) != value
        ) or "(the defaults' nominal values as flags)"
        lines.append(f"  {number:3d} {hv / full_hv:6.1%}  {changed}")
    return "\n".join(lines)


def trials_to(run: Run, level: float, full_hv: float) -> float:
    for i, value in enumerate(run.hv):
        if value >= level * full_hv * (1 - 1e-12):
            return float(i + 1)
    return math.inf


def engine_seconds_to(run: Run, level: float, full_hv: float) -> float:
    """Engine-seconds the study had spent when it first held ``level`` of the hypervolume."""
    reached = trials_to(run, level, full_hv)
    return run.engine_s[int(reached) - 1] if math.isfinite(reached) else math.inf


def with_early_stop(space: Space, on: bool) -> Space:
    """``space`` with its ladder's early stop on or off (a space without a ladder as is)."""
    if space.ladder is None:
        return space
    return space.model_copy(update={"ladder": space.ladder.model_copy(update={"early_stop": on})})


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
        if not (math.isfinite(v) and (v or not maximize)):
            return "-"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"

    text = f"{f(med)}/{f(worst)}"
    if default and math.isfinite(med) and med:
        text += f" ({med / default:.2f}x)" if maximize else f" ({default / med:.2f}x)"
    return text


def _pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (linear between ranks; infinite when a neighbour is)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = ordered[math.floor(pos)], ordered[math.ceil(pos)]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return hi
    return lo + (pos - math.floor(pos)) * (hi - lo)


def _fmt_spread(values: list[float], never: str) -> str:
    """``median [q25-q75]`` over seeds; ``never`` where a seed did not get there."""

    def f(v: float) -> str:
        return never if math.isinf(v) else f"{v:.0f}" if abs(v) >= 100 or v == int(v) \
            else f"{v:.1f}"

    return f"{f(_pct(values, 0.5))} [{f(_pct(values, 0.25))}-{f(_pct(values, 0.75))}]"


MODES = {"off": False, "on": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, action="append", default=[],
                        help="a measured grid (repeat for several, each replayed in turn)")
    parser.add_argument("--ladder-grids", type=Path, default=None, metavar="DIR",
                        help="every ladder grid (format v2) in DIR, e.g. benchmarks/grids")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--early-stop", choices=("both", "on", "off"), default="both",
        help="the ladder's early stop in the replayed studies (a grid without levels: n/a)",
    )
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
    parser.add_argument(
        "--trace", action="store_true",
        help="print each strategy's first study trial by trial: its share of the full "
             "hypervolume after each trial and what the trial changed from the defaults",
    )
    parser.add_argument(
        "--levels", default=None, metavar="L1,L2,...",
        help="replay these of the grid's ladder levels only (e.g. 4,16,64)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    paths = list(args.grid)
    if args.ladder_grids is not None:
        paths += [p for p in sorted(args.ladder_grids.glob("*.jsonl")) if _is_ladder_grid(p)]
    if not paths:
        parser.error("give --grid FILE (one or more) or --ladder-grids DIR")
    verdicts = []
    for number, path in enumerate(paths):
        if number:
            print("\n" + "=" * 100 + "\n")
        verdicts.append((path, replay_grid(args, path)))
    kinds = args.strategies.split(",")
    if "auto" in kinds and "random" in kinds:
        print("\n" + verdict_table(verdicts))


def _is_ladder_grid(path: Path) -> bool:
    try:
        grid = Grid.load(path)
    except GridError:
        return False
    return isinstance(grid.meta.get("space"), dict) and grid.meta["space"].get("ladder") \
        is not None


def replay_grid(
    args: argparse.Namespace, grid_path: Path
) -> tuple[dict[tuple[str, str], tuple[list[Run], int]], list[str], float]:
    """Replay every strategy on one grid and print its tables; the runs, modes and the full
    hypervolume for the verdict."""
    args = argparse.Namespace(**{**vars(args), "grid": grid_path})
    try:
        grid = Grid.load(args.grid)
        space = grid.space()
    except GridError as exc:
        raise SystemExit(f"search_efficiency: {exc}") from None
    unknown = [k for k in args.strategies.split(",") if k not in STRATEGIES]
    if unknown:
        raise SystemExit(f"search_efficiency: unknown strategy {', '.join(unknown)} "
                         f"(known: {', '.join(STRATEGIES)})")
    if args.slo:
        slos = dict(space.slos)
        for item in args.slo:
            key, _, limit = item.partition("=")
            slos[key] = float(limit)
        space = space.model_copy(update={"slos": slos})
    if args.levels:
        if space.ladder is None:
            raise SystemExit(f"search_efficiency: --levels: {args.grid} has no ladder")
        try:
            levels = [float(v) for v in args.levels.split(",")]
            ladder = LadderSpec.model_validate(
                {**space.ladder.model_dump(exclude={"start", "factor", "max"}), "levels": levels})
        except ValueError as exc:
            raise SystemExit(f"search_efficiency: --levels {args.levels}: {exc}") from None
        recorded = {level.load for r in grid.rows for level in r.levels}
        missing = [f"{v:g}" for v in levels if v not in recorded]
        if missing:
            raise SystemExit(f"search_efficiency: --levels: the grid has no level at "
                             f"{', '.join(missing)} (recorded: "
                             f"{', '.join(f'{v:g}' for v in sorted(recorded))})")
        space = space.model_copy(update={"ladder": ladder})
    has_ladder = space.ladder is not None
    if has_ladder and not all(r.levels for r in grid.rows if r.state == "complete"):
        raise SystemExit(f"search_efficiency: {args.grid}: a ladder space needs every complete "
                         "row's levels (grid format v2)")
    modes = (["off", "on"] if args.early_stop == "both" else [args.early_stop]) if has_ladder \
        else ["n/a"]
    # The full front: every configuration with its whole ladder (no early stop).
    full_space = with_early_stop(space, False)
    runner = ReplayTrialRunner(full_space, grid)
    workdir = Path(tempfile.mkdtemp(prefix="autotune-search-", dir=_fast_tmp()))
    storage = f"sqlite:///{workdir / 'studies.db'}"

    rows = grid.rows
    scored = []
    for row in rows:
        outcome = runner.run(0, row.params, is_default=row.default)
        ok = outcome.state == "complete" and is_feasible(violations(space, outcome.metrics))
        scored.append((row, outcome, ok))
    feasible = [outcome.metrics for _, outcome, ok in scored if ok]
    reference = reference_point(space, feasible)
    full_points = [objective_values(space, metrics) for metrics in feasible]
    full_hv = hypervolume(full_points, space.directions, reference)
    first = space.objectives[0]
    maximize = first.resolved_direction == "maximize"
    default_row = grid.default_row()
    replayed = {id(row): outcome for row, outcome, _ in scored}
    default_ok = next((ok for row, _, ok in scored if row is default_row), False)
    default_value = (replayed[id(default_row)].metrics.get(first.metric)
                     if default_row is not None else None)

    def shown(row: Any) -> str:
        metrics = replayed[id(row)].metrics
        return f"{first.metric} {metrics.get(first.metric, math.nan):.4g}, " + ", ".join(
            f"{k} {metrics.get(k, math.nan):.0f}" for k in space.slos)

    states = {s: sum(1 for r in rows if r.state == s) for s in ("complete", "failed", "rejected")}
    print(
        f"grid {args.grid}: {len(rows)} rows ({len(grid.points)} points + "
        f"{len(rows) - len(grid.points)} default), "
        + ", ".join(f"{n} {s}" for s, n in states.items())
        + f"; {len(feasible)} SLO-feasible"
    )
    print(
        "objectives: "
        + ", ".join(f"{o.metric} ({o.resolved_direction})" for o in space.objectives)
        + f"; SLOs {dict(space.slos)}; reference point {reference}"
    )
    if has_ladder:
        assert space.ladder is not None
        print(f"load ladder: {space.ladder.kind} {space.ladder.resolved_levels()}, early stop "
              + " and ".join(modes) + " in the replayed studies")
    print(
        f"full-grid hypervolume {full_hv:.6g}; Pareto-optimal feasible rows: "
        f"{_pareto_size(full_points, space.directions)}; every configuration once: "
        f"{sum(o.timings.get(ENGINE_S, 0.0) for _, o, _ in scored):.0f} engine-s"
    )
    if default_row is not None:
        state = "SLO-feasible" if default_ok else "NOT SLO-feasible"
        print(f"vLLM default: {shown(default_row)} ({state})")
    twin = next(
        (r for r in grid.points if r.params == (default_row.params if default_row else None)), None
    )
    if twin is not None:
        print(f"  the same values as explicit flags (an ordinary grid point): {shown(twin)} "
              f"({twin.state})")
    if full_hv > 0:
        shares = sorted(
            (hypervolume([p], space.directions, reference) / full_hv for p in full_points),
            reverse=True,
        )
        print(
            "share of the full hypervolume reached by the best single configurations: "
            + ", ".join(f"{v:.0%}" for v in shares[:5])
        )
    if full_hv > 0:
        default_point = (objective_values(space, replayed[id(default_row)].metrics)
                         if default_ok and default_row is not None else None)
        others = [objective_values(space, outcome.metrics) for row, outcome, ok in scored
                  if ok and row is not default_row]
        fewest = [oracle_trials(others, default_point, space.directions, reference,
                                level * full_hv) for level in LEVELS]
        print("fewest trials to " + ", ".join(f"{level:.0%}: {n}" for level, n in
                                             zip(LEVELS, fewest, strict=True))
              + " (an oracle choosing the best configurations; trial 1 the default)")
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
        f"{'strategy':14s} {'95% med':>8s} {'95% worst':>9s} {'99% med':>8s} "
        f"{'99% worst':>9s} "
        + " ".join(f"{'best@' + str(b) + ' med/worst':>24s}" for b in BUDGETS)
        + f" {'s/study':>8s}"
    )
    print(header)
    print("-" * len(header))
    # Gains are shown against the default's first objective even when the default misses an
    # SLO (then any feasible configuration is an improvement the ratio understates).
    base = default_value or None
    seeds_for = {k: int(v) for k, _, v in (item.partition("=") for item in args.seeds_for)}
    cap_for = {k: int(v) for k, _, v in (item.partition("=") for item in args.max_trials_for)}
    search_space = grid.search_space(space)
    results: dict[tuple[str, str], tuple[list[Run], int]] = {}
    for kind in args.strategies.split(","):
        seeds = seeds_for.get(kind, args.seeds)
        cap = cap_for.get(kind, max_trials)
        for mode in modes:
            mode_space = with_early_stop(search_space, MODES.get(mode, False))
            started = time.monotonic()
            runs = []
            for seed in range(seeds):
                t0 = time.monotonic()
                runs.append(
                    replay_study(
                        kind,
                        seed,
                        search_space=mode_space,
                        grid=grid,
                        reference=reference,
                        full_hv=full_hv,
                        max_trials=cap,
                        min_trials=min_trials,
                        storage=storage,
                        log_dir=workdir / "logs",
                        name=f"{kind}-{mode}-{seed}",
                    )
                )
                if args.progress:
                    print(
                        f"  {kind} (early stop {mode}) seed {seed}: {len(runs[-1].hv)} trials, "
                        f"99% at {trials_to(runs[-1], LEVELS[-1], full_hv)} "
                        f"({time.monotonic() - t0:.1f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
            results[(kind, mode)] = (runs, cap)
            if args.trace:
                print(trace(runs[0], space, full_hv, f"{kind} (early stop {mode}), seed 0"))
            per = (time.monotonic() - started) / seeds
            cells: list[str] = []
            for level in LEVELS:
                cells += _fmt_trials([trials_to(r, level, full_hv) for r in runs], cap)
            bests = [_fmt_best([best_within(r, b) for r in runs], base, maximize)
                     for b in BUDGETS]
            reused = statistics.median(r.reused for r in runs)
            skipped = statistics.median(r.skipped for r in runs)
            label = kind if mode == "n/a" else f"{kind} es:{mode}"
            print(
                f"{label:14s} {cells[0]:>8s} {cells[1]:>9s} {cells[2]:>8s} {cells[3]:>9s} "
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
    print()
    print(cost_table(results, modes, args.strategies.split(","), full_hv))
    return results, modes, full_hv


def verdict_table(
    verdicts: Sequence[tuple[Path, tuple[Mapping[tuple[str, str], tuple[list[Run], int]],
                                         Sequence[str], float]]],
) -> str:
    """Issue 22's bar, per grid and early-stop mode: ``auto`` within half of ``random``'s
    median trials and engine-seconds to 95% and 99% of the hypervolume, and its worst seed
    no worse than random's worst (trials and engine-seconds)."""
    lines = ["auto against random: median trials and engine-seconds to 95% / 99% (auto/random, "
             "the bar: at most 0.5), worst seed (auto/random, the bar: at most 1)"]
    for path, (results, modes, full_hv) in verdicts:
        for mode in modes:
            auto, random_ = results[("auto", mode)][0], results[("random", mode)][0]
            checks: list[tuple[str, float, float, float]] = []
            for level in LEVELS:
                for what, measure in (("trials", trials_to), ("engine-s", engine_seconds_to)):
                    a = [measure(r, level, full_hv) for r in auto]
                    b = [measure(r, level, full_hv) for r in random_]
                    checks.append((f"{what} {level:.0%} median", statistics.median(a),
                                   statistics.median(b), 0.5))
                    checks.append((f"{what} {level:.0%} worst", max(a), max(b), 1.0))
            def ok(a: float, b: float, bar: float) -> bool:
                return math.isfinite(a) and a <= bar * b  # never reaching it is no pass

            passed = all(ok(a, b, bar) for _, a, b, bar in checks)
            lines.append(f"{path.name} (early stop {mode}): {'MET' if passed else 'NOT MET'}")
            for name, a, b, bar in checks:
                ratio = a / b if b and math.isfinite(a) and math.isfinite(b) else math.inf
                lines.append(f"  {name:22s} {a:8.1f} / {b:8.1f} = {ratio:5.2f} "
                             f"{'ok' if ok(a, b, bar) else 'over'} (bar {bar:g})")
    return "\n".join(lines)


def cost_table(
    results: Mapping[tuple[str, str], tuple[list[Run], int]], modes: Sequence[str],
    kinds: Sequence[str], full_hv: float,
) -> str:
    """Trials and engine-seconds to 95% and 99% of the full hypervolume, one column group per
    early-stop mode, side by side: median [q25-q75] over the seeds."""
    groups = {"off": "without early stop", "on": "with early stop", "n/a": "no ladder"}
    cols = [f"trials {v:.0%}" for v in LEVELS] + [f"engine-s {v:.0%}" for v in LEVELS]
    width = 17
    lines = [f"{'':10s}" + "".join(f" | {groups[m]:^{4 * width + 3}s}" for m in modes),
             f"{'strategy':10s}" + "".join(" | " + " ".join(f"{c:>{width}s}" for c in cols)
                                          for _ in modes)]
    lines.append("-" * len(lines[-1]))
    for kind in kinds:
        text = f"{kind:10s}"
        for mode in modes:
            runs, cap = results[(kind, mode)]
            cells = [_fmt_spread([trials_to(r, v, full_hv) for r in runs], f">{cap}")
                     for v in LEVELS]
            cells += [_fmt_spread([engine_seconds_to(r, v, full_hv) for r in runs], "never")
                      for v in LEVELS]
            text += " | " + " ".join(f"{c:>{width}s}" for c in cells)
        lines.append(text)
    lines.append("median [25th-75th percentile] over the seeds; trials count the default "
                 "trial; engine-seconds: start + measurements (+ the ladder levels run) + "
                 "teardown, summed over the study's trials")
    return "\n".join(lines)


def _fast_tmp() -> str | None:
    """A RAM-backed folder for the replayed studies' database, when the host has one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def oracle_trials(points: Sequence[Sequence[float]], default: Sequence[float] | None,
                  directions: Sequence[str], reference: Sequence[float], target: float) -> int:
    """The fewest trials that hold ``target`` hypervolume: the default trial first (as in every
    study), then the best choice of ``points`` (searched among the Pareto-optimal ones)."""
    from autotune.scoring import pareto_indices

    base = [list(default)] if default is not None else []
    front = [list(points[i]) for i in pareto_indices(points, directions)]
    for k in range(len(front) + 1):
        if any(hypervolume(base + list(chosen), directions, reference) >= target - 1e-12
               for chosen in itertools.combinations(front, k)):
            return k + 1
    return len(front) + 1


def _pareto_size(points: Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    from autotune.scoring import pareto_indices

    return len(pareto_indices(points, directions))


if __name__ == "__main__":
    main()
