"""The search-space file: pydantic models, loading with precise errors, and sampling.

Every key is documented in docs/search-space.md. ``load_space(path)`` either returns a valid
:class:`Space` or raises :class:`SpaceError` naming the file and each bad field path.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autotune.bench.capacity import CapacitySpec
from autotune.bench.metrics import LATENCY_METRIC, known_metric_names, natural_direction
from autotune.bench.workload_spec import ConcurrencyLoad as ConcurrencyLoad
from autotune.bench.workload_spec import JsonlPrompts as JsonlPrompts
from autotune.bench.workload_spec import PoissonLoad as PoissonLoad
from autotune.bench.workload_spec import RandomPrompts as RandomPrompts
from autotune.bench.workload_spec import WorkloadSpec
from autotune.errors import SpaceError
from autotune.measurement_spec import MeasurementSpec
from autotune.parameters import KNOWN_PARAMETERS, NONE_CHOICE
from autotune.quality.spec import QUALITY_METRICS, QualitySpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantizationVariant(_Strict):
    """A quantization choice: another checkpoint, an online method, or both."""

    checkpoint: str | None = None
    method: str | None = None


class ModelSpec(_Strict):
    path: str = Field(description="local directory or hub id of the base checkpoint")
    served_name: str | None = None
    max_model_len: int = Field(gt=0)
    build_demo: bool = Field(
        default=False, description="build the CPU demo model at `path` when it is missing"
    )
    quantization_variants: dict[str, QuantizationVariant] = Field(default_factory=dict)
    speculative_variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="speculative method name → extra --speculative-config keys",
    )

    @property
    def resolved_path(self) -> str:
        return os.path.expanduser(self.path)

    @property
    def name_to_serve(self) -> str:
        return self.served_name or Path(self.resolved_path).name


class EngineSpec(_Strict):
    kind: Literal["vllm"] = "vllm"
    command: list[str] = Field(
        default_factory=lambda: ["vllm", "serve"],
        min_length=1,
        description="argv prefix; {python} is replaced by the controller's interpreter",
    )
    model_as_flag: bool = Field(
        default=False, description="pass the model as --model (module form) instead of positional"
    )
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout_s: float = Field(default=600.0, gt=0)
    shutdown_grace_s: float = Field(default=15.0, gt=0)
    flags: dict[str, Any] = Field(
        default_factory=dict, description="fixed engine flags (name: value; true = bare flag)"
    )
    devices: Literal["auto", "cpu", "gpu"] = "auto"

    @field_validator("flags")
    @classmethod
    def _flag_names(cls, flags: dict[str, Any]) -> dict[str, Any]:
        for key in flags:
            if not key.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"flag name {key!r} is not a valid engine flag name")
        return flags


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"] | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in known_metric_names():
            raise ValueError(
                f"unknown metric {metric!r}; known: {', '.join(known_metric_names())}"
            )
        return metric

    @property
    def resolved_direction(self) -> str:
        return self.direction or natural_direction(self.metric)


class ParameterSpec(_Strict):
    """``choices``, or a ``low``..``high`` range (``step`` or ``log``); optionally ``when``."""

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    type: Literal["int", "float"] | None = None
    default: Any = None
    when: dict[str, Any] | None = Field(
        default=None, description="sample only when each named parameter has one of the values"
    )
    ordered: bool | None = Field(
        default=None,
        description="numeric choices are an ordered scale (default: true for numbers)",
    )

    @property
    def is_ordered(self) -> bool:
        """Numeric choices searched as a scale (nearby values alike), not as unrelated labels."""
        if self.choices is None or len(self.choices) < 2 or self.ordered is False:
            return False
        return all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices)

    @property
    def choices_log_scale(self) -> bool:
        """Ordered choices spanning a factor of 4 or more (8..128, 256..4096) use a log scale."""
        assert self.choices is not None
        low, high = min(self.choices), max(self.choices)
        return bool(low > 0 and high / low >= 4)

    @model_validator(mode="after")
    def _shape(self) -> ParameterSpec:
        if self.ordered and self.choices is not None and not self.is_ordered:
            raise ValueError("ordered: true needs numeric choices")
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError("choices has duplicates")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices, or both low and high")
        if self.low > self.high:
            raise ValueError(f"empty range: low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a range is either log or stepped, not both")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be > 0")
        return self


class CostSpec(_Strict):
    """Price of the devices, giving each trial a cost per 1M output tokens."""

    device_hour_usd: float = Field(gt=0, description="$ per device-hour (e.g. H100: 2.50)")
    max_per_1m_output_tokens_usd: float | None = Field(
        default=None, gt=0, description="constraint: a costlier trial is infeasible"
    )


class SearchSpec(_Strict):
    sampler: Literal["auto", "tpe", "random", "nsga2", "gp", "grid"] = "auto"
    seed: int | None = 0
    trials: int = Field(default=20, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    remeasure: bool = Field(
        default=False,
        description="measure a configuration again when suggested again (default: reuse)",
    )
    crash_learning: bool = Field(
        default=True, description="skip suggestions a model of earlier config failures rejects"
    )
    local_search: bool = Field(
        default=True,
        description="every other trial, try a configuration one step from the Pareto front "
        "(not with the random or grid sampler)",
    )


class Space(_Strict):
    name: str | None = Field(default=None, description="default study name")
    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    workload: WorkloadSpec
    slos: dict[str, float] = Field(default_factory=dict)
    max_error_rate: float = Field(default=0.0, ge=0, le=1)
    objectives: list[Objective] = Field(min_length=1)
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)
    cost: CostSpec | None = None
    measurement: MeasurementSpec = Field(default_factory=MeasurementSpec)
    capacity: CapacitySpec | None = Field(
        default=None, description="per trial, find the highest request rate meeting the SLOs"
    )
    quality: QualitySpec | None = Field(
        default=None, description="accuracy / agreement probe run on every trial"
    )

    @field_validator("slos")
    @classmethod
    def _slo_keys(cls, slos: dict[str, float]) -> dict[str, float]:
        for key, value in slos.items():
            if not LATENCY_METRIC.match(key):
                raise ValueError(
                    f"unknown SLO {key!r}: use <ttft|tpot|itl|e2e>_<mean|p50|p90|p95|p99>_ms"
                )
            if value <= 0:
                raise ValueError(f"SLO {key} must be > 0")
        return slos

    @model_validator(mode="after")
    def _cross_checks(self) -> Space:
        problems: list[str] = []
        for name, spec in self.parameters.items():
            info = KNOWN_PARAMETERS.get(name)
            if info is None:
                problems.append(
                    f"parameters.{name}: unknown parameter; sweepable: "
                    f"{', '.join(KNOWN_PARAMETERS)} (fix any other flag in engine.flags)"
                )
                continue
            if spec.choices is None and info.kind not in ("int", "float"):
                problems.append(f"parameters.{name}: {info.kind} parameter needs choices")
            if spec.choices is not None and info.kind == "bool":
                bad = [c for c in spec.choices if not isinstance(c, bool)]
                if bad:
                    problems.append(f"parameters.{name}: choices must be true/false, got {bad}")
            if spec.choices is not None and info.kind == "int":
                bad = [c for c in spec.choices if not isinstance(c, int) or isinstance(c, bool)]
                if bad:
                    problems.append(f"parameters.{name}: choices must be integers, got {bad}")
            if spec.choices is None and info.kind == "int":
                for bound in (spec.low, spec.high, spec.step):
                    if bound is not None and not float(bound).is_integer():
                        problems.append(f"parameters.{name}: integer range needs integer bounds")
                        break
            for parent in spec.when or {}:
                if parent not in self.parameters:
                    problems.append(f"parameters.{name}.when: {parent!r} is not a parameter here")
                elif parent == name:
                    problems.append(f"parameters.{name}.when: a parameter cannot depend on itself")
        quant = self.parameters.get("quantization")
        for choice in quant.choices or [] if quant else []:
            if choice != NONE_CHOICE and choice not in self.model.quantization_variants:
                problems.append(
                    f"parameters.quantization.choices: {choice!r} is not in "
                    "model.quantization_variants"
                )
        spec_m = self.parameters.get("speculative_method")
        for choice in spec_m.choices or [] if spec_m else []:
            if choice != NONE_CHOICE and choice not in self.model.speculative_variants:
                problems.append(
                    f"parameters.speculative_method.choices: {choice!r} is not in "
                    "model.speculative_variants"
                )
        if "num_speculative_tokens" in self.parameters and "speculative_method" not in (
            self.parameters["num_speculative_tokens"].when or {}
        ):
            problems.append(
                "parameters.num_speculative_tokens.when: must name speculative_method "
                "(the draft length only exists when a speculative method is chosen)"
            )
        for objective in self.objectives:
            if objective.metric in {o.metric for o in self.objectives if o is not objective}:
                problems.append(f"objectives: {objective.metric} appears twice")
                break
        for key in self.engine.flags:
            if key.replace("-", "_") in self.parameters:
                problems.append(f"engine.flags.{key}: is also swept in parameters")
        for objective in self.objectives:
            if objective.metric in QUALITY_METRICS and self.quality is None:
                problems.append(
                    f"objectives: {objective.metric} needs a `quality:` section (docs/quality.md)"
                )
            elif (
                objective.metric in QUALITY_METRICS
                and objective.metric != "quality_accuracy"
                and self.quality is not None
                and self.quality.reference == "none"
            ):
                problems.append(
                    f"objectives: {objective.metric} compares with the reference, but "
                    "quality.reference is none"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def directions(self) -> list[str]:
        return [o.resolved_direction for o in self.objectives]

    def ordered_parameters(self) -> list[str]:
        """Parameter names so that every ``when`` parent comes before its children."""
        done: list[str] = []
        pending = dict(self.parameters)
        while pending:
            progressed = False
            for name, spec in list(pending.items()):
                if all(p in done for p in (spec.when or {})):
                    done.append(name)
                    del pending[name]
                    progressed = True
            if not progressed:
                raise SpaceError("<space>", [("parameters", "circular `when` dependencies")])
        return done

    def default_params(self) -> dict[str, Any]:
        """Nominal values of the vLLM-default configuration, for the enqueued first trial."""
        params: dict[str, Any] = {}
        for name in self.ordered_parameters():
            if _active(self.parameters[name], params):
                params[name] = default_value(self, name)
        return params


def default_value(space: Space, name: str) -> Any:
    """A parameter's default (the space's, else vLLM's nominal one), inside its range."""
    spec = space.parameters[name]
    value = spec.default if spec.default is not None else KNOWN_PARAMETERS[name].default
    return nearest_allowed(spec, value)


