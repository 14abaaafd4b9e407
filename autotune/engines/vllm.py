"""vLLM behind the engine boundary: flags from parameters, a guarded server, health, teardown,
and the float16 start after a host fault.

The controller never imports vLLM: the server is a subprocess whose command comes from the
space file (``vllm serve`` on GPU hosts; ``{python} -m vllm.entrypoints.openai.api_server``
with the CPU build), so vLLM may live in another virtual environment or a container.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from autotune.devices import DeviceSet
from autotune.engines.base import EngineConfig, Fallback, RunningEngine, register
from autotune.engines.failures import EngineFailure, TeardownError, classify
from autotune.engines.process import GuardedProcess, foreign_listeners, free_port
from autotune.procfs import command_line
from autotune.space import KNOWN_PARAMETERS, NONE_CHOICE, Space, env_value, parameter_info
from autotune.trial_state import FailureKind

HEALTH_POLL_S = 0.5
HOST_FAULT_FALLBACK_DTYPE = "float16"


def engine_flags(space: Space, params: Mapping[str, Any], *, is_default: bool) -> dict[str, Any]:
    """Engine flags for one trial, in rendering order (underscored names).

    The default trial passes no swept flag at all, so the engine runs on its own defaults.
    """
    flags: dict[str, Any] = {"max_model_len": space.model.max_model_len}
    flags.update({k.replace("-", "_"): v for k, v in space.engine.flags.items()})
    if is_default:
        return flags
    for name, value in params.items():
        info = parameter_info(name, space.parameters[name]) if name in space.parameters else (
            KNOWN_PARAMETERS[name])
        if info.style in ("flag", "bool"):
            flags[info.flag_key] = value
    variant = space.model.quantization_variants.get(params.get("quantization", NONE_CHOICE))
    if variant is not None and variant.method:
        flags["quantization"] = variant.method
    method = params.get("speculative_method", NONE_CHOICE)
    if method != NONE_CHOICE:
        spec: dict[str, Any] = {"method": method}
        spec.update(space.model.speculative_variants.get(method, {}))
        if "num_speculative_tokens" in params:
            spec["num_speculative_tokens"] = params["num_speculative_tokens"]
        spec.setdefault(
            "num_speculative_tokens", KNOWN_PARAMETERS["num_speculative_tokens"].default
        )
        flags["speculative_config"] = spec
    return flags


def engine_env(space: Space, params: Mapping[str, Any], *, is_default: bool) -> dict[str, str]:
    """The engine process's environment additions for one trial: ``engine.env``, then the
    swept ``env:`` parameters (none for the default trial, as with flags)."""
    env = dict(space.engine.env)
    if is_default:
        return env
    for name, value in params.items():
        spec = space.parameters.get(name)
        if spec is not None and spec.env is not None:
            env[spec.env] = env_value(value)
    return env


def model_for(space: Space, params: Mapping[str, Any]) -> str:
    variant = space.model.quantization_variants.get(params.get("quantization", NONE_CHOICE))
    if variant is not None and variant.checkpoint:
        return variant.checkpoint
    return space.model.resolved_path


def engine_config(space: Space, params: Mapping[str, Any], *, is_default: bool) -> EngineConfig:
    return EngineConfig(
        model=model_for(space, params),
        served_name=space.model.name_to_serve,
        flags=engine_flags(space, params, is_default=is_default),
        command=tuple(space.engine.command),
        model_as_flag=space.engine.model_as_flag,
        env=engine_env(space, params, is_default=is_default),
        startup_timeout_s=space.engine.startup_timeout_s,
        shutdown_grace_s=space.engine.shutdown_grace_s,
    )


def option_name(flag: str) -> str:
    """vLLM's long option (and config-file key) for an engine flag: ``max_num_seqs`` →
    ``max-num-seqs``."""
    return flag.replace("_", "-")


def render_flags(flags: Mapping[str, Any]) -> list[str]:
    """``{"enable_chunked_prefill": False, "max_num_seqs": 8}`` →
    ``["--no-enable-chunked-prefill", "--max-num-seqs", "8"]`` (vLLM's own conventions: booleans
    are --x/--no-x, dicts are JSON, lists are repeated values)."""
    argv: list[str] = []
    for name, value in flags.items():
        flag = "--" + option_name(name)
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + option_name(name))
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value, separators=(",", ":"))]
        elif isinstance(value, list):
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def stop_after_failure(engine: RunningEngine, failure: EngineFailure) -> None:
    """Tear down an engine that failed; processes that survive are told in ``failure``
    (``survivors``), so the trial records both reasons instead of losing the first."""
    try:
        engine.stop()
    except TeardownError as exc:
        failure.survivors = exc.survivors


def host_fault_fallback(
    config: EngineConfig, failure: EngineFailure, devices: DeviceSet
) -> Fallback | None:
    """A bf16 kernel the host cannot run (SIGILL on a CPU): the host's fault, not the
    configuration's. The same configuration in float16 is measured instead of losing the trial
    (docs/failures.md)."""
    dtype = str(config.flags.get("dtype", "auto"))
    if (
        failure.kind != FailureKind.HOST_FAULT
        or dtype not in ("auto", "bfloat16")
        or devices.kind != "cpu"
    ):
        return None
    return Fallback(
        replace(config, flags={**config.flags, "dtype": HOST_FAULT_FALLBACK_DTYPE}),
        f"host fault in {config.flags.get('dtype', 'auto')}: re-ran with dtype "
        f"{HOST_FAULT_FALLBACK_DTYPE}",
    )


def devices_needed(config: EngineConfig) -> int:
    """Devices one start takes: tensor parallel × pipeline parallel."""
    return int(config.flags.get("tensor_parallel_size") or 1) * int(
        config.flags.get("pipeline_parallel_size") or 1
    )


def healthy(base_url: str, timeout_s: float = 5.0) -> bool:
    """Whether the server at ``base_url`` answers /health with 200 now."""
    try:
        return httpx.get(f"{base_url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def resolve_command(command: tuple[str, ...] | list[str]) -> list[str]:
    return [sys.executable if part == "{python}" else part for part in command]


class VllmServer:
    """A running vLLM OpenAI-compatible server (implements RunningEngine)."""

    def __init__(self, process: GuardedProcess, base_url: str, served_name: str) -> None:
        self._process = process
        self.base_url = base_url
        self.served_name = served_name
        self.argv = process.argv
        self.log_path = process.log_path
        self.startup_s = 0.0
        self.version = ""

    def alive(self) -> bool:
        return self._process.alive()

    def pids(self) -> list[int]:
        return self._process.pids()

    def failure(self) -> EngineFailure:
        return classify(self._process.read_log(), self._process.returncode)

    def stop(self) -> float:
        return self._process.stop()

    def wait_until_healthy(self, timeout_s: float, stop: threading.Event | None = None) -> None:
        """Poll /health until 200. Raises the classified failure when the engine exits, a
        transient failure when it still runs after ``timeout_s`` (a hang is no verdict on the
        configuration: a stray error line in its log is not the cause), and INTERRUPTED as
        soon as ``stop`` is set."""
        started = time.monotonic()
        stop = stop or threading.Event()
        with httpx.Client(timeout=HEALTH_POLL_S * 4) as client:
            while True:
                if stop.is_set() or self._process.stop_requested:
                    raise EngineFailure(FailureKind.INTERRUPTED, "stopped during engine start")
                if not self._process.alive():
                    raise self.failure()
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        self._check_port_is_ours()
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() - started > timeout_s:
                    raise EngineFailure(
                        FailureKind.TRANSIENT,
                        f"no healthy /health within {timeout_s:.0f}s; the engine still runs",
                        classify(self._process.read_log(), None).line,
                    )
                stop.wait(HEALTH_POLL_S)
            self.startup_s = time.monotonic() - started
            try:
                self.version = str(client.get(f"{self.base_url}/version").json()["version"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                self.version = "unknown"


    def _check_port_is_ours(self) -> None:
        """The server that answered must be the one started: the port is picked free, then
        released before vLLM binds it, so another process (another trial's engine, a worker's
        on the same host) may have taken it. A listener outside the engine's process tree is a
        transient fault of this start (it is started again on a fresh port)."""
        port = httpx.URL(self.base_url).port
        if port is None:
            return
        others = foreign_listeners(port, self._process.pids())
        if others:
            holders = ", ".join(f"{pid} ({command_line(pid)[:120]})" for pid in others)
            raise EngineFailure(
                FailureKind.TRANSIENT,
                f"port {port} answered /health, but process {holders} outside the engine "
                "started listens on it: another server took the port",
                f"port {port} held by another process",
            )


class VllmConventions:
    """The trial-facing half of EngineLauncher as vLLM has it: its flags from a space, its
    device count, the float16 start after a host fault, its ``/health``. Launchers that stand
    in for vLLM (the mock server, the replay of a grid measured on vLLM) share it."""

    def engine_config(
        self, space: Space, params: Mapping[str, Any], *, is_default: bool
    ) -> EngineConfig:
        return engine_config(space, params, is_default=is_default)

    def devices_needed(self, config: EngineConfig) -> int:
        return devices_needed(config)

    def fallback(
        self, config: EngineConfig, failure: EngineFailure, devices: DeviceSet
    ) -> Fallback | None:
        return host_fault_fallback(config, failure, devices)

    def healthy(self, engine: RunningEngine) -> bool:
        return engine.alive() and healthy(engine.base_url)


@register("vllm")
class VllmLauncher(VllmConventions):
    name = "vllm"

    def argv(self, config: EngineConfig, port: int | None = None) -> list[str]:
        argv = resolve_command(config.command)
        argv += ["--model", config.model] if config.model_as_flag else [config.model]
        argv += ["--served-model-name", config.served_name]
        argv += render_flags(config.flags)
        if port is not None:
            argv += ["--host", "127.0.0.1", "--port", str(port)]
        return argv

    def start(
        self, config: EngineConfig, devices: DeviceSet, log_path: Path,
        *, stop: threading.Event | None = None,
    ) -> VllmServer:
        port = free_port()
        argv = self.argv(config, port)
        env = {**config.env, **devices.env}
        process = GuardedProcess(argv, env, log_path, config.shutdown_grace_s)
        server = VllmServer(process, f"http://127.0.0.1:{port}", config.served_name)
        try:
            server.wait_until_healthy(config.startup_timeout_s, stop)
        except EngineFailure as failure:
            stop_after_failure(server, failure)
            raise
        except BaseException:
            server.stop()
            raise
        return server
