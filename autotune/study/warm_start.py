"""Warm start: seed a new study with the Pareto set of an earlier one.

``autotune study start --warm-start OTHER`` reads OTHER's finished trials from autotune's
tables through a ``Catalog``, re-scores them under the *new* space (its objectives, SLOs,
error-rate, cost and quality bounds: the stored metrics are the same, the verdict may differ),
takes the feasible Pareto set, maps each configuration into the new space and hands the result
to ``StudyRunner(warm_start=)``, which enqueues it right after the vLLM-default trial.

Results only transfer between like and like, so OTHER must be on the same hardware class (CPU,
or the same GPU model) and the same model family (``model_type``/``architectures`` of the
checkpoints' config.json when both can be read, else the checkpoint names); a mismatch is a
:class:`WarmStartError` unless forced. Everything here only reads: a refused warm start leaves
no trace in either storage.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy.engine import make_url

from autotune.errors import AutotuneError
from autotune.model import find_model_config
from autotune.scoring import is_feasible, objective_values, pareto_indices, violations
from autotune.space import (
    KNOWN_PARAMETERS,
    Configuration,
    ParameterSpec,
    Space,
    is_active,
    nearest_allowed,
    parameter_info,
)
from autotune.store.connection import is_sqlite, sqlite_path
from autotune.store.values import StudyView, TrialView

if TYPE_CHECKING:
    from autotune.store import Catalog

# Tolerance for "this float sits on the range's step" (values went through JSON).
_STEP_TOLERANCE = 1e-6


class WarmStartError(AutotuneError):
    """The earlier study cannot seed this one (unknown, or another model/hardware)."""

    exit_code = 2


# --------------------------------------------------------------------------- compatibility


@dataclass(frozen=True)
class HardwareClass:
    """``cpu``, ``gpu`` (with its model names) or ``unknown`` (an unrecognised description)."""

    kind: str
    gpus: tuple[str, ...] = ()
    description: str = ""

    def __str__(self) -> str:
        if self.kind == "gpu":
            return f"GPU ({', '.join(self.gpus)})"
        if self.kind == "cpu":
            return "CPU"
        return repr(self.description or "<not recorded>")


_GPU_DESCRIPTION = re.compile(r"\bGPUs?\s*\((?P<names>[^)]*)\)")


def hardware_class(description: str) -> HardwareClass:
    """The class of a device pool's description (``CpuSlotPool``/``NvmlGpuPool.describe``)."""
    text = description.strip()
    match = _GPU_DESCRIPTION.search(text)
    if match:
        names = sorted({n.strip() for n in match.group("names").split(",") if n.strip()})
        return HardwareClass("gpu", tuple(names), text)
    if re.match(r"CPU\b", text, re.IGNORECASE):
        return HardwareClass("cpu", (), text)
    return HardwareClass("unknown", (), text)


def same_hardware(a: HardwareClass, b: HardwareClass) -> bool:
    """CPU with CPU; GPUs of the same model(s), whatever their count."""
    if a.kind == "unknown" or b.kind == "unknown":
        return a.description == b.description
    return a.kind == b.kind and a.gpus == b.gpus


@dataclass(frozen=True)
class ModelFamily:
    """What a checkpoint is: its config.json's ``model_type``/``architectures`` if readable."""

    name: str
    model_type: str | None = None
    architectures: tuple[str, ...] = ()
    config_path: str | None = None

    @property
    def known(self) -> bool:
        return bool(self.model_type or self.architectures)

    def __str__(self) -> str:
        if self.known:
            archs = f" ({', '.join(self.architectures)})" if self.architectures else ""
            return f"model_type {self.model_type or '?'}{archs} from {self.config_path}"
        return f"model {self.name!r} (no readable config.json)"


def model_family(model: str) -> ModelFamily:
    found = find_model_config(model)
    if found is not None:
        archs = found.config.get("architectures") or []
        return ModelFamily(
            name=model,
            model_type=found.config.get("model_type") or None,
            architectures=tuple(str(a) for a in archs) if isinstance(archs, list) else (),
            config_path=str(found.path),
        )
    return ModelFamily(name=model)


def _bare_name(model: str) -> str:
    return Path(os.path.expanduser(model).rstrip("/")).name.lower()


def same_family(a: ModelFamily, b: ModelFamily) -> bool:
    """Same ``model_type`` and a shared architecture when both configs are readable; else the
    same checkpoint name (its last path component, so a hub id matches its local copy)."""
    if a.known and b.known:
        if a.model_type and b.model_type and a.model_type != b.model_type:
            return False
        if a.architectures and b.architectures:
            return bool(set(a.architectures) & set(b.architectures))
        return bool(a.model_type and a.model_type == b.model_type)
    return _bare_name(a.name) == _bare_name(b.name)


