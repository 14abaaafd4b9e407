"""The search-space file: the ``Space`` model (its sections in ``space.sections`` and the leaf
modules beside it), loading with precise errors, and sampling.

Every key is documented in docs/search-space.md. ``load_space(path)`` either returns a valid
:class:`Space` or raises :class:`SpaceError` naming the file and each bad field path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autotune.errors import SpaceError
from autotune.metrics import CAPACITY_METRIC, lookup
from autotune.model import candidates, hub_cache, is_repo_id
from autotune.space.capacity import CapacitySpec
from autotune.space.ladder import LadderSpec
from autotune.space.measurement import MeasurementSpec, vllm_bench_refusal
from autotune.space.parameters import (
    NONE_CHOICE,
    declaration_problems,
    parameter_info,
    target_problems,
)
from autotune.space.quality import QUALITY_METRICS, QualitySpec
from autotune.space.reading import line_of, parse, read_text
from autotune.space.sections import (
    CostSpec,
    EngineSpec,
    ModelSpec,
    Objective,
    ParameterSpec,
    SearchSpec,
    Strict,
)
from autotune.space.workload import WorkloadSpec
from autotune.space.workload_mix import (
    MIX_METRICS,
    WORKLOAD_NAME,
    AggregateSpec,
    MixWorkload,
    NamedWorkload,
    check_slos,
    named_workloads,
    split_metric,
)

# Sections whose errors name the line they are on (the rest name the field path only).
_LINED_SECTIONS = ("workloads", "aggregate")


class Space(Strict):
    name: str | None = Field(default=None, description="default study name")
    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    workload: WorkloadSpec | None = Field(
        default=None, description="the load each trial is measured under (or `workloads`)"
    )
    workloads: dict[str, MixWorkload] | None = Field(
        default=None, description="a weighted mix, each workload measured on every trial"
    )
    aggregate: AggregateSpec | None = Field(
        default=None, description="how a mix's aggregate figures are made (with `workloads`)"
    )
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
    ladder: LadderSpec | None = Field(
        default=None, description="per engine start, measure rising load levels (a load curve)"
    )

    @field_validator("slos")
    @classmethod
    def _slo_keys(cls, slos: dict[str, float]) -> dict[str, float]:
        return check_slos(slos)

    @model_validator(mode="after")
    def _cross_checks(self) -> Space:
        problems: list[str] = self._mix_problems()
        for name, spec in self.parameters.items():
            declared = declaration_problems(name, spec)
            if declared:
                problems += [f"{path}: {message}" for path, message in declared]
                continue
            info = parameter_info(name, spec)
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
        problems += [
            f"{path}: {message}"
            for path, message in target_problems(self.parameters, self.engine.flags,
                                                 self.engine.env)
        ]
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
        if self.ladder is not None and self.capacity is not None:
            problems.append(
                f"ladder, capacity: both measure {CAPACITY_METRIC} (capacity at SLO); give one "
                "(docs/measurement.md, The ladder and `capacity:`)"
            )
        for objective in self.objectives:
            found = lookup(objective.metric)
            kind = found.kind if found is not None else ""
            if kind == "capacity" and self.ladder is None and self.capacity is None:
                problems.append(
                    f"objectives: {objective.metric} needs a `ladder:` section "
                    "(docs/measurement.md, Load ladder) or a `capacity:` section"
                )
            elif kind == "ladder" and self.ladder is None:
                problems.append(
                    f"objectives: {objective.metric} needs a `ladder:` section "
                    "(docs/measurement.md, Load ladder)"
                )
            elif kind == "bisection" and self.capacity is None:
                problems.append(
                    f"objectives: {objective.metric} needs a `capacity:` section "
                    "(docs/search-space.md, capacity)"
                )
            elif objective.metric == "cost_per_1m_at_capacity" and self.cost is None:
                problems.append(
                    "objectives: cost_per_1m_at_capacity needs a `cost:` section (device_hour_usd)"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _driver_runs_the_workload(self) -> Space:
        if self.measurement.driver == "vllm_bench":
            why = vllm_bench_refusal(self.workload, is_mix=self.workloads is not None)
            if why:
                raise ValueError(f"measurement.driver: {why}")
        return self

    def _mix_problems(self) -> list[str]:
        """Exactly one of ``workload`` / ``workloads``; a mix's names, SLOs and the metrics
        its objectives name."""
        problems: list[str] = []
        if self.workload is None and self.workloads is None:
            problems.append("workload: missing: give `workload` (one workload) or `workloads` "
                            "(a weighted mix, docs/search-space.md)")
        if self.workload is not None and self.workloads is not None:
            problems.append("workloads: give either `workload` or `workloads`, not both")
        if self.workloads is None:
            if self.aggregate is not None:
                problems.append("aggregate: only with `workloads` (a mix of workloads)")
            for i, objective in enumerate(self.objectives):
                workload, base = split_metric(objective.metric)
                if workload is not None or base in MIX_METRICS:
                    problems.append(
                        f"objectives[{i}].metric: {objective.metric!r} exists only in a mix of "
                        "workloads (`workloads:`)"
                        + (" (one workload's share of requests meeting its SLOs is "
                           "goodput_fraction)" if base in MIX_METRICS else ""))
            return problems
        if not self.workloads:
            problems.append("workloads: name at least one workload")
        for name in self.workloads:
            if not WORKLOAD_NAME.match(name):
                problems.append(f"workloads.{name}: a workload's name is a letter, then "
                                "letters, digits, _ or - (it prefixes its metrics: NAME.metric)")
        if self.slos:
            problems.append("slos: with `workloads`, SLOs go under each workload "
                            "(workloads.NAME.slos)")
        for i, objective in enumerate(self.objectives):
            workload, _ = split_metric(objective.metric)
            if workload is not None and workload not in self.workloads:
                problems.append(f"objectives[{i}].metric: {objective.metric!r} names no "
                                f"workload here (workloads: {', '.join(self.workloads)})")
        return problems

    @property
    def is_mix(self) -> bool:
        return self.workloads is not None

    @property
    def mix(self) -> list[NamedWorkload]:
        """The workloads each trial measures, in file order, weights normalised. A single
        ``workload`` is one entry with no name (its metrics unprefixed) and the top ``slos``."""
        if self.workloads is not None:
            return named_workloads(self.workloads)
        assert self.workload is not None
        return [NamedWorkload("", 1.0, self.workload, dict(self.slos))]

    @property
    def primary_workload(self) -> WorkloadSpec:
        """The workload where one is needed (the capacity search, the stall timeout before
        the quality probe): ``workload``, or a mix's first."""
        return self.mix[0].workload

    @property
    def slo_limits(self) -> dict[str, float]:
        """Every latency SLO by the metric it bounds: ``slos``, or in a mix each workload's
        SLOs under its name (``chat.ttft_p95_ms``)."""
        return {entry.metric(key): limit for entry in self.mix for key, limit in
                entry.slos.items()}

    @property
    def aggregation(self) -> AggregateSpec:
        return self.aggregate or AggregateSpec()

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
    value = spec.default if spec.default is not None else parameter_info(name, spec).default
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
        info = parameter_info(name, spec)
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