def _active(spec: ParameterSpec, params: dict[str, Any]) -> bool:
    return all(
        params.get(parent) in (values if isinstance(values, list) else [values])
        for parent, values in (spec.when or {}).items()
    )


def nearest_allowed(spec: ParameterSpec, value: Any) -> Any:
    """Keep the default inside the distribution so Optuna accepts the enqueued trial."""
    if spec.choices is not None and value not in spec.choices and spec.is_ordered:
        return nearest_choice(sorted(spec.choices), float(value), log=spec.choices_log_scale)
    if spec.choices is not None:
        return value if value in spec.choices else spec.choices[0]
    assert spec.low is not None and spec.high is not None
    clipped = min(max(float(value), spec.low), spec.high)
    if spec.step:
        clipped = spec.low + round((clipped - spec.low) / spec.step) * spec.step
    return int(round(clipped)) if spec.type == "int" or isinstance(value, int) else clipped


def is_active(space: Space, name: str, params: dict[str, Any]) -> bool:
    return _active(space.parameters[name], params)


def suggest_params(space: Space, trial: Any) -> dict[str, Any]:
    """Sample one configuration from an ``optuna.Trial`` (define-by-run, conditionals honoured)."""
    params: dict[str, Any] = {}
    for name in space.ordered_parameters():
        spec = space.parameters[name]
        if not _active(spec, params):
            continue
        info = KNOWN_PARAMETERS[name]
        if spec.choices is not None and spec.is_ordered:
            params[name] = _suggest_ordered(trial, name, spec)
        elif spec.choices is not None:
            params[name] = trial.suggest_categorical(name, spec.choices)
        elif info.kind == "int" or spec.type == "int":
            params[name] = trial.suggest_int(
                name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
            )
        else:
            params[name] = trial.suggest_float(
                name, float(spec.low), float(spec.high), step=spec.step, log=spec.log
            )
    return params


