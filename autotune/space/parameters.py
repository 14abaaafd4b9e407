"""The engine parameters a space can sweep, and the vLLM flags or environment variables they
map to.

``KNOWN_PARAMETERS`` are the ones autotune knows: their type, their nominal vLLM default (the
enqueued default trial) and the rules that make some combinations invalid (``rules.py``). Any
other parameter is *declared* in the space file with what it maps to (``flag: --x`` or
``env: VLLM_X``), its type (from its choices, or ``type``) and its ``default``;
``parameter_info`` gives both kinds one shape. Declared flags are checked against the engine's
own argument list before a study runs (``engines/vllm_flags.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from autotune.space.sections import ParameterSpec

ValueKind = Literal["int", "float", "bool", "str"]


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    kind: ValueKind
    # Nominal vLLM default, recorded as the default trial's value (the default trial itself
    # passes no flag for it, so the engine really runs on its own defaults).
    default: Any
    # "flag": --name-with-dashes VALUE; "bool": --x / --no-x; "special": handled by the builder;
    # "env": an environment variable of the engine process.
    style: Literal["flag", "bool", "special", "env"] = "flag"
    doc: str = ""
    option: str | None = None  # a declared parameter's engine option (default: from the name)
    env: str | None = None  # a declared parameter's environment variable

    @property
    def flag(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")

    @property
    def flag_key(self) -> str:
        """The option as an engine-flags key (underscores), as ``engine_flags`` builds them."""
        return self.flag.removeprefix("--").replace("-", "_")


KNOWN_PARAMETERS: dict[str, ParameterInfo] = {
    p.name: p
    for p in [
        ParameterInfo(
            "quantization",
            "str",
            "none",
            "special",
            "name of a model.quantization_variants entry ('none' = the base checkpoint)",
        ),
        ParameterInfo("gpu_memory_utilization", "float", 0.9, doc="fraction of device memory"),
        ParameterInfo("max_num_batched_tokens", "int", 2048, doc="token budget per step"),
        ParameterInfo("max_num_seqs", "int", 256, doc="sequences per step"),
        ParameterInfo("enable_chunked_prefill", "bool", True, "bool"),
        ParameterInfo("enable_prefix_caching", "bool", True, "bool"),
        ParameterInfo("kv_cache_dtype", "str", "auto"),
        ParameterInfo("tensor_parallel_size", "int", 1),
        ParameterInfo("pipeline_parallel_size", "int", 1),
        ParameterInfo("block_size", "int", 16),
        ParameterInfo("dtype", "str", "auto"),
        ParameterInfo(
            "speculative_method",
            "str",
            "none",
            "special",
            "name of a model.speculative_variants entry ('none' = no speculative decoding)",
        ),
        ParameterInfo(
            "num_speculative_tokens",
            "int",
            3,
            "special",
            "draft length; sample it only `when` a speculative method is chosen",
        ),
    ]
}

NONE_CHOICE = "none"


def parameter_info(name: str, spec: ParameterSpec) -> ParameterInfo:
    """The known parameter ``name``, or the one ``spec`` declares (``flag`` or ``env``)."""
    known = KNOWN_PARAMETERS.get(name)
    if known is not None:
        return known
    kind = declared_kind(spec)
    if spec.env is not None:
        return ParameterInfo(name, kind, spec.default, "env", env=spec.env)
    return ParameterInfo(
        name, kind, spec.default, "bool" if kind == "bool" else "flag", option=spec.flag
    )


def declared_kind(spec: ParameterSpec) -> ValueKind:
    """``type``, else the kind every choice shares (bool, int, float), else str."""
    if spec.type is not None:
        return spec.type
    choices = spec.choices or []
    if choices and all(isinstance(c, bool) for c in choices):
        return "bool"
    if choices and all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return "int"
    if choices and all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
        return "float"
    return "str" if choices else "float"


def declaration_problems(name: str, spec: ParameterSpec) -> list[tuple[str, str]]:
    """(field path, message) for what is wrong with how ``spec`` declares ``name``."""
    where = f"parameters.{name}"
    known = KNOWN_PARAMETERS.get(name)
    if known is not None:
        if spec.flag is not None or spec.env is not None:
            return [(where, f"autotune knows {name} (it sets {known.flag} itself, with its "
                            "rules): drop flag/env")]
        return []
    if spec.flag is None and spec.env is None:
        return [(where, f"unknown parameter (autotune knows {', '.join(KNOWN_PARAMETERS)}): "
                        "for any other engine option or environment variable say what it "
                        "maps to (flag: --some-option, or env: SOME_VARIABLE), its choices or "
                        "range and its default")]
    problems: list[tuple[str, str]] = []
    if spec.choices is None and spec.type not in ("int", "float"):
        problems.append((f"{where}.type", "a range needs type: int or type: float"))
    if spec.default is None:
        problems.append((f"{where}.default", "needed: the value the engine uses when it is "
                                             "not set (the default trial runs without it)"))
    elif spec.choices is not None and spec.default not in spec.choices:
        problems.append((f"{where}.default", f"{spec.default!r} is not one of the choices: "
                                             "the default trial's record must be what it ran"))
    elif spec.choices is None and not _in_range(spec, spec.default):
        problems.append((f"{where}.default", f"{spec.default!r} is outside "
                                             f"{spec.low:g}..{spec.high:g}"))
    for option in (spec.flag,) if spec.flag else ():
        for other in KNOWN_PARAMETERS.values():
            if other.style != "special" and other.flag == option:
                problems.append((f"{where}.flag", f"{option} is the known parameter "
                                                  f"{other.name}: sweep it under that name"))
    return problems


def _in_range(spec: ParameterSpec, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    assert spec.low is not None and spec.high is not None
    return spec.low <= value <= spec.high


def env_value(value: Any) -> str:
    """A parameter value as an environment variable: booleans as vLLM reads them (1 / 0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def target_problems(
    parameters: dict[str, ParameterSpec], fixed_flags: dict[str, Any], fixed_env: dict[str, str]
) -> list[tuple[str, str]]:
    """Declared parameters that set the same flag or variable as another parameter, or as
    ``engine.flags`` / ``engine.env`` (one would silently override the other)."""
    problems: list[tuple[str, str]] = []
    fixed = {"--" + k.replace("_", "-") for k in fixed_flags}
    seen: dict[str, str] = {}
    for name, spec in parameters.items():
        if name in KNOWN_PARAMETERS:
            continue
        target = spec.flag or spec.env
        if target is None:
            continue
        if target in seen:
            problems.append((f"parameters.{name}", f"sets {target}, as {seen[target]} does"))
        seen[target] = name
        if spec.flag in fixed:
            problems.append((f"parameters.{name}.flag", f"{spec.flag} is also fixed in "
                                                        "engine.flags"))
        if spec.env is not None and spec.env in fixed_env:
            problems.append((f"parameters.{name}.env", f"{spec.env} is also fixed in "
                                                       "engine.env"))
    return problems
