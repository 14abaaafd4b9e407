"""The engine boundary: launch a serving engine for one configuration, serve, tear down.

An engine implementation registers itself with ``@register("name")``; ``create(name)`` returns
one. This module never imports an implementation: the package ``__init__`` imports the built-in
ones, so ``from autotune.engines import create`` knows them all. Every implementation passes the
conformance suite in autotune/testing/engine_suite.py.

A trial (``autotune.trial.TrialRunner``) knows engines only through these Protocols: what is
particular to an engine (its flags from a configuration, how many devices a start takes, a
configuration worth starting again after a host fault, whether a started one still serves) is
the launcher's to say.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from autotune.devices import DeviceSet
from autotune.engines.failures import EngineFailure

if TYPE_CHECKING:
    from autotune.space import Space

__all__ = ["EngineConfig", "EngineLauncher", "Fallback", "RunningEngine", "create", "register"]


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to start one engine, independent of the devices it gets.

    ``flags`` are the engine's own options (name → value, underscores), in the order they are
    rendered; ``model`` is the checkpoint to load (after quantization variants are applied).
    """

    model: str
    served_name: str
    flags: Mapping[str, Any]
    command: tuple[str, ...]
    model_as_flag: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 600.0
    shutdown_grace_s: float = 15.0


@runtime_checkable
class RunningEngine(Protocol):
    """A started, healthy engine. ``stop`` is idempotent and returns teardown seconds only after
    confirming that no process of the engine remains; it raises TeardownError naming the
    processes that survived it."""

    base_url: str
    served_name: str
    argv: list[str]
    log_path: Path
    startup_s: float
    version: str

    def alive(self) -> bool: ...

    def failure(self) -> EngineFailure:
        """Classify why the engine stopped serving (reads its exit status and log)."""
        ...

    def pids(self) -> list[int]:
        """Live processes of the engine (empty once stopped)."""
        ...

    def stop(self) -> float: ...


@dataclass(frozen=True)
class Fallback:
    """Another start of a configuration whose start failed through no fault of its own (the
    host's): ``config`` to start instead, ``note`` saying why, kept with the trial."""

    config: EngineConfig
    note: str


@runtime_checkable
class EngineLauncher(Protocol):
    """Starts engines. ``start`` blocks until the engine is healthy or raises EngineFailure
    (and then leaves no process behind, or names those left in ``EngineFailure.survivors``).
    It writes a fresh ``log_path``. When ``stop`` is set it gives up within a second or two:
    EngineFailure(INTERRUPTED)."""

    name: str

    def engine_config(
        self, space: Space, params: Mapping[str, Any], *, is_default: bool
    ) -> EngineConfig:
        """The engine's configuration for one trial of ``space`` with ``params`` (the default
        trial passes no swept option: the engine runs on its own defaults)."""
        ...

    def devices_needed(self, config: EngineConfig) -> int:
        """How many devices one start of ``config`` takes."""
        ...

    def fallback(
        self, config: EngineConfig, failure: EngineFailure, devices: DeviceSet
    ) -> Fallback | None:
        """What to start instead of ``config`` after its start on ``devices`` failed with
        ``failure`` through no fault of the configuration's, or None (the failure stands)."""
        ...

    def healthy(self, engine: RunningEngine) -> bool:
        """Whether ``engine`` (started by this launcher) still serves now: a benchmark that
        lost requests on a healthy engine failed transiently."""
        ...

    def argv(self, config: EngineConfig, port: int | None = None) -> list[str]: ...

    def start(
        self, config: EngineConfig, devices: DeviceSet, log_path: Path,
        *, stop: threading.Event | None = None,
    ) -> RunningEngine: ...


_REGISTRY: dict[str, Callable[[], EngineLauncher]] = {}


def register(name: str) -> Callable[[Callable[[], EngineLauncher]], Callable[[], EngineLauncher]]:
    def deco(factory: Callable[[], EngineLauncher]) -> Callable[[], EngineLauncher]:
        _REGISTRY[name] = factory
        return factory

    return deco


def create(name: str) -> EngineLauncher:
    """A new launcher of the engine registered as ``name``."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(_REGISTRY)}") from None
