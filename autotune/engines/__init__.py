"""Serving engines behind one boundary (``autotune.engines.base``).

``create(name)`` returns a launcher; it imports the built-in engines first (the base never
imports an implementation), so it knows them all::

    from autotune.engines import create
    launcher = create("vllm")

Importing the package itself is light: the names below load ``autotune.engines.base`` on first
use, so ``python -m autotune.engines.guard`` (started once per engine) imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.engines.base import (
        EngineConfig,
        EngineLauncher,
        Fallback,
        RunningEngine,
        register,
    )
    from autotune.engines.failures import EngineFailure

# Each name's module, imported on first use (autotune.lazy).
_HOMES = {
    "EngineConfig": "autotune.engines.base",
    "EngineFailure": "autotune.engines.failures",
    "EngineLauncher": "autotune.engines.base",
    "Fallback": "autotune.engines.base",
    "RunningEngine": "autotune.engines.base",
    "register": "autotune.engines.base",
}
_BUILT_IN = ("autotune.replay.launcher", "autotune.engines.vllm")  # each registers itself

__all__ = [
    "EngineConfig",
    "EngineFailure",
    "EngineLauncher",
    "Fallback",
    "RunningEngine",
    "create",
    "register",
    "stop_all",
]


def create(name: str) -> EngineLauncher:
    """A new launcher of the engine registered as ``name`` (built-in engines included)."""
    for module in _BUILT_IN:
        importlib.import_module(module)
    from autotune.engines.base import create as create_registered

    return create_registered(name)


def stop_all() -> int:
    """Tear down every engine process this controller started (Ctrl-C with parallel trials);
    how many there were. The study calls it without knowing how engines run."""
    from autotune.engines.process import stop_all as stop_processes

    return stop_processes()


__getattr__ = lazy_attributes(__name__, _HOMES)
