"""What a study's results say to people: the report (front, gains over the defaults), the
noise model (what a fresh server will measure) and the export of a pick as vLLM's config file.
Read only through the store's values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.results.export import (
        command_line,
        env_script,
        export_yaml,
        pick_trial,
        stored_space,
        swept_env,
        trial_env,
    )
    from autotune.results.noise_model import (
        FRESH_METRICS,
        Interval,
        NoiseModel,
        configuration_key,
        measured_metrics,
        study_noise_model,
    )
    from autotune.results.report import StudyReport, load_report, pareto_front

# Each name's module, imported on first use (autotune.lazy).
_HOMES = {
    "FRESH_METRICS": "autotune.results.noise_model",
    "Interval": "autotune.results.noise_model",
    "NoiseModel": "autotune.results.noise_model",
    "StudyReport": "autotune.results.report",
    "command_line": "autotune.results.export",
    "configuration_key": "autotune.results.noise_model",
    "env_script": "autotune.results.export",
    "export_yaml": "autotune.results.export",
    "load_report": "autotune.results.report",
    "measured_metrics": "autotune.results.noise_model",
    "pareto_front": "autotune.results.report",
    "pick_trial": "autotune.results.export",
    "stored_space": "autotune.results.export",
    "study_noise_model": "autotune.results.noise_model",
    "swept_env": "autotune.results.export",
    "trial_env": "autotune.results.export",
}

__all__ = [
    "FRESH_METRICS",
    "Interval",
    "NoiseModel",
    "StudyReport",
    "command_line",
    "configuration_key",
    "env_script",
    "export_yaml",
    "load_report",
    "measured_metrics",
    "pareto_front",
    "pick_trial",
    "stored_space",
    "study_noise_model",
    "swept_env",
    "trial_env",
]

__getattr__ = lazy_attributes(__name__, _HOMES)