def mismatches(source: StudyView, *, model: str, hardware: str) -> list[str]:
    """What differs between the earlier study and the new one (empty: compatible)."""
    found = []
    theirs_hw, ours_hw = hardware_class(source.hardware), hardware_class(hardware)
    if not same_hardware(theirs_hw, ours_hw):
        found.append(f"hardware: study {source.name!r} ran on {theirs_hw}, this study runs on "
                     f"{ours_hw}")
    theirs_model, ours_model = model_family(source.model), model_family(model)
    if not same_family(theirs_model, ours_model):
        found.append(f"model family: study {source.name!r} tuned {theirs_model}, this study "
                     f"tunes {ours_model}")
    return found


# --------------------------------------------------------------------------- storage


def _has_tables(catalog: Catalog) -> bool:
    """Whether autotune's tables are there, without creating a missing SQLite file (opening
    one to ask would create it)."""
    if is_sqlite(catalog.url):
        path = sqlite_path(catalog.url)
        if path is None or not path.is_file():
            return False
    return catalog.has_schema()


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def find_study(catalog: Catalog, name: str) -> StudyView | None:
    """The study's record, or None (never creates the storage)."""
    if not _has_tables(catalog):
        return None
    return catalog.get_study(name)


def _unknown_study(catalog: Catalog, name: str) -> WarmStartError:
    names = [s.name for s in catalog.list_studies()] if _has_tables(catalog) else []
    there = (f"the studies there: {', '.join(names)}" if names
             else "it holds no autotune study")
    return WarmStartError(
        f"--warm-start {name}: no study named {name!r} in {shown_url(catalog.url)}; {there} "
        "(give the storage of the earlier study with --warm-start-storage URL)"
    )


# --------------------------------------------------------------------------- mapping


