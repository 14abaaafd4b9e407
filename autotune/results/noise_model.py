"""What a fresh server will measure: the host's between-server noise, learnt across a study.

A trial measures its configuration on one server. Start the same configuration again and the
figures move (another core layout, another memory placement, other tenants on the host), by
more than the windows inside one run suggest. The noise model says by how much: per headline
metric, the relative spread ``sigma`` of a figure between fresh servers (the standard deviation
of its logarithm), estimated from every configuration the study measured on more than one fresh
server (its trials, and the ``confirm`` runs kept with the study), pooled, and shrunk towards a
documented prior while little is known (docs/measurement.md, "How the interval is made").

The interval for a trial is where the next fresh server's figure falls with probability
``level``: centred on the mean log figure of the configuration's ``n`` fresh-server runs so far,
``± t·sigma·sqrt(1 + 1/n)`` (Student-t on the prior's and the evidence's degrees of freedom),
widened where needed to hold the recorded figure itself.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import yaml

from autotune.bench import stats
from autotune.metrics import LOWER_BOUND_FLAG
from autotune.space import Configuration, MeasurementSpec
from autotune.store.base import FreshRun

if TYPE_CHECKING:
    from autotune.store.base import Catalog
    from autotune.store.values import TrialView


@dataclass(frozen=True)
class Prior:
    """What is assumed before a study has measured anything twice: ``sigma`` (relative spread
    between fresh servers) as if estimated on ``df`` degrees of freedom."""

    sigma: float
    df: int


# From this 2-core host (docs/measurement.md): the quickstart's pick on 6 fresh servers
# (1159, 1122, 1118, 1114, 1125, 943 tok/s) spread 0.074 in log; its defaults in two studies
# (947, 1081) 0.093. E2E p95 at a fixed concurrency follows 1/throughput; TTFT p95 is a tail
# of the queue at the start of a run and swings much more.
PRIORS: dict[str, Prior] = {
    "output_throughput": Prior(0.08, 4),
    "ttft_p95_ms": Prior(0.25, 4),
    "e2e_p95_ms": Prior(0.10, 4),
    # A load ladder's answers (spaces with ``ladder:``). Capacity is where a p95 crosses its
    # SLO between two short levels, so it inherits the tail's swing; the per-user rate there is
    # a mean (1000 / mean TPOT) and moves about as much as throughput.
    "capacity_rps": Prior(0.15, 4),
    "interactivity_at_capacity": Prior(0.10, 4),
}
FRESH_METRICS = tuple(PRIORS)


def measured_metrics(objectives: Iterable[str]) -> tuple[str, ...]:
    """What a fresh-server run keeps: ``FRESH_METRICS``, the study's objective metrics, and
    whether the capacity is only a lower bound (a mean with a bound in it is a bound)."""
    extra = [m for m in objectives if m not in FRESH_METRICS]
    return (*FRESH_METRICS, *dict.fromkeys(extra), LOWER_BOUND_FLAG)
LADDER_HEADLINE = ("capacity_rps", "interactivity_at_capacity")


def headline_metrics(metrics: Mapping[str, float]) -> tuple[str, ...]:
    """The figures a trial is judged by, which get a fresh-server interval: with a load ladder
    its answers (the main measurement there is a short warm-up run at one load, reported but
    not an answer: on the quickstart its throughput swung 228-485 tok/s over 5 fresh servers
    while capacity held within 17.6-19.9 req/s), else the main measurement's figures."""
    if "capacity_rps" in metrics:
        return LADDER_HEADLINE
    return tuple(m for m in FRESH_METRICS if m not in LADDER_HEADLINE)


@dataclass(frozen=True)
class Spread:
    """One metric's between-server spread: the prior updated with the study's evidence."""

    metric: str
    sigma: float
    df: int  # the prior's and the evidence's
    evidence_df: int  # the evidence's alone: sum over configurations of (fresh runs − 1)
    configurations: int  # configurations measured on more than one fresh server

    def basis(self) -> str:
        """What the spread rests on."""
        if not self.evidence_df:
            return "prior only, nothing measured twice yet"
        return (f"prior and {self.configurations} configuration(s) measured on several fresh "
                f"servers, {self.evidence_df} df")

    def describe(self) -> str:
        return f"±{self.sigma:.0%} between servers; {self.basis()}"