# pydantic's discriminator tags in an error's location (the workload's kinds), not keys
_UNION_TAGS = frozenset({
    "random", "jsonl", "sharegpt", "chat", "shared_prefix", "trace", "concurrency", "poisson",
    "fixed", "uniform", "normal", "data", "number", "distribution",
})


# the fields whose values are such unions: a tag counts only right after one of them
_UNION_FIELDS = frozenset({"prompts", "load", "output_tokens"})


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    previous: Any = None
    for item in loc:
        after, previous = previous, item
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in _UNION_TAGS and after in _UNION_FIELDS:
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def load_space(path: str | os.PathLike[str]) -> Space:
    """Read and validate a space file; raise SpaceError naming the file and field paths."""
    p = str(path)
    data, node = parse(p, read_text(p))
    if not isinstance(data, dict):
        raise SpaceError(p, [("", "the file must be a YAML mapping (key: value)")])
    check_finite(data, p, node)  # before any validator compares or converts a NaN
    try:
        space = Space.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            loc = _format_loc(tuple(err["loc"]))
            if err["type"] == "finite_number":
                problems.append((_lined(node, loc, always=True), msg))
                continue
            if not loc:  # cross-field checks carry their own field paths: "path: message; ..."
                for part in msg.split("; "):
                    field_path, _, text = part.partition(": ")
                    problems.append((_lined(node, field_path, mix_check=True), text) if text
                                    else ("", part))
                continue
            problems.append((_lined(node, loc), msg))
        raise SpaceError(p, problems) from exc
    check_finite(space, p, node)  # strings such as "inf" or "nan" read into float fields
    return space


