"""Export a trial as a YAML file that ``vllm serve --config FILE`` accepts as is.

Keys are vLLM's long option names (dashes); booleans become --x / --no-x, mappings (e.g.
speculative-config) become JSON, exactly as vLLM's own config-file loader turns them into
arguments. The header comments carry the study figures and the equivalent command line.
Environment variables the engine ran with (``engine.env`` and swept ``env:`` parameters) go to
an ``env.sh`` beside the YAML when the study swept some; ``command_line`` is the whole command
(environment assignments, the engine command, its flags) on one line.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from autotune.bench import levels_of
from autotune.engines.vllm import engine_env, option_name, render_flags
from autotune.errors import AutotuneError, TrialNotFoundError
from autotune.metrics import bound_mark, gain_mark
from autotune.results.report import StudyReport
from autotune.space import QUALITY_LABELS, QUALITY_METRICS, Space, format_quality
from autotune.space.sections import ENV_NAME
from autotune.store.values import TrialView

HEADLINE_METRICS = (
    "output_throughput",
    "request_throughput",
    "request_goodput",
    "ttft_p95_ms",
    "tpot_p99_ms",
    "e2e_p95_ms",
    "error_rate",
)
# What YAML (and str.splitlines) takes for the end of a line: inside a header comment, each
# would end the comment and start YAML of its own.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def pick_trial(report: StudyReport, *, number: int | None, pick: str | None) -> TrialView:
    """The trial to export: ``number``, or ``pick`` = ``max:METRIC`` / ``min:METRIC`` over the
    feasible complete trials, or by default the Pareto trial best on the first objective."""
    if number is not None:
        record = report.trial(number)
        if record is None:
            raise TrialNotFoundError(f"study {report.name!r} has no trial {number}")
        if record.state != "complete":
            raise AutotuneError(
                f"trial {number} did not complete ({record.state}, {record.failure_kind}): "
                "nothing to export"
            )
        return record
    candidates = [t for t in report.trials if t.state == "complete" and t.feasible]
    if not candidates:
        raise AutotuneError(
            f"study {report.name!r} has no feasible complete trial yet; pass --trial N to "
            "export a specific one"
        )
    if pick is None:
        metric, direction = report.metrics[0], report.directions[0]
        pareto = [t for t in candidates if t.number in report.pareto_front] or candidates
        candidates = pareto
    else:
        how, _, metric = pick.partition(":")
        if how not in ("max", "min") or not metric:
            raise AutotuneError(f"--pick {pick!r}: use max:METRIC or min:METRIC")
        direction = "maximize" if how == "max" else "minimize"
        candidates = [t for t in candidates if metric in t.metrics]
        if not candidates:
            raise AutotuneError(f"--pick {pick!r}: no feasible trial has metric {metric!r}")
    sign = 1 if direction == "maximize" else -1
    return max(candidates, key=lambda t: (sign * t.metrics[metric], -t.number))


def config_mapping(record: TrialView, served_name: str | None = None) -> dict[str, Any]:
    """The trial's engine flags as ``vllm serve --config`` keys (the flags it really ran)."""
    mapping: dict[str, Any] = {"model": record.model}
    name = served_name or _served_name(record)
    if name:
        mapping["served-model-name"] = name
    for key, value in record.engine_flags.items():
        mapping[option_name(key)] = value
    return mapping


def _served_name(record: TrialView) -> str | None:
    argv = record.engine_command
    if "--served-model-name" in argv:
        index = argv.index("--served-model-name")
        if index + 1 < len(argv):
            return argv[index + 1]
    return None


def ladder_lines(record: TrialView) -> list[str]:
    """The trial's load curve as header comments: the capacity figures, then each level."""
    levels = levels_of(record.measurements)
    if not levels:
        return []
    m = record.metrics
    # name=value, or name≥value / name≤value where it is a bound (every level held)
    head = [f"{name}{bound_mark(name, m) or '='}{m[name]:.4g}" for name in (
        "capacity_rps", "throughput_per_device_at_capacity", "interactivity_at_capacity",
        "cost_per_1m_at_capacity") if isinstance(m.get(name), int | float)]
    lines = ["# load curve: " + ", ".join(head)]
    if any(bound_mark(name, m) for name in m):
        lines.append("#   ≥/≤: bounds, not exact figures: every load level held the SLOs, so "
                     "the ladder never found the edge")
    for level in levels:
        f = level.get("metrics", {})
        shown = ", ".join(f"{key} {f[key]:.4g}" for key in (
            "request_throughput", "output_throughput", "tpot_mean_ms", "e2e_p95_ms") if key in f)
        lines.append(f"#   {level.get('kind', 'concurrency')} {level['load']:g}: {shown}"
                     f" ({'held' if level.get('holds') else 'missed'} the SLOs)")
        if level.get("stop_reason"):
            lines.append(f"#   stopped early: {level['stop_reason']}")
    return lines


