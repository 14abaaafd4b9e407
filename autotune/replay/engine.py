"""Replay engine: answers each trial from a measured grid (docs/grid-format.md) instead of
starting vLLM, so search strategies can be compared over hundreds of studies in seconds.

Where the replay sits. The launcher is a real ``EngineLauncher`` (registered as ``"replay"``):
``start`` receives the same ``EngineConfig`` a vLLM launch would, looks the configuration up by
its engine flags, and either raises the recorded ``EngineFailure`` or returns a
``ReplayedEngine``. A replayed engine has no HTTP server, so the load driver cannot run
against it: the trial's measuring step is :class:`GridMeasurement`, which copies the recorded
metrics verbatim (``autotune.trial.ReplayTrialRunner`` wires the two into an ordinary
``TrialRunner``). Everything else of a trial is the study's own code: the flags are built by
``autotune.engines.vllm.engine_config``, known-invalid configurations are rejected by
``autotune.space.rules`` before any launch, devices are acquired and released, and the study scores
the outcome with ``autotune.scoring``. Nothing is re-measured: a replayed trial returns the
metrics recorded for that configuration; with a load ladder (grid format v2: the row's
``levels``) its curve metrics are re-derived from the recorded levels by the ladder's own code,
with its early stop (see :class:`GridMeasurement`). ``engine_seconds`` sums what a replayed
trial held an engine for.

Why the key is the engine flags, not the parameters: the flags are what the engine was really
started with. The vLLM-default trial passes no swept flag at all (the engine runs on its own
defaults), so it differs from the configuration whose nominal values are written out as flags,
and the grid can hold both; parameters alone could not tell them apart.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.bench.ladder import ladder_into
from autotune.bench.step import MeasureContext, Measured
from autotune.devices import DeviceSet
from autotune.engines.base import EngineConfig, RunningEngine, register
from autotune.engines.failures import EngineFailure, FailureKind
from autotune.engines.vllm import render_flags
from autotune.space.configuration import Configuration, params_key
from autotune.space.ladder import LadderSpec
from autotune.space.model import ParameterSpec, Space

if TYPE_CHECKING:
    from autotune.quality.probe import QualityProbe

GRID_ENV = "AUTOTUNE_REPLAY_GRID"
STATES = ("complete", "failed", "rejected")


class GridError(ValueError):
    """A grid file that cannot be read, or a configuration the grid does not hold."""


class GridMiss(GridError, LookupError):
    """The search asked for a configuration that was never measured."""


def _numbers(value: Any, where: str) -> dict[str, float]:
    """A mapping of names to numbers (``where`` names it in the error)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{where} must be an object of numbers")
    out: dict[str, float] = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise GridError(f"{where}.{key} must be a number, got {number!r}")
        out[key] = float(number)
    return out


@dataclass(frozen=True)
class GridLevel:
    """One recorded level of a configuration's load ladder (grid format v2)."""

    load: float
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def benchmark_s(self) -> float:
        """Seconds the engine served this level (the run's own duration when not recorded)."""
        return self.timings.get("benchmark_s", self.metrics.get("duration_s", 0.0))

    @classmethod
    def from_json(cls, where: str, data: Any) -> GridLevel:
        if not isinstance(data, dict):
            raise GridError(f"{where} must be an object with load and metrics")
        load = data.get("load")
        if isinstance(load, bool) or not isinstance(load, int | float) or load <= 0:
            raise GridError(f"{where}.load must be a number > 0, got {load!r}")
        if not isinstance(data.get("metrics"), dict):
            raise GridError(f"{where}.metrics must be an object of numbers")
        return cls(float(load), _numbers(data["metrics"], f"{where}.metrics"),
                   _numbers(data.get("timings"), f"{where}.timings"))

    def to_json(self) -> dict[str, Any]:
        return {"load": self.load, "metrics": self.metrics, "timings": self.timings}


