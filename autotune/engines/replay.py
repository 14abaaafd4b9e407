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
``autotune.rules`` before any launch, devices are acquired and released, and the study scores
the outcome with ``autotune.scoring``. Nothing is re-measured, interpolated or re-derived: a
replayed trial returns exactly the metrics recorded for that configuration.

Why the key is the engine flags, not the parameters: the flags are what the engine was really
started with. The vLLM-default trial passes no swept flag at all (the engine runs on its own
defaults), so it differs from the configuration whose nominal values are written out as flags,
and the grid can hold both; parameters alone could not tell them apart.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.bench.step import MeasureContext, Measured
from autotune.configuration import Configuration, params_key
from autotune.devices import DeviceSet
from autotune.engines.base import EngineConfig, RunningEngine, register
from autotune.engines.failures import EngineFailure, FailureKind
from autotune.engines.vllm import render_flags
from autotune.space import ParameterSpec, Space

if TYPE_CHECKING:
    from autotune.quality.probe import QualityProbe

GRID_ENV = "AUTOTUNE_REPLAY_GRID"
STATES = ("complete", "failed", "rejected")


class GridError(ValueError):
    """A grid file that cannot be read, or a configuration the grid does not hold."""


class GridMiss(GridError, LookupError):
    """The search asked for a configuration that was never measured."""


@dataclass(frozen=True)
class GridRow:
    """One measured configuration (one line of the grid file)."""

    index: int
    params: dict[str, Any]
    state: str
    metrics: dict[str, float]
    flags: dict[str, Any]
    default: bool = False
    failure_kind: str | None = None
    failure_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, index: int, data: Mapping[str, Any]) -> GridRow:
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
        }
        return cls(
            index=index,
            params=dict(data["params"]),
            state=state,
            metrics={k: float(v) for k, v in (data.get("metrics") or {}).items()},
            flags=dict(data.get("flags") or {}),
            default=bool(data.get("default", False)),
            failure_kind=data.get("failure_kind"),
            failure_reason=data.get("failure_reason"),
            timings=dict(data.get("timings") or {}),
            extra={k: v for k, v in data.items() if k not in known},
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
                raise GridError(
                    f"row {row.index}: the same configuration as row "
                    f"{self._by_params[pkey].index} ({pkey[0]})"
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
            if "meta" in data:
                meta.update(data["meta"])
                continue
            rows.append(GridRow.from_json(len(rows), data))
        if not rows:
            raise GridError(f"{path}: no configuration in the grid")
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
        self._stopped = True
        return 0.0


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
    and disturbance verdict of the configuration the engine was started with, verbatim. No load
    is driven and no quality probe or capacity search runs (a grid holds none of them)."""

    quality: QualityProbe | None = None

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def measure(
        self, engine: RunningEngine, config: EngineConfig, trial: MeasureContext
    ) -> Measured:
        trial.on_phase("replaying")
        row = self.grid.by_flags(config.flags)
        return Measured(
            metrics=dict(row.metrics),
            timings=dict(row.timings),
            disturbed=bool(row.extra.get("disturbed", False)),
        )
