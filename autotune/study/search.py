"""Which Optuna sampler searches a space, and why (``search.sampler`` in the space file).

``auto`` decides from the space and the budget:

- a budget past :data:`NSGA2_FROM_TRIALS` trials: NSGA-II (a population-based method whose cost
  per suggestion stays flat however many trials there are);
- otherwise, when no parameter is conditional and at least two thirds are numeric (ranges, or
  ordered numeric choices): a Gaussian process (the most sample-efficient on smooth numeric
  spaces of a few hundred trials, but it cannot model conditional parameters);
- otherwise (categorical or conditional parameters, e.g. quantization, speculative method and
  its draft length): multivariate TPE with grouped conditional parameters.

Whatever the sampler (but ``random`` and ``grid``), once :data:`LOCAL_SEARCH_AFTER` trials
are in, three trials in every four are *Pareto local search*: an unmeasured configuration one
step (:func:`neighbours`) from a configuration on the current feasible Pareto front; the fourth
is the sampler's. On a measured grid of the quickstart model this halves the trials TPE alone
needs to reach 99% of the grid's hypervolume (benchmarks/search_efficiency.py).

With a small budget (under :data:`SCREEN_BELOW_TRIALS` trials) there is no room for the
sampler to learn (TPE's first :data:`TPE_STARTUP_TRIALS` suggestions are random), so the
trials right after the default first *screen* the space: each moves one parameter one step from
the vLLM defaults (:func:`neighbours`), in the order the space file lists the parameters, up to
half the budget; the rest are the sampler's. List first the parameters you expect to matter.

TPE runs with ``constant_liar`` so that parallel slots do not pile onto one point (running
trials count as bad ones until they finish); whatever sampler runs, the study also refuses to
measure a configuration twice (``autotune.study``), so a suggestion equal to a running trial
waits for its result instead of running beside it.
"""

from __future__ import annotations

import random
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from autotune.space import (
    Configuration,
    ParameterSpec,
    Space,
    default_value,
    is_active,
    parameter_info,
)

NSGA2_FROM_TRIALS = 300
LOCAL_SEARCH_AFTER = 8  # trials before local search around the front begins
LOCAL_SEARCH_CYCLE = 4  # then, of every 4 trials, 3 step from the front and 1 is the sampler's
TPE_STARTUP_TRIALS = 8
SCREEN_BELOW_TRIALS = 16  # a smaller budget starts with a one-step screen around the defaults
GP_STARTUP_TRIALS = 8


@dataclass(frozen=True)
class SamplerChoice:
    kind: str  # tpe | gp | nsga2 | random | grid
    reason: str


def _numeric(name: str, spec: ParameterSpec) -> bool:
    if spec.choices is not None:
        return spec.is_ordered
    return parameter_info(name, spec).kind in ("int", "float")


def choose_sampler(space: Space) -> SamplerChoice:
    """The sampler ``search.sampler`` names, or the one ``auto`` picks for this space."""
    kind = space.search.sampler
    if kind != "auto":
        return SamplerChoice(kind, "set in the space file")
    params = space.parameters
    budget = space.search.trials
    if budget > NSGA2_FROM_TRIALS:
        return SamplerChoice("nsga2", f"budget of {budget} trials > {NSGA2_FROM_TRIALS}")
    conditional = [n for n, s in params.items() if s.when]
    numeric = [n for n, s in params.items() if _numeric(n, s)]
    if params and not conditional and 3 * len(numeric) >= 2 * len(params):
        return SamplerChoice(
            "gp", f"{len(numeric)} of {len(params)} parameters numeric, none conditional"
        )
    why = (
        f"conditional parameters ({', '.join(conditional)})"
        if conditional
        else f"{len(params) - len(numeric)} of {len(params)} parameters categorical"
    )
    return SamplerChoice("tpe", why)


def make_sampler(space: Space) -> optuna.samplers.BaseSampler:
    """A seeded sampler for the space (``search.seed``)."""
    seed = space.search.seed
    kind = choose_sampler(space).kind
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(grid_values(space), seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=GP_STARTUP_TRIALS, warn_independent_sampling=False
        )
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
        n_startup_trials=TPE_STARTUP_TRIALS,
    )


