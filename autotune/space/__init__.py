"""The search-space file: its schema (one leaf module per section), reading it with precise
errors, the engine parameters it can sweep, the trust check of a shared study's space, and the
starter space ``autotune init`` writes.

What callers use: ``Space`` and ``load_space`` (``space.model``), ``Configuration``
(``space.configuration``: the parameters one trial runs with). The schema modules import no
runtime module (``bench``, ``engines``, ``study``): reading a space file starts nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.space.capacity import CapacitySpec, bracket_rates
    from autotune.space.configuration import Configuration, params_key
    from autotune.space.ladder import LADDER_METRICS, LadderSpec
    from autotune.space.measurement import MeasurementSpec
    from autotune.space.model import (
        Space,
        check_data_files,
        check_model_path,
        default_value,
        is_active,
        load_space,
        nearest_allowed,
        suggest_params,
    )
    from autotune.space.parameters import KNOWN_PARAMETERS, NONE_CHOICE, env_value, parameter_info
    from autotune.space.quality import QUALITY_LABELS, QUALITY_METRICS, QualitySpec, format_quality
    from autotune.space.reading import line_of, parse, read_text
    from autotune.space.sections import ParameterSpec
    from autotune.space.starter import devices_of, starter_space, write_starter_space
    from autotune.space.trust import UntrustedSpace, space_changes, trusted_space
    from autotune.space.workload import (
        ChatJsonlPrompts,
        ConcurrencyLoad,
        JsonlPrompts,
        MultiTurn,
        PoissonLoad,
        RandomPrompts,
        SharedPrefixPrompts,
        SharegptPrompts,
        SteadyState,
        TraceColumns,
        TraceLoad,
        TracePrompts,
        WorkloadSpec,
    )
    from autotune.space.workload_mix import (
        ATTAINMENT_WORST,
        NamedWorkload,
        aggregate,
        split_metric,
    )

# Each name's module, imported on first use (autotune.lazy).
_HOMES = {
    "ATTAINMENT_WORST": "autotune.space.workload_mix",
    "CapacitySpec": "autotune.space.capacity",
    "ChatJsonlPrompts": "autotune.space.workload",
    "ConcurrencyLoad": "autotune.space.workload",
    "Configuration": "autotune.space.configuration",
    "JsonlPrompts": "autotune.space.workload",
    "KNOWN_PARAMETERS": "autotune.space.parameters",
    "LADDER_METRICS": "autotune.space.ladder",
    "LadderSpec": "autotune.space.ladder",
    "MeasurementSpec": "autotune.space.measurement",
    "MultiTurn": "autotune.space.workload",
    "NONE_CHOICE": "autotune.space.parameters",
    "NamedWorkload": "autotune.space.workload_mix",
    "ParameterSpec": "autotune.space.sections",
    "PoissonLoad": "autotune.space.workload",
    "QUALITY_LABELS": "autotune.space.quality",
    "QUALITY_METRICS": "autotune.space.quality",
    "QualitySpec": "autotune.space.quality",
    "RandomPrompts": "autotune.space.workload",
    "SharedPrefixPrompts": "autotune.space.workload",
    "SteadyState": "autotune.space.workload",
    "SharegptPrompts": "autotune.space.workload",
    "Space": "autotune.space.model",
    "TraceColumns": "autotune.space.workload",
    "TraceLoad": "autotune.space.workload",
    "TracePrompts": "autotune.space.workload",
    "UntrustedSpace": "autotune.space.trust",
    "WorkloadSpec": "autotune.space.workload",
    "aggregate": "autotune.space.workload_mix",
    "bracket_rates": "autotune.space.capacity",
    "check_data_files": "autotune.space.model",
    "check_model_path": "autotune.space.model",
    "default_value": "autotune.space.model",
    "devices_of": "autotune.space.starter",
    "env_value": "autotune.space.parameters",
    "format_quality": "autotune.space.quality",
    "is_active": "autotune.space.model",
    "line_of": "autotune.space.reading",
    "load_space": "autotune.space.model",
    "nearest_allowed": "autotune.space.model",
    "parameter_info": "autotune.space.parameters",
    "params_key": "autotune.space.configuration",
    "parse": "autotune.space.reading",
    "read_text": "autotune.space.reading",
    "space_changes": "autotune.space.trust",
    "split_metric": "autotune.space.workload_mix",
    "starter_space": "autotune.space.starter",
    "suggest_params": "autotune.space.model",
    "trusted_space": "autotune.space.trust",
    "write_starter_space": "autotune.space.starter",
}

__all__ = [
    "ATTAINMENT_WORST",
    "CapacitySpec",
    "ChatJsonlPrompts",
    "ConcurrencyLoad",
    "Configuration",
    "JsonlPrompts",
    "KNOWN_PARAMETERS",
    "LADDER_METRICS",
    "LadderSpec",
    "MeasurementSpec",
    "MultiTurn",
    "NONE_CHOICE",
    "NamedWorkload",
    "ParameterSpec",
    "PoissonLoad",
    "QUALITY_LABELS",
    "QUALITY_METRICS",
    "QualitySpec",
    "RandomPrompts",
    "SharedPrefixPrompts",
    "SteadyState",
    "SharegptPrompts",
    "Space",
    "TraceColumns",
    "TraceLoad",
    "TracePrompts",
    "UntrustedSpace",
    "WorkloadSpec",
    "aggregate",
    "bracket_rates",
    "check_data_files",
    "check_model_path",
    "default_value",
    "devices_of",
    "env_value",
    "format_quality",
    "is_active",
    "line_of",
    "load_space",
    "nearest_allowed",
    "parameter_info",
    "params_key",
    "parse",
    "read_text",
    "space_changes",
    "split_metric",
    "starter_space",
    "suggest_params",
    "trusted_space",
    "write_starter_space",
]

__getattr__ = lazy_attributes(__name__, _HOMES)
