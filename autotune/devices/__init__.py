"""Device pools: which devices a trial's engine runs on (see base.DevicePool)."""

from __future__ import annotations

from typing import Literal

from autotune.devices.base import (
    Allocator,
    DeviceKind,
    DevicePool,
    DeviceSet,
    NoDevicesError,
    PooledDevices,
)
from autotune.devices.cpu import CpuSlotPool
from autotune.devices.nvml import NvmlGpuPool

__all__ = [
    "Allocator", "CpuSlotPool", "DeviceKind", "DevicePool", "DeviceSet", "NoDevicesError",
    "NvmlGpuPool", "PooledDevices", "detect_pool",
]


def detect_pool(
    kind: Literal["auto", "cpu", "gpu"] = "auto",
    *,
    parallel: int | None = 1,
    kv_cache_bytes: int | None = None,
) -> DevicePool:
    """GPUs when NVML finds some (or ``kind == "gpu"``, which requires them), else CPU slots.

    ``parallel`` is the number of trials meant to run at once (None = as many as fit); on a CPU
    host it decides how the cores are split into slots.
    """
    if kind in ("auto", "gpu"):
        gpus = NvmlGpuPool.discover()
        if gpus is not None:
            return gpus
        if kind == "gpu":
            raise NoDevicesError("engine.devices is 'gpu' but NVML found no NVIDIA GPU here")
    if parallel == 1:
        return CpuSlotPool(slots=1, kv_cache_bytes=kv_cache_bytes)
    return CpuSlotPool.for_parallel(parallel, kv_cache_bytes=kv_cache_bytes)
