"""A measured grid (docs/grid-format.md): one row per configuration measured on an engine, looked
up by the engine flags it was started with (or by its parameters), and the ``meta`` line with
the space it was measured with.

Why the key is the engine flags, not the parameters: the flags are what the engine was really
started with. The engine-default trial passes no swept flag at all (the engine runs on its own
defaults), so it differs from the configuration whose nominal values are written out as flags,
and the grid can hold both; parameters alone could not tell them apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.bench.data_files import jsonl_objects
from autotune.engines.failures import EngineFailure
from autotune.space import Configuration, LadderSpec, ParameterSpec, Space, params_key
from autotune.trial_state import FailureKind

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
        for number, data in jsonl_objects(Path(path), text, GridError):
            if "meta" in data:
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
    needed = [*LEVEL_METRICS, *(m for m in _slo_metrics(meta) if m not in LEVEL_METRICS)]
    for row in rows:
        loads = [level.load for level in row.levels]
        if row.state == "complete" and not set(planned) <= set(loads):
            raise GridError(
                f"{path}:{row.line}: row {row.index}: a complete row of a ladder grid needs "
                f"levels at loads {[f'{v:g}' for v in planned]}, has "
                f"{[f'{v:g}' for v in loads] or 'none'} (measure with early stop off)"
            )
        if row.state != "complete":
            continue
        for i, level in enumerate(row.levels):
            missing = [m for m in needed if m not in level.metrics]
            if missing:
                raise GridError(
                    f"{path}:{row.line}: row {row.index}: levels[{i}] (load {level.load:g}) "
                    f"has no {', '.join(missing)}: the ladder reads "
                    f"{', '.join(needed)} at every level (a level without them would "
                    "replay as missing its SLOs)"
                )


# What the ladder reads at every level (autotune.bench.ladder): the error rate against
# max_error_rate, the achieved rate and throughput (capacity), the mean TPOT (interactivity);
# and the SLO metrics of the space's primary workload.
LEVEL_METRICS = ("error_rate", "request_throughput", "output_throughput", "tpot_mean_ms")


def _slo_metrics(meta: Mapping[str, Any]) -> list[str]:
    """The metrics the ladder judges against the SLOs: the primary workload's, as the space
    in the meta line says (its raw ``slos`` keys when the space does not validate here)."""
    section = meta.get("space")
    if not isinstance(section, dict):
        return []
    try:
        data = json.loads(json.dumps(section))
        data.setdefault("model", {})["build_demo"] = False
        return list(Space.model_validate(data).mix[0].slos)
    except (ValueError, TypeError, KeyError):
        slos = section.get("slos")
        return list(slos) if isinstance(slos, dict) else []
