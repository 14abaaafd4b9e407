"""Device pools: which devices a trial's engine runs on (see base.DevicePool). The pools that
``detect_pool`` and ``pool_from_spec`` make (those of ``study start``, ``worker`` and
``confirm``) share the host with every other autotune process there (``host_lock``)."""

from __future__ import annotations

import os
from typing import Literal

from autotune.devices.base import (
    Allocator,
    DeviceKind,
    DevicePool,
    DeviceSet,
    NoDevicesError,
    PooledDevices,
    ReportsDeviceMemory,
)
from autotune.devices.cpu import CpuSlotPool
from autotune.devices.nvml import NvmlGpuPool

__all__ = [
    "Allocator", "CpuSlotPool", "DeviceKind", "DevicePool", "DeviceSet", "NoDevicesError",
    "NvmlGpuPool", "PooledDevices", "ReportsDeviceMemory", "detect_pool", "parse_core_list",
    "pool_from_spec",
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
            return gpus.share_host()
        if kind == "gpu":
            raise NoDevicesError("engine.devices is 'gpu' but NVML found no NVIDIA GPU here")
    if parallel == 1:
        return CpuSlotPool(slots=1, kv_cache_bytes=kv_cache_bytes).share_host()
    return CpuSlotPool.for_parallel(parallel, kv_cache_bytes=kv_cache_bytes).share_host()


def parse_core_list(text: str) -> list[int]:
    """``"0-3,6"`` → ``[0, 1, 2, 3, 6]``."""
    cores: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = (int(x) for x in part.split("-", 1))
            cores += list(range(low, high + 1))
        elif part:
            cores.append(int(part))
    return sorted(set(cores))


def pool_from_spec(
    spec: str, *, parallel: int | None = 1, kv_cache_bytes: int | None = None
) -> DevicePool:
    """``auto``, ``cpu``, ``cpu:0-3`` (these cores only), ``gpu`` or ``gpu:0,1`` (these GPUs)."""
    kind, _, which = spec.partition(":")
    if kind not in ("auto", "cpu", "gpu") or (kind == "auto" and which):
        raise ValueError(f"--devices {spec!r}: use auto, cpu, cpu:CORES, gpu or gpu:INDICES")
    try:
        selected = parse_core_list(which) if which else None
    except ValueError:
        raise ValueError(f"--devices {spec!r}: {which!r} is not a list like 0-3,6") from None
    if kind == "gpu" and selected is not None:
        gpus = NvmlGpuPool.discover(only=selected)
        if gpus is None:
            raise NoDevicesError(f"--devices {spec}: NVML found none of these GPUs")
        return gpus.share_host()
    if kind == "cpu" and selected is not None:
        host = set(os.sched_getaffinity(0))
        if not set(selected) <= host:
            raise ValueError(f"--devices {spec}: cores {sorted(set(selected) - host)} are "
                             f"not available to this process (it may use {sorted(host)})")
        slots = 1 if parallel == 1 else min(parallel or len(selected), len(selected))
        return CpuSlotPool(selected, slots=slots, kv_cache_bytes=kv_cache_bytes).share_host()
    return detect_pool(kind, parallel=parallel, kv_cache_bytes=kv_cache_bytes)  # type: ignore[arg-type]
