"""How a study searches: the screen, auto's model-based proposer, local search, and which
Optuna sampler backs them (``search.sampler`` in the space file).

Trial 1 is the engine-default trial. Then, at any budget (``search.screen``), the *screen*
(:func:`screen_step`): each parameter moved one step from the defaults (:func:`neighbours`), in
the space file's order, then its centre, the defaults' nominal values as explicit flags (the
engine's own defaults need not be the nominal ones), up to half the budget.

After the screen, ``auto`` (:func:`uses_model`) proposes every trial itself: a Gaussian process
per objective over the encoded configurations (:class:`Surrogate`: ordered scales as positions
on their (log) scale, labels one-hot, conditional parameters with an inactive column) ranks the
unmeasured candidates (the whole space when it is enumerable, :func:`all_configurations`; else
sampled ones and the front's neighbours) by expected hypervolume improvement over the measured
front times the chance of meeting the SLOs, among those the crash model would not skip. Every
other trial the candidates are the front-local moves (:func:`front_moves`: one or two
parameters from a front configuration). A measured or running configuration is never proposed.

``auto``'s Optuna sampler (asked only when the model has nothing to propose, e.g. a sampled
space whose candidates are all predicted to fail) and a named ``search.sampler``:

- a budget past :data:`NSGA2_FROM_TRIALS` trials: NSGA-II (a population-based method whose cost
  per suggestion stays flat however many trials there are; ``auto`` then uses no model);
- otherwise, when no parameter is conditional and at least two thirds are numeric: Optuna's
  Gaussian process (``GPSampler``);
- otherwise: multivariate TPE with grouped conditional parameters.

With a named sampler (but ``random`` and ``grid``), once :data:`LOCAL_SEARCH_AFTER` trials are
in, three trials in every four are *Pareto local search*: an unmeasured configuration one step
from a configuration on the current feasible Pareto front; the fourth is the sampler's.

TPE runs with ``constant_liar`` so that parallel slots do not pile onto one point (running
trials count as bad ones until they finish); whatever sampler runs, the study also refuses to
measure a configuration twice (``autotune.study``), so a suggestion equal to a running trial
waits for its result instead of running beside it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from autotune.space import (
    Configuration,
    ParameterSpec,
    Space,
    default_value,
    is_active,
    parameter_info,
)
from autotune.study.feasibility import Encoder

NSGA2_FROM_TRIALS = 300
LOCAL_SEARCH_AFTER = 8  # trials before local search around the front begins
LOCAL_SEARCH_CYCLE = 4  # then, of every 4 trials, 3 step from the front and 1 is the sampler's
TPE_STARTUP_TRIALS = 8
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
    (0: no screen): one per parameter that can move, at most half the budget, at any budget.
    The screen is what a model needs first (every parameter's effect near the defaults) and
    costs one trial per parameter however large the space is."""
    if not space.search.screen or not _guided(space):
        return 0
    defaults = space.default_params()
    movable = sum(1 for name in defaults if _moves(space, defaults, name))
    return min(1 + movable, (budget - 1) // 2)


def screen_step(
    space: Space, known: Container[str], seed: int | None
) -> dict[str, Any] | None:
    """The next screening configuration: the defaults with the first parameter (in the space
    file's order) that no ``known`` configuration has moved yet moved one step (which step,
    when there are two, by ``seed``). Then the screen's centre: the defaults' nominal values
    as explicit flags (the engine-default trial passes none, and the engine's own defaults
    need not be the nominal ones, so the steps deserve a measured centre; last, so that a
    small budget screens parameters first). None when all of them are known."""
    defaults = space.default_params()
    for name in defaults:
        steps = _moves(space, defaults, name)
        if not steps or any(Configuration(p).key() in known for p in steps):
            continue
        return random.Random(f"{seed}:screen:{name}").choice(steps)
    if Configuration(defaults).key() not in known:
        return defaults
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


# --- the model-based proposer (``auto``) -------------------------------------------------------

ENUMERATE_UP_TO = 4096  # configurations; a larger space is searched over sampled candidates
SAMPLED_CANDIDATES = 1024  # random candidates per proposal when the space is not enumerated
MC_SAMPLES = 64  # posterior draws per candidate for the expected hypervolume improvement
MODEL_MIN_POINTS = 2  # complete measurements before the model proposes


def uses_model(space: Space) -> bool:
    """Whether the study's own model proposes the trials after the screen: ``auto``, unless the
    budget calls for a population method (NSGA-II). A named sampler is used as named."""
    return space.search.sampler == "auto" and choose_sampler(space).kind != "nsga2"


def _values_of(name: str, spec: ParameterSpec) -> list[Any] | None:
    """Every value a parameter can take, or None for a continuous range."""
    if spec.choices is not None:
        return list(spec.choices)
    assert spec.low is not None and spec.high is not None
    integral = parameter_info(name, spec).kind == "int" or spec.type == "int"
    if spec.step is None and not integral:
        return None
    if spec.log and spec.step is None:
        low, high = int(spec.low), int(spec.high)
        powers = [2**k for k in range(64) if low < 2**k < high]
        return [low, *powers, high] if high > low else [low]
    step = spec.step or 1
    count = int(round((spec.high - spec.low) / step)) + 1
    if count > ENUMERATE_UP_TO:
        return None
    return [int(round(spec.low + i * step)) if integral else spec.low + i * step
            for i in range(count)]


def all_configurations(space: Space, limit: int = ENUMERATE_UP_TO) -> list[dict[str, Any]] | None:
    """Every configuration of the space (``when`` conditions honoured), or None when a
    parameter is continuous or there are more than ``limit``."""
    values = {name: _values_of(name, spec) for name, spec in space.parameters.items()}
    if any(v is None for v in values.values()):
        return None
    partial: list[dict[str, Any]] = [{}]
    for name in space.ordered_parameters():
        grown: list[dict[str, Any]] = []
        for params in partial:
            if not is_active(space, name, params):
                grown.append(params)
                continue
            grown += [{**params, name: v} for v in values[name] or ()]
            if len(grown) > limit:
                return None
        partial = grown
    return partial


def random_configurations(space: Space, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` configurations drawn uniformly per parameter (log ranges on their scale)."""
    out = []
    for _ in range(count):
        params: dict[str, Any] = {}
        for name in space.ordered_parameters():
            if not is_active(space, name, params):
                continue
            spec = space.parameters[name]
            values = _values_of(name, spec)
            if values is not None:
                params[name] = rng.choice(values)
                continue
            assert spec.low is not None and spec.high is not None
            if spec.log:
                params[name] = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
            else:
                params[name] = rng.uniform(spec.low, spec.high)
        out.append(params)
    return out


def front_moves(
    space: Space, front: Sequence[Mapping[str, Any]], known: Container[str]
) -> list[dict[str, Any]]:
    """Unmeasured configurations one or two steps from a front configuration: one parameter
    moved one step, or two moved one step each (or one moved two steps). A front point whose
    one-step neighbours are all dominated can still have a better one two steps away."""
    seen: dict[str, dict[str, Any]] = {}
    for params in front:
        origin = Configuration(params).key()
        first = neighbours(space, params)
        for other in [*first, *(p for q in first for p in neighbours(space, q))]:
            key = Configuration(other).key()
            if key != origin and key not in known:
                seen.setdefault(key, other)
    return list(seen.values())


@dataclass(frozen=True)
class Point:
    """One measured configuration as the model sees it: ``values`` None when the engine failed
    because of the configuration (it teaches feasibility only)."""

    params: Mapping[str, Any]
    values: Sequence[float] | None
    feasible: bool
    default: bool = False  # the engine-default trial: on the front, but no evidence (below)


class Surrogate:
    """A Gaussian process per objective over the encoded configurations (ordered scales as
    positions on their (log) scale, labels one-hot, an inactive column per conditional
    parameter; every column scaled to [0, 1]), plus one for the chance of meeting the SLOs when
    some measured configuration missed them. Candidates are ranked by their expected
    hypervolume improvement over the measured feasible front (Monte Carlo over the posterior)
    times that chance.

    The engine-default trial passes no flag, so what it measured is vLLM's own defaults, which
    need not be the nominal values the space writes for them: it counts on the front (a
    candidate must beat it) but teaches the model nothing about its nominal twin or the
    twin's neighbours."""

    def __init__(self, space: Space, points: Sequence[Point], seed: int | None) -> None:
        self.space = space
        self.seed = seed or 0
        self.encoder = Encoder(space)
        signs = np.array([1.0 if d == "maximize" else -1.0 for d in space.directions])
        baseline = [p for p in points if p.default and p.values is not None and p.feasible]
        points = [p for p in points if not p.default]
        # Objectives are modelled on the configurations that met the SLOs (a missed SLO reads
        # as a capacity of 0, a verdict rather than a level of the objective); the chance of
        # meeting them has a model of its own, trained on every measured configuration.
        complete = [p for p in points if p.values is not None and p.feasible]
        self.ready = len({Configuration(p.params).key() for p in complete}) >= MODEL_MIN_POINTS
        if not self.ready:
            return
        raw = np.array([list(p.values or ()) for p in complete], dtype=float)
        self.logs = np.all(raw > 0, axis=0)  # a positive metric is modelled on its log scale
        oriented = self._oriented(raw, signs)
        self.mean = oriented.mean(axis=0)
        self.scale = np.where(oriented.std(axis=0) > 0, oriented.std(axis=0), 1.0)
        y = (oriented - self.mean) / self.scale
        rows = np.array([self.encoder.row(p.params) for p in points], dtype=float)
        self.low, span = rows.min(axis=0), np.ptp(rows, axis=0)
        self.span = np.where(span > 0, span, 1.0)
        x_all = self._scaled(rows)
        x = x_all[[i for i, p in enumerate(points) if p.values is not None and p.feasible]]
        self.models = [self._fit(x, y[:, j]) for j in range(y.shape[1])]
        # The improvement is measured as the study's goal is: the hypervolume of the measured
        # values (not their log), above the space's own reference point (reference_point).
        self.signs = signs
        known = raw * signs
        if baseline:
            base = np.array([list(p.values or ()) for p in baseline], dtype=float)
            known = np.vstack([known, base * signs])
        self.front = known[_nondominated(known)]
        self.reference = np.array(reference_point(space, raw)) * signs
        labels = np.array([1.0 if p.feasible and p.values is not None else 0.0 for p in points])
        self.feasibility = _SloChance(x_all, labels) if 0 < labels.sum() < len(labels) else None

    def _oriented(self, raw: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """Values on the modelled scale (log where positive), every objective maximised."""
        logged = np.log(np.where(raw > 0, raw, 1e-12))
        return np.where(self.logs, logged, raw) * signs

    def _scaled(self, rows: np.ndarray) -> np.ndarray:
        # a label change (two one-hot columns) is as far as one whole ordered scale
        weights = [math.sqrt(0.5) if isinstance(what, tuple) else 1.0
                   for _, what in self.encoder.columns]
        return (rows - self.low) / self.span * np.array(weights)

    def _fit(self, x: np.ndarray, y: np.ndarray) -> _GaussianProcess:
        return _GaussianProcess(x, y)

    def scores(self, candidates: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Per candidate: expected hypervolume improvement × P(meets the SLOs), plus a tie
        breaker that prefers the most uncertain when nothing is expected to improve."""
        x = self._scaled(np.array([self.encoder.row(c) for c in candidates], dtype=float))
        draws = np.random.default_rng(self.seed).standard_normal((MC_SAMPLES, len(self.models)))
        mu = np.empty((len(x), len(self.models)))
        sd = np.empty_like(mu)
        for j, model in enumerate(self.models):
            mu[:, j], sd[:, j] = model.predict(x)
        drawn = (mu[:, None, :] + sd[:, None, :] * draws[None, :, :]) * self.scale + self.mean
        samples = np.where(self.logs, np.exp(drawn * self.signs) * self.signs, drawn)
        gain = _hv_improvement(samples.reshape(-1, mu.shape[1]), self.front, self.reference)
        ehvi = gain.reshape(len(x), MC_SAMPLES).mean(axis=1)
        chance = np.ones(len(x)) if self.feasibility is None else self.feasibility.predict(x)
        return (ehvi + 1e-6 * sd.mean(axis=1)) * chance


SLO_PRIOR_WEIGHT = 1.0  # pseudo-observations at the study's share of configurations that met
SLO_LENGTH_SCALE = 0.4  # on features scaled to [0, 1]: one step of a 3-value scale weighs 0.39


class _SloChance:
    """The chance that a configuration meets the SLOs: the share of measured configurations
    that met them, weighted by their kernel similarity to it, shrunk towards the study's
    overall share by :data:`SLO_PRIOR_WEIGHT` pseudo-observations (a Beta-Bernoulli estimate
    with kernel-weighted counts). One miss can lower its own configuration's chance to about
    half of the overall share, never to zero (a single measurement that missed, among
    neighbours that met the SLOs, may be a noisy run); several misses close together close
    their region."""

    def __init__(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.x, self.labels = x, labels
        self.prior = float(labels.mean())

    def predict(self, x: np.ndarray) -> np.ndarray:
        weights = _matern52(x, self.x, SLO_LENGTH_SCALE)
        met = weights @ self.labels + SLO_PRIOR_WEIGHT * self.prior
        return np.clip(met / (weights.sum(axis=1) + SLO_PRIOR_WEIGHT), 0.02, 1.0)


LENGTH_SCALES = (0.15, 0.25, 0.4, 0.6, 1.0, 1.6, 2.5)  # on features scaled to [0, 1]
NOISE_RATIOS = (1e-3, 0.01, 0.05, 0.2, 0.5)  # observation noise / signal variance


class _GaussianProcess:
    """A Gaussian process with a Matérn 5/2 kernel over scaled features: length scale and
    noise by the marginal likelihood over a small fixed grid (the signal variance profiled
    out), so a fit costs a few Cholesky factorisations, not an optimiser run. ``predict``
    gives the mean and the standard deviation of a new measurement (noise included)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from scipy.linalg import cho_factor, cho_solve

        self.x = x
        n = len(y)
        best: tuple[float, Any, np.ndarray, float, float, float] | None = None
        for length in LENGTH_SCALES:
            corr = _matern52(x, x, length)
            for noise in NOISE_RATIOS:
                factor = cho_factor(corr + (noise + 1e-9) * np.eye(n), lower=True)
                alpha = cho_solve(factor, y)
                signal = max(float(y @ alpha) / n, 1e-12)
                nll = 0.5 * n * math.log(signal) + float(np.log(np.diag(factor[0])).sum())
                if best is None or nll < best[0]:
                    best = (nll, factor, alpha, length, noise, signal)
        assert best is not None
        _, self.factor, self.alpha, self.length, self.noise, self.signal = best

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.linalg import solve_triangular

        cross = _matern52(x, self.x, self.length)
        mean = cross @ self.alpha
        v = solve_triangular(self.factor[0], cross.T, lower=True)
        var = self.signal * (1.0 + self.noise - (v * v).sum(axis=0))
        return mean, np.sqrt(np.maximum(var, 1e-12))


def _matern52(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    d = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2), 0.0)) / length
    root5 = math.sqrt(5.0) * d
    return (1.0 + root5 + root5 * root5 / 3.0) * np.exp(-root5)


def reference_point(space: Space, values: np.ndarray) -> list[float]:
    """The hypervolume's reference point, per objective: its SLO limit when the metric has
    one, 0 for a maximised metric, else 1.1x the worst of ``values`` (rows of objective values)."""
    ref = []
    for j, objective in enumerate(space.objectives):
        if objective.metric in space.slos:
            ref.append(float(space.slos[objective.metric]))
        elif objective.resolved_direction == "maximize":
            ref.append(0.0)
        else:
            ref.append(1.1 * float(values[:, j].max()) if len(values) else 1.0)
    return ref


def _nondominated(y: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``y`` (every column maximised) no other row dominates."""
    keep = [i for i in range(len(y))
            if not any(np.all(y[j] >= y[i]) and np.any(y[j] > y[i]) for j in range(len(y)))]
    return np.array(keep, dtype=int)


def _hv_improvement(points: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume each of ``points`` adds to ``front`` (every objective maximised, above
    ``ref``): its box above ``ref`` minus the part the front already dominates."""
    box = np.prod(np.maximum(points - ref, 0.0), axis=1)
    if len(front) == 0:
        return box
    clipped = np.maximum(np.minimum(front[None, :, :], points[:, None, :]), ref)
    if points.shape[1] == 1:
        covered = clipped[:, :, 0].max(axis=1) - ref[0]
    elif points.shape[1] == 2:
        order = np.argsort(-clipped[:, :, 0], axis=1)
        xs = np.take_along_axis(clipped[:, :, 0], order, axis=1)
        ys = np.maximum.accumulate(np.take_along_axis(clipped[:, :, 1], order, axis=1), axis=1)
        after = np.concatenate([xs[:, 1:], np.full((len(xs), 1), ref[0])], axis=1)
        covered = ((xs - after) * (ys - ref[1])).sum(axis=1)
    else:
        covered = np.array([_hv(list(map(list, c)), list(ref)) for c in clipped])
    return np.maximum(box - covered, 0.0)


def _hv(points: list[list[float]], ref: list[float]) -> float:
    """Hypervolume of ``points`` above ``ref`` (maximised; exact, slicing the last axis)."""
    points = [p for p in points if all(v > r for v, r in zip(p, ref, strict=True))]
    if not points:
        return 0.0
    if len(ref) == 1:
        return max(p[0] for p in points) - ref[0]
    points.sort(key=lambda p: -p[-1])
    total = 0.0
    for i, point in enumerate(points):
        lower = points[i + 1][-1] if i + 1 < len(points) else ref[-1]
        total += (point[-1] - lower) * _hv([p[:-1] for p in points[: i + 1]], ref[:-1])
    return total
