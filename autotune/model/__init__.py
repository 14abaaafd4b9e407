"""The model being tuned: where its config.json is, its shape (layers, heads, widths), whether a
configuration fits its devices' memory (``memory_fit``), and the CPU quickstart's demo model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.model.config import (
        candidates,
        find_model_config,
        hub_cache,
        is_repo_id,
        read_model_config,
    )
    from autotune.model.demo import DemoModelError, build_demo_model, is_built
    from autotune.model.memory_fit import GIB, estimate, size
    from autotune.model.shape import ModelShape, model_shape

# Each name's module, imported on first use (autotune.lazy).
_HOMES = {
    "DemoModelError": "autotune.model.demo",
    "GIB": "autotune.model.memory_fit",
    "ModelShape": "autotune.model.shape",
    "build_demo_model": "autotune.model.demo",
    "candidates": "autotune.model.config",
    "estimate": "autotune.model.memory_fit",
    "find_model_config": "autotune.model.config",
    "hub_cache": "autotune.model.config",
    "is_built": "autotune.model.demo",
    "is_repo_id": "autotune.model.config",
    "model_shape": "autotune.model.shape",
    "read_model_config": "autotune.model.config",
    "size": "autotune.model.memory_fit",
}

__all__ = [
    "DemoModelError",
    "GIB",
    "ModelShape",
    "build_demo_model",
    "candidates",
    "estimate",
    "find_model_config",
    "hub_cache",
    "is_built",
    "is_repo_id",
    "model_shape",
    "read_model_config",
    "size",
]

__getattr__ = lazy_attributes(__name__, _HOMES)
