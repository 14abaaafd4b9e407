"""Package faces that load on first use: a package's ``__init__`` names where each of its
exported names lives, and the module is imported only when the name is first asked for, so
``import autotune.x`` stays light (``python -m autotune.engines.guard`` runs once per engine)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that takes each name in ``homes`` from the
    module ``homes[name]``."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(importlib.import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