def stored_space(space_yaml: str) -> Space | None:
    """The study's space as stored with it; None when it no longer validates (a study made by
    an older autotune): its export then carries no environment."""
    try:
        return Space.model_validate(yaml.safe_load(space_yaml or "") or {})
    except (yaml.YAMLError, ValueError):
        return None


def swept_env(space: Space | None) -> bool:
    return space is not None and any(s.env for s in space.parameters.values())


def trial_env(space: Space | None, record: TrialView) -> dict[str, str]:
    """The environment the trial's engine got from the space (not the device pinning)."""
    if space is None:
        return {}
    return engine_env(space, record.params, is_default=record.is_default)


def env_script(report: StudyReport, record: TrialView, env: dict[str, str]) -> str:
    lines = [f"# autotune export: study {report.name!r}, trial {record.number}: the engine's "
             "environment",
             "# source it before starting vLLM: . ./env.sh"]
    lines += [f"export {assignment}" for assignment in shell_assignments(env)]
    return "\n".join(lines) + "\n"


def shell_assignments(env: dict[str, str]) -> list[str]:
    """``NAME=value`` words for a shell, each value quoted; AutotuneError for a name a shell
    would not take as one (the space refuses those; a stored one may predate the check)."""
    for name in env:
        if not ENV_NAME.fullmatch(name):
            raise AutotuneError(f"{name!r} is not an environment variable name: the stored "
                                "space's engine.env cannot be exported for a shell")
    return [f"{name}={shlex.quote(value)}" for name, value in env.items()]


def comment_line(text: str) -> str:
    """``text`` kept on one line (a line break shown as ``\\n``), for a ``#`` comment."""
    return text.translate(_LINE_BREAKS)


def engine_argv(record: TrialView) -> list[str]:
    """The command the trial ran, without the per-trial --host/--port."""
    argv, out, i = record.engine_command, [], 0
    while i < len(argv):
        if argv[i] in ("--host", "--port") and i + 1 < len(argv):
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def command_line(record: TrialView, env: dict[str, str]) -> str:
    """``VAR=value ... ENGINE COMMAND FLAGS`` as one shell line."""
    argv = engine_argv(record)
    if not argv:
        raise AutotuneError(f"trial {record.number} has no recorded engine command")
    return " ".join([*shell_assignments(env), shlex.join(argv)])


def export_yaml(report: StudyReport, record: TrialView,
                env: dict[str, str] | None = None) -> str:
    mapping = config_mapping(record)
    command = ["vllm", "serve", str(mapping["model"])]
    command += render_flags({k: v for k, v in mapping.items() if k != "model"})
    env = env or {}
    assignments = shell_assignments(env)
    lines = [
        f"# autotune export: study {report.name!r}, trial {record.number}"
        + (" (vLLM defaults)" if record.is_default else ""),
        f"# engine: vLLM {record.engine_version or 'unknown'} on {record.devices or 'unknown'}",
        f"# workload SLOs: {report.slos or 'none'}",
    ]
    figures = [f"{m}={record.metrics[m]:.4g}" for m in HEADLINE_METRICS if m in record.metrics]
    if figures:
        lines.append("# measured: " + ", ".join(figures))
    lines += ladder_lines(record)
    quality = [
        f"{QUALITY_LABELS[m]} {format_quality(m, record.metrics[m])}"
        for m in QUALITY_METRICS
        if m in record.metrics
    ]
    if quality:
        default = report.default_number
        reference = f" (reference: trial {default})" if default is not None else ""
        lines.append(f"# quality{reference}: " + ", ".join(quality))
    gains = {m: g for m, g in report.gains(record).items() if g is not None}
    if gains:
        number = report.default_number
        default = report.trial(number) if number is not None else None
        base = default.metrics if default is not None else {}
        lines.append("# vs vLLM defaults: " + ", ".join(
            f"{m} {gain_mark(m, record.metrics, base)}{g:.2f}x" for m, g in gains.items()))
    if env:
        lines.append("# environment (env.sh beside this file): " + " ".join(assignments))
    lines.append("# equivalent command line:")
    lines.append("#   " + " ".join([*assignments, shlex.join(command)]))
    lines.append("# start it with: vllm serve --config THIS_FILE")
    body = yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False)
    return "\n".join(comment_line(line) for line in lines) + "\n" + body