def grid_values(space: Space) -> dict[str, list[Any]]:
    """Every value of every parameter, for exhaustive search: choices, or stepped ranges."""
    values: dict[str, list[Any]] = {}
    for name, spec in space.parameters.items():
        if spec.choices is not None:
            values[name] = list(spec.choices)
            continue
        integral = parameter_info(name, spec).kind == "int" or spec.type == "int"
        if spec.step is None and not integral:
            raise ValueError(
                f"search.sampler grid: parameters.{name} is a continuous range; give it "
                "choices or a step"
            )
        assert spec.low is not None and spec.high is not None
        if spec.log and spec.step is None:  # a log range: its powers of two, and its ends
            low, high = int(spec.low), int(spec.high)
            powers = [2**k for k in range(64) if low < 2**k < high]
            values[name] = [low, *powers, high] if high > low else [low]
            continue
        step = spec.step or 1
        count = int(round((spec.high - spec.low) / step)) + 1
        if count > 64:
            raise ValueError(
                f"search.sampler grid: parameters.{name} has {count} values; give it choices "
                "(at most 64 values per parameter)"
            )
        is_int = parameter_info(name, spec).kind == "int" or spec.type == "int"
        values[name] = [
            int(round(spec.low + i * step)) if is_int else spec.low + i * step
            for i in range(count)
        ]
    return values


def complete_params(space: Space, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` made consistent with the space's ``when`` conditions: inactive parameters
    dropped, newly active ones set to their default."""
    defaults = space.default_params()
    out: dict[str, Any] = {}
    for name in space.ordered_parameters():
        if not is_active(space, name, out):
            continue
        if name in params:
            out[name] = params[name]
        else:
            out[name] = defaults.get(name, default_value(space, name))
    return out


def neighbours(space: Space, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Configurations one step away: another label, the next ordered choice, or a range value
    doubled/halved (log) or moved by a step (an eighth of the range without one)."""
    out = [p for name in params for p in _moves(space, params, name)]
    unique = {Configuration(p).key(): p for p in out}
    return list(unique.values())


def _moves(space: Space, params: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """``params`` with parameter ``name`` moved one step (each way it can move)."""
    value = params[name]
    return [complete_params(space, {**params, name: other})
            for other in _steps(name, space.parameters[name], value) if other != value]


def _steps(name: str, spec: ParameterSpec, value: Any) -> list[Any]:
    if spec.choices is not None and spec.is_ordered:
        values = sorted(spec.choices)
        i = values.index(value) if value in values else 0
        return [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
    if spec.choices is not None:
        return [c for c in spec.choices if c != value]
    assert spec.low is not None and spec.high is not None
    is_int = parameter_info(name, spec).kind == "int" or spec.type == "int"
    if spec.log:
        moves = [float(value) * 2, float(value) / 2]
    else:
        step = spec.step or (spec.high - spec.low) / 8
        moves = [float(value) + step, float(value) - step]
    clipped = [min(max(m, spec.low), spec.high) for m in moves]
    return [int(round(m)) if is_int else m for m in clipped]


def screen_size(space: Space, budget: int) -> int:
    """How many trials after the default screen the space, for a study of ``budget`` trials
    (0: no screen)."""
    if not space.search.screen or budget >= SCREEN_BELOW_TRIALS or not _guided(space):
        return 0
    return min(len(space.default_params()), (budget - 1) // 2)


def screen_step(
    space: Space, known: Container[str], seed: int | None
) -> dict[str, Any] | None:
    """The next screening configuration: the defaults with the first parameter (in the space
    file's order) that no ``known`` configuration has moved yet moved one step (which step,
    when there are two, by ``seed``); None when every parameter has been moved."""
    defaults = space.default_params()
    for name in defaults:
        steps = _moves(space, defaults, name)
        if not steps or any(Configuration(p).key() in known for p in steps):
            continue
        return random.Random(f"{seed}:screen:{name}").choice(steps)
    return None


def _guided(space: Space) -> bool:
    """Whether the study's own steps (screen, local search) join the sampler's: not for the
    ``random`` and ``grid`` samplers, whose point is to be exactly what they say."""
    return choose_sampler(space).kind not in ("random", "grid")


def uses_local_search(space: Space) -> bool:
    return space.search.local_search and _guided(space)


def front_neighbours(
    space: Space, front: Sequence[Mapping[str, Any]], known: Container[str]
) -> list[dict[str, Any]]:
    """Configurations one step from any of ``front`` (e.g. the Pareto-optimal ones) that are
    not ``known`` (measured or running; keys as ``Configuration.key()``)."""
    seen: dict[str, dict[str, Any]] = {}
    for params in front:
        for other in neighbours(space, params):
            key = Configuration(other).key()
            if key not in known:
                seen.setdefault(key, other)
    return list(seen.values())