def _non_finite(value: Any, keys: tuple[str | int, ...] = ()
                ) -> Iterator[tuple[tuple[str | int, ...], float]]:
    """The field paths (keys from the top, list indices as ints) of every float in ``value``
    (the file's data or a validated model) that is NaN or infinite."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _non_finite(getattr(value, name), (*keys, name))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*keys, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*keys, index))
    elif isinstance(value, float) and not math.isfinite(value):
        yield keys, value


def check_finite(value: Any, path: str | os.PathLike[str], node: Any = None) -> None:
    """Refuse NaN and infinity anywhere in a space (an SLO, a limit, a rate, a timeout, a flag):
    none has a meaning, and each would let a trial pass every check or wait forever. Names
    each field with its line (``node``: the file's tree from ``parse``; read when None)."""
    found = list(_non_finite(value))
    if not found:
        return
    if node is None:
        node = parse(str(path), read_text(str(path)))[1]
    problems = []
    for keys, number in found:
        loc = "".join(f"[{k}]" if isinstance(k, int) else ("." if i else "") + k
                      for i, k in enumerate(keys))
        line = line_of(node, keys)
        problems.append((loc + (f" (line {line})" if line else ""),
                         f"must be a finite number, got {number}"))
    raise SpaceError(str(path), problems)


def _lined(node: Any, loc: str, *, mix_check: bool = False, always: bool = False) -> str:
    """``loc (line N)`` for a field of the mix sections (and, from the mix's checks, the
    objective it names; with ``always``, of any section), where the file has it; other
    fields keep their bare path."""
    top = loc.split(".")[0].split("[")[0]
    if not always and top not in _LINED_SECTIONS and not (
            mix_check and loc.startswith("objectives[")):
        return loc
    keys: list[str | int] = []
    for part in loc.split("."):
        name, *indices = part.replace("]", "").split("[")
        keys += [name, *(int(i) for i in indices if i.isdigit())]
    line = line_of(node, tuple(keys))
    return f"{loc} (line {line})" if line else loc


def check_model_path(space: Space, path: str | os.PathLike[str]) -> None:
    """Refuse a ``model.path`` an engine could not open: nothing there, and no hub id (or one
    the engine's offline hub cache lacks), unless ``model.build_demo`` builds it first.

    Checked before anything is written, by the command that runs the engine here: a study
    created for workers elsewhere (``--no-run``) may name a path only they hold."""
    model = space.model
    if model.build_demo or os.path.exists(model.resolved_path):
        return
    hub, offline = is_repo_id(model.path), _offline(space)
    if hub and (offline is None or candidates(model.path)):
        return
    if hub:
        why = (f"{model.path!r} is not in the Hugging Face cache ({hub_cache()}) and the engine "
               f"runs with HF_HUB_OFFLINE={offline}: download it into the cache first, or give "
               "its local folder")
    else:
        why = (f"{model.path!r} does not exist and is not a hub id (org/name): give the model's "
               "local folder or its hub id, or set model.build_demo: true to build the CPU demo "
               "model there")
    raise _refused(path, [(("model", "path"), why)])


def check_data_files(space: Space, path: str | os.PathLike[str],
                     read: Callable[[Any], str | None] | None = None) -> None:
    """Refuse a workload whose dataset or trace file is not there (paths are read from the
    current directory, ``~`` expanded), or whose stated lengths cannot fit the model's
    context, before any engine starts: every trial would fail. ``read`` (the measuring side's
    ``bench.datasets.data_problem``: this package imports no runtime module) reads each file
    there as a run would and says why it cannot be used (file, line and field), or None."""
    missing = []
    for entry in space.mix:
        data = getattr(entry.workload.prompts, "path", None)
        where = (("workloads", entry.name, "workload") if space.is_mix else ("workload",))
        if data is None:
            continue
        if os.path.isfile(found := os.path.expanduser(data)):
            problem = read(entry.workload) if read is not None else None
            if problem:
                missing.append(((*where, "prompts", "path"), problem))
            continue
        what = "is a folder, not a file" if os.path.isdir(found) \
            else f"does not exist (relative paths are read from {os.getcwd()})"
        missing.append(((*where, "prompts", "path"), f"{data!r} {what}"))
    missing += _length_problems(space)
    if missing:
        raise _refused(path, missing)


def _length_problems(space: Space) -> list[tuple[tuple[str, ...], str]]:
    """Synthetic prompts, or a stated output length, that cannot fit ``model.max_model_len``:
    the engine would refuse every request (a shared-prefix run refuses itself once started)."""
    limit = space.model.max_model_len
    context = f"exceed model.max_model_len {limit}"
    problems: list[tuple[tuple[str, ...], str]] = []
    for entry in space.mix:
        where = (("workloads", entry.name, "workload") if space.is_mix else ("workload",))
        prompts = entry.workload.prompts
        kind = prompts.kind
        if kind == "random" and prompts.input_tokens + prompts.output_tokens > limit:
            problems.append(((*where, "prompts", "output_tokens"),
                             f"input_tokens + output_tokens ({prompts.input_tokens} + "
                             f"{prompts.output_tokens}) {context}"))
        elif kind == "shared_prefix" and (
                prompts.prefix_tokens + prompts.suffix_tokens + prompts.output_tokens > limit):
            problems.append(((*where, "prompts", "prefix_tokens"),
                             "prefix_tokens + suffix_tokens + output_tokens "
                             f"({prompts.prefix_tokens} + {prompts.suffix_tokens} + "
                             f"{prompts.output_tokens}) {context}"))
        elif kind in ("jsonl", "chat", "sharegpt"):
            output = prompts.output_tokens
            if isinstance(output, int) and output >= limit:
                problems.append(((*where, "prompts", "output_tokens"),
                                 f"output_tokens {output} leaves no room for a prompt in "
                                 f"model.max_model_len {limit}"))
    return problems


def _refused(path: str | os.PathLike[str], problems: list[tuple[tuple[str, ...], str]]
             ) -> SpaceError:
    """A SpaceError for fields of the file at ``path``, each named with its line."""
    p = str(path)
    node = parse(p, read_text(p))[1]
    named = []
    for keys, why in problems:
        line = line_of(node, keys)
        named.append((".".join(keys) + (f" (line {line})" if line else ""), why))
    return SpaceError(p, named)


def _offline(space: Space) -> str | None:
    """The engine's HF_HUB_OFFLINE when it is set to a true value (its env wins over ours)."""
    value = space.engine.env.get("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", ""))
    return value if value.strip().upper() in {"1", "ON", "YES", "TRUE"} else None
