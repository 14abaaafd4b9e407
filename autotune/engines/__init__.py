"""Serving engines behind one boundary (``autotune.engines.base``).

Importing this package registers the built-in engines (the base never imports an
implementation); ``create(name)`` returns a launcher::

    from autotune.engines import create
    launcher = create("vllm")
"""

from __future__ import annotations

from autotune.engines import replay, vllm  # noqa: F401 - each registers its launcher
from autotune.engines.base import (
    EngineConfig,
    EngineFailure,
    EngineLauncher,
    FailureKind,
    RunningEngine,
    create,
    register,
)

__all__ = [
    "EngineConfig",
    "EngineFailure",
    "EngineLauncher",
    "FailureKind",
    "RunningEngine",
    "create",
    "register",
]
