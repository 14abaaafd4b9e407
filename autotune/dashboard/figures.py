"""The figures Optuna draws itself, as Plotly JSON for the study page.

Hypervolume history (several objectives) comes from ``optuna.visualization`` on the study as
stored: its feasibility is the SLO constraints autotune told Optuna, so it matches ours. Parameter
importances are computed on the trials that were really measured: a configuration that crashed
is told to Optuna as the worst possible values, which would otherwise drown every other effect.
One ``optuna.Study`` from the catalog is kept per study, so Optuna's cache reads only new
trials.
"""

from __future__ import annotations

import json
import threading
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from autotune.dashboard.data import Snapshot, number

if TYPE_CHECKING:
    from autotune.store import Catalog

MIN_TRIALS_FOR_IMPORTANCE = 2
# A legend in one row above the plot area, never on it (the page's columns are narrow; Plotly
# grows the top margin to fit it); the margins the page sets leave room for the axis labels.
LEGEND_ABOVE = {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"}
MARGIN = {"l": 60, "r": 20, "t": 10, "b": 50}
MARGIN_WITH_LEGEND = {**MARGIN, "t": 40}


class OptunaFigures:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._studies: dict[str, optuna.Study] = {}
        self._lock = threading.Lock()

    def _study(self, name: str) -> optuna.Study:
        with self._lock:
            if name not in self._studies:
                optuna.logging.set_verbosity(optuna.logging.WARNING)
                self._studies[name] = self.catalog.optuna_study(name)
            return self._studies[name]

    def compute(self, snapshot: Snapshot) -> dict[str, Any]:
        report = snapshot.report
        notes: list[str] = []
        try:
            study = self._study(report.name)
        except KeyError:
            return {"version": snapshot.version, "history": best_so_far(snapshot),
                    "importance": None,
                    "notes": ["Optuna has no study of this name in the storage"]}
        measured = {t.number for t in report.trials if t.state == "complete"}
        trials = [t for t in study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
                  if t.number in measured]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = (hypervolume_history(study, snapshot) if len(report.objectives) > 1
                       else best_so_far(snapshot))
            importance = None
            if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
                notes.append("parameter importance needs at least "
                             f"{MIN_TRIALS_FOR_IMPORTANCE} measured trials")
            else:
                try:
                    importance = param_importances(study, trials, report.metrics)
                except (ValueError, RuntimeError) as exc:
                    notes.append(f"parameter importance: {exc}")
        if history is None:
            notes.append("the history needs at least one feasible trial")
        return {"version": snapshot.version, "history": history, "importance": importance,
                "notes": notes}


def _figure(fig: Any) -> dict[str, Any]:
    return json.loads(fig.to_json())


def reference_point(snapshot: Snapshot) -> list[float] | None:
    """Just beyond the worst feasible value of each objective."""
    report = snapshot.report
    feasible = [t for t in report.trials if t.state == "complete" and t.feasible
                and all(number(t.metrics.get(m)) is not None for m in report.metrics)]
    if not feasible:
        return None
    point = []
    for metric, direction in zip(report.metrics, report.directions, strict=True):
        values = [t.metrics[metric] for t in feasible]
        margin = 0.1 * ((max(values) - min(values)) or abs(values[0]) or 1.0)
        point.append(min(values) - margin if direction == "maximize" else max(values) + margin)
    return point


def hypervolume_history(study: optuna.Study, snapshot: Snapshot) -> dict[str, Any] | None:
    point = reference_point(snapshot)
    if point is None:
        return None
    fig = optuna.visualization.plot_hypervolume_history(study, point)
    fig.update_layout(title=None, legend=LEGEND_ABOVE, margin=MARGIN_WITH_LEGEND)
    return _figure(fig)


def best_so_far(snapshot: Snapshot) -> dict[str, Any] | None:
    """Best feasible value of the first objective over trial numbers."""
    report = snapshot.report
    metric, direction = report.metrics[0], report.directions[0]
    xs, ys, best = [], [], []
    for t in report.trials:
        value = number(t.metrics.get(metric)) if t.state == "complete" and t.feasible else None
        if value is None:
            continue
        xs.append(t.number)
        ys.append(value)
        better = max if direction == "maximize" else min
        best.append(better(best[-1], value) if best else value)
    if not xs:
        return None
    return {
        "data": [
            {"type": "scatter", "mode": "markers", "x": xs, "y": ys, "name": "feasible trial"},
            {"type": "scatter", "mode": "lines", "line": {"shape": "hv"}, "x": xs, "y": best,
             "name": "best so far"},
        ],
        "layout": {"xaxis": {"title": {"text": "trial"}},
                   "yaxis": {"title": {"text": metric}},
                   "legend": LEGEND_ABOVE, "margin": MARGIN_WITH_LEGEND},
    }


def param_importances(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial], metrics: list[str]
) -> dict[str, Any]:
    measured = optuna.create_study(directions=study.directions)
    measured.set_metric_names(metrics)
    measured.add_trials(trials)
    fig = optuna.visualization.plot_param_importances(measured)
    # Optuna writes each bar's value past its end: widen the axis so the longest bar's label
    # stays inside the plot area, clear of the legend. The parameter names say what the y axis
    # is, and its title would take their room.
    longest = max((max(bar.x, default=0) for bar in fig.data), default=0) or 1.0
    fig.update_layout(title=None, legend=LEGEND_ABOVE, margin=MARGIN_WITH_LEGEND,
                      yaxis_title=None, xaxis_range=[0, longest * 1.22])
    return _figure(fig)