@dataclass(frozen=True)
class Interval:
    """Where a fresh server's ``metric`` falls with probability ``level``."""

    metric: str
    low: float
    high: float
    level: float
    runs: int  # fresh-server runs of this configuration it is centred on
    spread: Spread

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        return f"[{self.low:.4g}, {self.high:.4g}]"


def fit_spread(metric: str, groups: Iterable[list[float]], prior: Prior) -> Spread:
    """The posterior spread: ``sigma² = (df0·sigma0² + Σ squares) / (df0 + df)``."""
    groups = list(groups)
    squares, df = stats.pooled_log_spread(groups)
    configurations = sum(1 for g in groups if len([v for v in g if _usable(v)]) >= 2)
    sigma = math.sqrt((prior.df * prior.sigma**2 + squares) / (prior.df + df))
    return Spread(metric, sigma, prior.df + df, df, configurations)


def _usable(value: float | None) -> bool:
    """A positive figure; not one stored as null (a curve where no level held), NaN or 0."""
    return value is not None and math.isfinite(value) and value > 0


@dataclass
class NoiseModel:
    """A study's fresh-server evidence and the spread it implies, per headline metric."""

    level: float
    runs: dict[str, list[Mapping[str, float]]] = field(default_factory=dict)  # by config key
    spreads: dict[str, Spread] = field(default_factory=dict)

    @classmethod
    def fit(cls, runs: Iterable[FreshRun], *, level: float = 0.95,
            priors: Mapping[str, Prior] = PRIORS) -> NoiseModel:
        by_key: dict[str, list[Mapping[str, float]]] = {}
        for run in runs:
            by_key.setdefault(run.key, []).append(run.metrics)
        model = cls(level, by_key)
        for metric, prior in priors.items():
            groups = [[m[metric] for m in ms if _usable(m.get(metric))]
                      for ms in by_key.values()]
            model.spreads[metric] = fit_spread(metric, groups, prior)
        return model

    def interval(self, metric: str, key: str, recorded: float) -> Interval | None:
        """The interval for configuration ``key`` whose trial recorded ``recorded``; None for a
        metric without a spread or a figure that is not a positive number."""
        spread = self.spreads.get(metric)
        if spread is None or not _usable(recorded):
            return None
        values = [m[metric] for m in self.runs.get(key, []) if _usable(m.get(metric, math.nan))]
        values = values or [recorded]
        center = statistics.fmean(math.log(v) for v in values)
        low, high = stats.predictive_log_interval(center, spread.sigma, spread.df, len(values),
                                                  self.level)
        return Interval(metric, min(low, recorded), max(high, recorded), self.level,
                        len(values), spread)

    def intervals(self, record: TrialView) -> dict[str, Interval]:
        """A measured trial's interval for each headline metric it recorded."""
        if record.state != "complete":
            return {}
        key = configuration_key(record)
        found = {m: self.interval(m, key, record.metrics[m])
                 for m in headline_metrics(record.metrics) if m in record.metrics}
        return {m: i for m, i in found.items() if i is not None}


def configuration_key(record: TrialView) -> str:
    return Configuration(dict(record.params), record.is_default).key()


def trial_runs(trials: Iterable[TrialView]) -> list[FreshRun]:
    """Each measured trial as one fresh-server run (a reused trial ran no server of its own)."""
    return [
        FreshRun(configuration_key(t), {m: t.metrics[m] for m in FRESH_METRICS
                                        if m in t.metrics}, f"trial {t.number}")
        for t in trials if t.state == "complete"
    ]


def level_of(space_yaml: str) -> float:
    """The study's ``measurement.confidence`` (its default when the section is absent)."""
    try:
        raw = yaml.safe_load(space_yaml) or {}
    except yaml.YAMLError:
        raw = {}
    section = raw.get("measurement") if isinstance(raw, dict) else None
    return MeasurementSpec.model_validate(section or {}).confidence


def study_noise_model(catalog: Catalog, name: str,
                      trials: list[TrialView] | None = None) -> NoiseModel:
    """Study ``name``'s noise model: its trials and the fresh-server runs kept with it (the
    confirm stage's and ``autotune confirm``'s). ``trials``: the study's trials as the catalog
    stores them, each its own run; not a ``StudyReport``'s, whose figures are means over fresh
    servers already (counting a mean as one more run would shrink the spread)."""
    study = catalog.get_study(name)
    level = level_of(study.space_yaml) if study is not None else 0.95
    trials = catalog.list_trials(name) if trials is None else trials
    return NoiseModel.fit([*trial_runs(trials), *catalog.fresh_runs(name)], level=level)
