"""The sections of a search-space file (model, engine, objectives, parameters, search, cost):
pydantic schemas, read by ``space.Space``. Every key is documented in docs/search-space.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from autotune.metrics import canonical_name, known_metric_names
from autotune.space.workload_mix import (
    MIX_METRICS,
    metric_direction,
    per_workload_metric_names,
    split_metric,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantizationVariant(Strict):
    """A quantization choice: another checkpoint, an online method, or both."""

    checkpoint: str | None = None
    method: str | None = None


class ModelSpec(Strict):
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


class EngineSpec(Strict):
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

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        # the export writes them for a shell (env.sh, the command line): a name is only a name
        for key in env:
            if not ENV_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not an environment variable name "
                                 "([A-Za-z_][A-Za-z0-9_]*)")
        return env

    @field_validator("flags")
    @classmethod
    def _flag_names(cls, flags: dict[str, Any]) -> dict[str, Any]:
        for key in flags:
            if not key.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"flag name {key!r} is not a valid engine flag name")
        return flags


class Objective(Strict):
    metric: str
    direction: Literal["maximize", "minimize"] | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        """A known metric, a mix's aggregate, or ``WORKLOAD.<per-workload metric>``; whether
        the space has that workload (or is a mix at all) is checked by ``Space``. An old name
        (``capacity_request_rate``) reads as the metric's name now."""
        metric = canonical_name(metric)
        workload, base = split_metric(metric)
        if workload is not None:
            if base not in per_workload_metric_names():
                raise ValueError(
                    f"{metric!r}: {base!r} is not a per-workload metric; per workload: "
                    f"{', '.join(per_workload_metric_names())}"
                )
        elif metric not in known_metric_names() and metric not in MIX_METRICS:
            raise ValueError(
                f"unknown metric {metric!r}; known: "
                f"{', '.join([*known_metric_names(), *MIX_METRICS])}, and WORKLOAD.<metric> "
                "in a mix of workloads"
            )
        return metric

    @property
    def resolved_direction(self) -> str:
        return self.direction or metric_direction(self.metric)


ENGINE_FLAG = re.compile(r"--[a-z0-9][a-z0-9-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ParameterSpec(Strict):
    """``choices``, or a ``low``..``high`` range (``step`` or ``log``); optionally ``when``.

    A parameter autotune does not know (``parameters.KNOWN_PARAMETERS``) names what it maps
    to: ``flag`` (an engine option, checked against the engine's own list) or ``env`` (an
    environment variable of the engine process), and its ``default``."""

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    type: Literal["int", "float", "bool", "str"] | None = None
    default: Any = None
    flag: str | None = Field(
        default=None, description="the engine option it sets, e.g. --async-scheduling"
    )
    env: str | None = Field(
        default=None, description="the engine's environment variable it sets, e.g. VLLM_X"
    )
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
        if self.flag is not None and self.env is not None:
            raise ValueError("give flag or env, not both")
        if self.flag is not None and not ENGINE_FLAG.fullmatch(self.flag):
            raise ValueError(f"flag {self.flag!r} is not an engine option like --max-num-seqs")
        if self.env is not None and not ENV_NAME.fullmatch(self.env):
            raise ValueError(f"env {self.env!r} is not an environment variable name")
        if self.type in ("bool", "str") and self.choices is None:
            raise ValueError(f"a {self.type} parameter needs choices")
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


class CostSpec(Strict):
    """Price of the devices, giving each trial a cost per 1M output tokens."""

    device_hour_usd: float = Field(gt=0, description="$ per device-hour (e.g. H100: 2.50)")
    max_per_1m_output_tokens_usd: float | None = Field(
        default=None, gt=0, description="constraint: a costlier trial is infeasible"
    )


class ConfirmStageSpec(Strict):
    """The confirm stage at the end of a study (docs/search.md, "Confirm stage"): the front's
    picks and the defaults measured again on fresh servers, inside the study's budget."""

    enabled: bool = Field(default=True, description="run the confirm stage")
    servers: int = Field(
        default=2, ge=2,
        description="fresh servers each candidate's figures rest on, its first run counted",
    )
    per_objective: int = Field(
        default=1, ge=0, le=3, description="best trials of the front per objective confirmed"
    )
    knee: bool = Field(default=True, description="confirm the knee of the front too")
    min_search_trials: int = Field(
        default=4, ge=1,
        description="the search keeps at least this many trials of the budget; the stage "
        "gets what is left of its share",
    )


class SearchSpec(Strict):
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
    screen: bool = Field(
        default=True,
        description="first move each parameter one step from the defaults, in the file's order, "
        "then measure the defaults' nominal values as flags, for up to half the budget (not "
        "with the random or grid sampler)",
    )
    local_search: bool = Field(
        default=True,
        description="every other trial, try a configuration one step from the Pareto front "
        "(not with the random or grid sampler)",
    )
    confirm_stage: ConfirmStageSpec = Field(
        default_factory=ConfirmStageSpec,
        description="re-measure the front's picks on fresh servers before the study ends "
        "(false: skip; a mapping: its settings)",
    )

    @field_validator("confirm_stage", mode="before")
    @classmethod
    def _stage_switch(cls, value: Any) -> Any:
        """``confirm_stage: false`` (or true) stands for ``{enabled: false}``."""
        return {"enabled": value} if isinstance(value, bool) else value