@dataclass(frozen=True)
class GridRow:
    """One measured configuration (one line of the grid file); ``line`` is its line number."""

    index: int
    params: dict[str, Any]
    state: str
    metrics: dict[str, float]
    flags: dict[str, Any]
    default: bool = False
    failure_kind: str | None = None
    failure_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    levels: tuple[GridLevel, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def level_at(self, load: float) -> GridLevel:
        for level in self.levels:
            if level.load == load:
                return level
        raise GridError(
            f"row {self.index} (line {self.line}) holds no ladder level at load {load:g} "
            f"(recorded: {', '.join(f'{lv.load:g}' for lv in self.levels) or 'none'}); "
            "replay with the ladder the grid was measured with"
        )

    @classmethod
    def from_json(cls, index: int, data: Mapping[str, Any], line: int = 0) -> GridRow:
        if not isinstance(data, dict):
            raise GridError(f"row {index}: a configuration line must be a JSON object")
        state = data.get("state")
        if state not in STATES:
            raise GridError(
                f"row {index}: state must be one of {', '.join(STATES)}, got {state!r}"
            )
        if not isinstance(data.get("params"), dict):
            raise GridError(f"row {index}: params must be an object")
        if state != "complete" and not data.get("failure_kind"):
            raise GridError(f"row {index}: a {state} row needs failure_kind")
        if data.get("failure_kind"):
            try:
                FailureKind(data["failure_kind"])
            except ValueError:
                raise GridError(
                    f"row {index}: unknown failure_kind {data['failure_kind']!r}; known: "
                    + ", ".join(k.value for k in FailureKind)
                ) from None
        known = {
            "params",
            "state",
            "metrics",
            "flags",
            "default",
            "failure_kind",
            "failure_reason",
            "timings",
            "levels",
        }
        raw_levels = data.get("levels")
        if raw_levels is not None and not isinstance(raw_levels, list):
            raise GridError(f"row {index}: levels must be a list of levels")
        levels = tuple(GridLevel.from_json(f"row {index}: levels[{i}]", item)
                       for i, item in enumerate(raw_levels or []))
        loads = [level.load for level in levels]
        if any(b <= a for a, b in zip(loads, loads[1:], strict=False)):
            raise GridError(f"row {index}: levels must be in rising load order, got {loads}")
        return cls(
            index=index,
            params=dict(data["params"]),
            state=state,
            metrics=_numbers(data.get("metrics"), f"row {index}: metrics"),
            flags=dict(data.get("flags") or {}),
            default=bool(data.get("default", False)),
            failure_kind=data.get("failure_kind"),
            failure_reason=data.get("failure_reason"),
            timings=_numbers(data.get("timings"), f"row {index}: timings"),
            levels=levels,
            extra={k: v for k, v in data.items() if k not in known},
            line=line,
        )

    def failure(self) -> EngineFailure:
        kind = FailureKind(self.failure_kind or FailureKind.CRASHED)
        reason = self.failure_reason or f"recorded as {self.state} in the grid"
        return EngineFailure(kind, reason, f"replayed from grid row {self.index}")


class Grid:
    """A measured grid: the rows, and the ``meta`` line (the space it was measured with)."""

    def __init__(
        self, rows: list[GridRow], meta: Mapping[str, Any] | None = None, path: str = ""
    ) -> None:
        self.rows = rows
        self.meta = dict(meta or {})
        self.path = path
        self._by_flags: dict[str, GridRow] = {}
        self._by_params: dict[str, GridRow] = {}
        for row in rows:
            pkey = Configuration(row.params, row.default).key()
            if pkey in self._by_params:
                first = self._by_params[pkey]
                raise GridError(
                    f"{path or 'grid'}:{row.line}: row {row.index}: the same configuration as "
                    f"row {first.index} (line {first.line}): {params_key(row.params)}"
                )
            self._by_params[pkey] = row
            if row.flags:
                self._by_flags.setdefault(params_key(row.flags), row)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Grid:
        rows: list[GridRow] = []
        meta: dict[str, Any] = {}
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise GridError(f"cannot read grid {path}: {exc.strerror or exc}") from exc
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GridError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if isinstance(data, dict) and "meta" in data:
                if not isinstance(data["meta"], dict):
                    raise GridError(f"{path}:{number}: meta must be an object")
                meta.update(data["meta"])
                continue
            try:
                rows.append(GridRow.from_json(len(rows), data, number))
            except GridError as exc:
                raise GridError(f"{path}:{number}: {exc}") from None
        if not rows:
            raise GridError(f"{path}: no configuration in the grid")
        _check_ladder(rows, meta, str(path))
        return cls(rows, meta, str(path))

    def space(self) -> Space:
        """The space the grid was measured with (from its meta line)."""
        if "space" not in self.meta:
            raise GridError(f"{self.path or 'grid'}: no meta.space line; pass the space yourself")
        data = json.loads(json.dumps(self.meta["space"]))
        data["model"]["build_demo"] = False
        return Space.model_validate(data)

    def search_space(self, space: Space) -> Space:
        """``space`` with every parameter a choice among the values the grid holds (numeric
        choices stay an ordered scale), so that a study only asks for measured values."""
        params: dict[str, ParameterSpec] = {}
        for name, spec in space.parameters.items():
            values = self.values(name)
            if not values and spec.when is not None:
                continue  # its condition never holds on the grid (e.g. no speculation swept)
            if not values:
                raise GridError(f"the grid holds no value of parameter {name!r}")
            params[name] = ParameterSpec(
                choices=values,
                when=spec.when,
                default=spec.default if spec.default in values else None,
            )
        return space.model_copy(update={"parameters": params})

    def by_flags(self, flags: Mapping[str, Any]) -> GridRow:
        try:
            return self._by_flags[params_key(flags)]
        except KeyError:
            raise GridMiss(
                f"the grid {self.path} holds no configuration started with the flags "
                f"{params_key(flags)}; replay only the space the grid was measured with "
                "(Grid.space()), restricted to the grid's values"
            ) from None

    def by_params(self, params: Mapping[str, Any], *, default: bool = False) -> GridRow:
        try:
            return self._by_params[Configuration(params, default).key()]
        except KeyError:
            raise GridMiss(
                f"the grid {self.path} holds no configuration {params_key(params)}"
                + (" measured as the default trial" if default else "")
            ) from None

    @property
    def points(self) -> list[GridRow]:
        """The ordinary grid points (the default trial's row left out)."""
        return [row for row in self.rows if not row.default]

    def default_row(self) -> GridRow | None:
        return next((row for row in self.rows if row.default), None)

    def values(self, name: str) -> list[Any]:
        """The values a parameter takes over the grid points, sorted."""
        found = {
            json.dumps(r.params[name]): r.params[name] for r in self.points if name in r.params
        }
        return sorted(found.values(), key=lambda v: (str(type(v)), v))


def _check_ladder(rows: list[GridRow], meta: Mapping[str, Any], path: str) -> None:
    """A grid measured with a ``ladder:`` holds every planned level of each complete row."""
    section = (meta.get("space") or {}).get("ladder") if isinstance(meta.get("space"), dict) \
        else None
    if section is None:
        return
    try:
        planned = LadderSpec.model_validate(section).resolved_levels()
    except ValueError as exc:
        raise GridError(f"{path}: meta.space.ladder is not a valid ladder: {exc}") from None
    for row in rows:
        loads = [level.load for level in row.levels]
        if row.state == "complete" and not set(planned) <= set(loads):
            raise GridError(
                f"{path}:{row.line}: row {row.index}: a complete row of a ladder grid needs "
                f"levels at loads {[f'{v:g}' for v in planned]}, has "
                f"{[f'{v:g}' for v in loads] or 'none'} (measure with early stop off)"
            )


# What a trial's engine spends its time on (TrialOutcome.timings); their sum is engine-seconds.
ENGINE_PHASES = ("startup_s", "warmup_s", "benchmark_s", "ladder_s", "quality_s", "capacity_s",
                 "teardown_s")
ENGINE_S = "engine_s"


def engine_seconds(timings: Mapping[str, float]) -> float:
    """Seconds an engine was held for a trial: start, each measurement, teardown (0 for a
    configuration rejected before launch)."""
    return sum(float(timings.get(k, 0.0)) for k in ENGINE_PHASES)


class ReplayedEngine:
    """A RunningEngine that never ran here: it carries the recorded metrics of its row."""

    def __init__(
        self, row: GridRow, grid: Grid, argv: list[str], served_name: str, log_path: Path
    ) -> None:
        self.row = row
        self.base_url = f"replay://{grid.path or 'grid'}#{row.index}"
        self.served_name = served_name
        self.argv = argv
        self.log_path = log_path
        self.startup_s = float(row.timings.get("startup_s", 0.0))
        self.version = str(grid.meta.get("engine_version") or "replay")
        self.metrics = dict(row.metrics)
        self._stopped = False

    def alive(self) -> bool:
        return not self._stopped

    def failure(self) -> EngineFailure:
        return EngineFailure(FailureKind.CRASHED, "a replayed engine has no process to fail")

    def pids(self) -> list[int]:
        return []

    def stop(self) -> float:
        """The recorded teardown time (a replay tears nothing down)."""
        self._stopped = True
        return float(self.row.timings.get("teardown_s", 0.0))


class ReplayLauncher:
    """Implements EngineLauncher over a grid. ``write_logs`` writes a one-line engine log per
    trial (which row answered), as a real launch leaves its log with the trial."""

    name = "replay"

    def __init__(self, grid: Grid, *, write_logs: bool = True) -> None:
        self.grid = grid
        self.write_logs = write_logs

    def argv(self, config: EngineConfig, port: int | None = None) -> list[str]:
        return ["replay", config.model, *render_flags(config.flags)]

    def start(
        self, config: EngineConfig, devices: DeviceSet, log_path: Path,
        *, stop: threading.Event | None = None,
    ) -> ReplayedEngine:
        row = self.grid.by_flags(config.flags)
        if self.write_logs:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(
                f"replayed from grid {self.grid.path} row {row.index}: {row.state}"
                + (f" ({row.failure_kind}: {row.failure_reason})" if row.failure_kind else "")
                + "\n"
            )
        if row.state != "complete":
            raise row.failure()
        return ReplayedEngine(row, self.grid, self.argv(config), config.served_name, log_path)


@register("replay")
def _launcher_from_env() -> ReplayLauncher:
    path = os.environ.get(GRID_ENV)
    if not path:
        raise GridError(f"the replay engine needs {GRID_ENV}=PATH of a grid file")
    return ReplayLauncher(Grid.load(path))


class GridMeasurement:
    """The replay's measuring step (implements MeasuringStep): the recorded metrics, timings
    and disturbance verdict of the configuration the engine was started with. No load is
    driven and no quality probe or capacity search runs (a grid holds none of them).

    With a ``ladder:`` in the space, the load ladder is replayed over the row's recorded
    levels by the ladder's own code (``bench.ladder.run_ladder``): the curve metrics are
    derived from the levels, and with ``ladder.early_stop`` the ladder stops where a live one
    would (the first level missing an SLO; a bound the study's front dominates, the front read
    from ``front`` when the ladder starts, which the study runner sets as it does for the live
    step). ``timings["ladder_s"]`` is then the recorded seconds of the levels that ran."""

    quality: QualityProbe | None = None

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        # The study's current front, for the ladder's early stop (set by the study runner).
        self.front: Callable[[], Sequence[Sequence[float]]] | None = None

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured:
        trial.on_phase("replaying")
        row = self.grid.by_flags(config.flags)
        found = Measured(
            metrics=dict(row.metrics),
            timings={k: v for k, v in row.timings.items() if k not in ("startup_s", "teardown_s")},
            disturbed=bool(row.extra.get("disturbed", False)),
        )
        if trial.space.ladder is not None:
            self._ladder(row, trial, found)
        return found

    def _ladder(self, row: GridRow, trial: MeasureContext, found: Measured) -> None:
        if not row.levels:
            raise GridError(
                f"row {row.index} (line {row.line}) of {self.grid.path} has no ladder levels: "
                "a space with a ladder replays only a grid measured with one (format v2)"
            )
        ran: list[GridLevel] = []

        def measure(load: float) -> dict[str, float]:
            level = row.level_at(load)
            ran.append(level)
            return dict(level.metrics)

        ladder_into(found, trial, measure, self.front)
        found.timings["ladder_s"] = sum(level.benchmark_s for level in ran)