def _suggest_ordered(trial: Any, name: str, spec: ParameterSpec) -> Any:
    """An ordered choice: a number on the choices' (log) scale, snapped to the nearest choice.

    The sampler sees a numeric range, so it can learn that 32 is between 8 and 128; the
    configuration gets the nearest listed value (Optuna's record of the trial keeps the raw
    suggestion, autotune's the snapped value)."""
    assert spec.choices is not None
    values = sorted(spec.choices)
    log = spec.choices_log_scale
    if all(isinstance(v, int) for v in values):
        raw: float = trial.suggest_int(name, int(values[0]), int(values[-1]), log=log)
    else:
        raw = trial.suggest_float(name, float(values[0]), float(values[-1]), log=log)
    return nearest_choice(values, raw, log=log)


def nearest_choice(values: list[Any], raw: float, *, log: bool) -> Any:
    scale = math.log if log else float
    return min(values, key=lambda v: (abs(scale(v) - scale(raw)), v))


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("random", "jsonl", "concurrency", "poisson") and parts:
            continue  # pydantic's discriminator tag, not a key the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def load_space(path: str | os.PathLike[str]) -> Space:
    """Read and validate a space file; raise SpaceError naming the file and field paths."""
    p = str(path)
    try:
        text = Path(p).read_text()
    except OSError as exc:
        raise SpaceError(p, [("", f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpaceError(p, [(where, f"YAML syntax error: {problem}")]) from exc
    if not isinstance(data, dict):
        raise SpaceError(p, [("", "the file must be a YAML mapping (key: value)")])
    try:
        return Space.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            loc = _format_loc(tuple(err["loc"]))
            if not loc:  # cross-field checks carry their own field paths: "path: message; ..."
                for part in msg.split("; "):
                    field_path, _, text = part.partition(": ")
                    problems.append((field_path, text) if text else ("", part))
                continue
            problems.append((loc, msg))
        raise SpaceError(p, problems) from exc
