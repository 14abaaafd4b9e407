"""Crash learning: predict, before launch, whether a configuration's engine will fail.

Trained on the study's finished configurations: those that ran (complete, whatever their
scores) against those whose engine failed *because of the configuration*
(``FailureKind.caused_by_config``: invalid_config, out_of_memory, unsupported; host faults and
interrupted trials say nothing about it). A random
forest gives P(the engine starts and serves); a suggestion below the acceptance threshold is
skipped. The threshold adapts as SCOOT's does: it starts at 0.5, rises by 0.05 after every
configuration failure (up to 0.75: failures cost a launch, be more careful), and falls by 0.05
after every 5 successes in a row (down to 0.25: the model has been right, trust the sampler).

The model only votes once the history holds both outcomes; until then every suggestion runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.space import Space

THRESHOLD_START = 0.5
THRESHOLD_MAX = 0.75
THRESHOLD_MIN = 0.25
THRESHOLD_STEP = 0.05
SUCCESSES_TO_RELAX = 5
MIN_SAMPLES = 4


@dataclass(frozen=True)
class Observation:
    """One finished configuration, in the order it finished."""

    params: Mapping[str, Any]
    started: bool  # the engine started and served (complete), whatever the scores
    launched: bool = True  # False: rejected before launch (it moves no threshold)


@dataclass(frozen=True)
class Verdict:
    p_start: float
    threshold: float
    samples: int
    failures: int

    @property
    def skip(self) -> bool:
        return self.p_start < self.threshold

    def reason(self) -> str:
        return (
            f"predicted to fail: P(engine starts) {self.p_start:.2f} < threshold "
            f"{self.threshold:.2f} (random forest on {self.samples} finished configurations, "
            f"{self.failures} of them failed by their configuration)"
        )


def adaptive_threshold(history: Sequence[Observation]) -> float:
    """SCOOT's acceptance threshold after the launched trials of ``history``."""
    threshold, streak = THRESHOLD_START, 0
    for obs in history:
        if not obs.launched:
            continue
        if obs.started:
            streak += 1
            if streak == SUCCESSES_TO_RELAX:
                threshold, streak = max(THRESHOLD_MIN, threshold - THRESHOLD_STEP), 0
        else:
            threshold, streak = min(THRESHOLD_MAX, threshold + THRESHOLD_STEP), 0
    return round(threshold, 10)


class Encoder:
    """Parameters → a numeric row: numbers (log scale where the space is), one-hot labels,
    and an "inactive" column for conditional parameters."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.columns: list[tuple[str, Any]] = []
        for name in space.ordered_parameters():
            spec = space.parameters[name]
            if spec.when:
                self.columns.append((name, "inactive"))
            if spec.choices is not None and not spec.is_ordered:
                self.columns += [(name, ("is", choice)) for choice in spec.choices]
            else:
                self.columns.append((name, "value"))

    def _log(self, name: str) -> bool:
        spec = self.space.parameters[name]
        return spec.choices_log_scale if spec.choices is not None else spec.log

    def row(self, params: Mapping[str, Any]) -> list[float]:
        out: list[float] = []
        for name, what in self.columns:
            value = params.get(name)
            if what == "inactive":
                out.append(1.0 if value is None else 0.0)
            elif what == "value":
                if value is None:
                    out.append(0.0)
                else:
                    number = float(value)
                    out.append(math.log(number) if self._log(name) and number > 0 else number)
            else:
                out.append(1.0 if value is not None and value == what[1] else 0.0)
        return out


class FeasibilityModel:
    """Fit on a study's history, then judge suggestions (:meth:`judge`)."""

    def __init__(self, space: Space, history: Sequence[Observation], seed: int | None = 0):
        self.encoder = Encoder(space)
        self.samples = len(history)
        self.failures = sum(1 for o in history if not o.started)
        self.threshold = adaptive_threshold(history)
        self._forest: Any = None
        if self.samples >= MIN_SAMPLES and 0 < self.failures < self.samples:
            from sklearn.ensemble import RandomForestClassifier  # ~0.5 s import: only if used

            x = np.array([self.encoder.row(o.params) for o in history])
            y = np.array([1 if o.started else 0 for o in history])
            self._forest = RandomForestClassifier(
                n_estimators=64, random_state=seed, min_samples_leaf=1
            ).fit(x, y)

    @property
    def active(self) -> bool:
        return self._forest is not None

    def judge(self, params: Mapping[str, Any]) -> Verdict | None:
        """None while the model cannot vote (too little history, or only one outcome)."""
        if self._forest is None:
            return None
        classes = list(self._forest.classes_)
        proba = self._forest.predict_proba(np.array([self.encoder.row(params)]))[0]
        p_start = float(proba[classes.index(1)])
        return Verdict(p_start, self.threshold, self.samples, self.failures)