def _same_value(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1 (JSON round trips keep both types)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def fit_value(name: str, spec: ParameterSpec, value: Any) -> tuple[Any, str | None]:
    """``value`` as the new space holds it, or a reason why it is outside the space."""
    if spec.choices is not None:
        for choice in spec.choices:
            if _same_value(choice, value):
                return choice, None
        return None, f"{name}={value!r} is not one of its choices {spec.choices}"
    assert spec.low is not None and spec.high is not None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"{name}={value!r} is not a number"
    if not spec.low - _STEP_TOLERANCE <= value <= spec.high + _STEP_TOLERANCE:
        return None, f"{name}={value:g} is outside its range {spec.low:g}..{spec.high:g}"
    if spec.step:
        k = (value - spec.low) / spec.step
        if abs(k - round(k)) > _STEP_TOLERANCE:
            return None, f"{name}={value:g} is not on its step {spec.step:g} from {spec.low:g}"
    integer = spec.type == "int" or parameter_info(name, spec).kind == "int"
    if integer:
        if not float(value).is_integer():
            return None, f"{name}={value!r} is not an integer"
        return int(value), None
    return float(value), None


def default_value(spec: ParameterSpec, name: str) -> Any:
    """The new space's default for one parameter, chosen as ``Space.default_params`` does."""
    value = spec.default if spec.default is not None else parameter_info(name, spec).default
    return nearest_allowed(spec, value)


def fixed_flags(space_yaml: str) -> dict[str, Any]:
    """Parameters an earlier space fixed in ``engine.flags`` (name with underscores → value)."""
    try:
        data = yaml.safe_load(space_yaml or "") or {}
        flags = data.get("engine", {}).get("flags", {}) or {}
    except (yaml.YAMLError, AttributeError):
        return {}
    if not isinstance(flags, dict):
        return {}
    return {str(k).replace("-", "_"): v for k, v in flags.items()
            if str(k).replace("-", "_") in KNOWN_PARAMETERS}


def map_params(
    space: Space, params: Mapping[str, Any], fixed: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """One earlier configuration in the new space: (params, None) or (None, reason).

    Parameters the new space does not sweep are dropped; ones it sweeps but the configuration
    lacks take the value the earlier study fixed in ``engine.flags`` if any, else the new
    space's default; a parameter whose ``when`` does not hold is left out."""
    fixed = fixed or {}
    mapped: dict[str, Any] = {}
    for name in space.ordered_parameters():
        if not is_active(space, name, mapped):
            continue
        spec = space.parameters[name]
        if name in params:
            value = params[name]
        elif name in fixed:
            value = fixed[name]
        else:
            mapped[name] = default_value(spec, name)
            continue
        fitted, problem = fit_value(name, spec, value)
        if problem is not None:
            return None, problem
        mapped[name] = fitted
    return mapped, None


# --------------------------------------------------------------------------- the plan


@dataclass
class Seed:
    """One configuration to enqueue, and where it came from."""

    source_trial: int
    params: dict[str, Any]
    values: list[float]


@dataclass
class Skipped:
    source_trial: int
    params: dict[str, Any]
    reason: str


@dataclass
class WarmStart:
    """What a warm start will enqueue, what it left out and why."""

    source: str
    storage: str
    complete: int = 0
    feasible: int = 0
    pareto: int = 0
    seeds: list[Seed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def configurations(self) -> list[dict[str, Any]]:
        return [seed.params for seed in self.seeds]


def _missing_metrics(space: Space, trials: list[TrialView]) -> tuple[list[str], list[str]]:
    """(objective metrics, constraint metrics) of the new space that some trials lack."""
    constraints = violations(space, {})  # every constraint key is the metric it bounds
    objectives = [o.metric for o in space.objectives]
    lacking_obj = [m for m in objectives if any(m not in t.metrics for t in trials)]
    lacking_con = [m for m in constraints if any(m not in t.metrics for t in trials)]
    return lacking_obj, lacking_con


def plan(
    space: Space,
    *,
    source: str,
    catalog: Catalog,
    model: str,
    hardware: str,
    force: bool = False,
) -> WarmStart:
    """Read the earlier study ``source`` in ``catalog`` and choose the configurations to enqueue.

    Raises WarmStartError when the study is unknown, or on another hardware class or model
    family (unless ``force``: then each difference becomes a warning)."""
    record = find_study(catalog, source)
    if record is None:
        raise _unknown_study(catalog, source)
    problems = mismatches(record, model=model, hardware=hardware)
    if problems and not force:
        raise WarmStartError(
            f"--warm-start {source}: its results do not transfer to this study:\n  "
            + "\n  ".join(problems)
            + "\nuse an earlier study of the same model family on the same hardware class, "
            "or pass --warm-start-any to use it anyway"
        )
    result = WarmStart(source=source, storage=catalog.url, warnings=problems)
    trials = [t for t in catalog.list_trials(source) if t.state == "complete"]
    result.complete = len(trials)
    lacking_obj, lacking_con = _missing_metrics(space, trials)
    for metric in lacking_obj:
        count = sum(metric not in t.metrics for t in trials)
        result.notes.append(f"objective {metric} was not measured in {count} of the "
                            f"{len(trials)} complete trial(s) of {source}: they are left out")
    for metric in lacking_con:
        count = sum(metric not in t.metrics for t in trials)
        result.notes.append(f"constraint {metric} was not measured in {count} of the "
                            f"{len(trials)} complete trial(s) of {source}: not checked there")
    scored: list[tuple[TrialView, list[float]]] = []
    for t in trials:
        if any(o.metric not in t.metrics for o in space.objectives):
            continue
        constraints = {k: v for k, v in violations(space, t.metrics).items() if k in t.metrics}
        if is_feasible(constraints):
            scored.append((t, objective_values(space, t.metrics)))
    result.feasible = len(scored)
    front = [scored[i] for i in pareto_indices([v for _, v in scored], space.directions)]
    result.pareto = len(front)
    # Best first by the first objective, so a short budget still gets the strongest seeds.
    sign = 1.0 if space.directions[0] == "minimize" else -1.0
    front.sort(key=lambda tv: (sign * tv[1][0], tv[0].number))
    fixed = fixed_flags(record.space_yaml)
    seen = {Configuration(space.default_params()).key(): "the vLLM defaults (the first trial)"}
    for t, values in front:
        if t.is_default:
            result.notes.append(f"trial {t.number} of {source} (vLLM defaults) is on its front: "
                                "the new study's first trial already runs the defaults")
            continue
        mapped, problem = map_params(space, t.params, fixed)
        if mapped is None:
            result.skipped.append(Skipped(t.number, dict(t.params), problem or ""))
            continue
        key = Configuration(mapped).key()
        if key in seen:
            result.skipped.append(Skipped(t.number, dict(t.params),
                                          f"in this space it is the same as {seen[key]}"))
            continue
        seen[key] = f"trial {t.number}'s configuration"
        result.seeds.append(Seed(t.number, mapped, values))
    return result
