"""NVIDIA GPUs through NVML (``nvidia-ml-py``'s ``pynvml``).

Inventory respects ``CUDA_VISIBLE_DEVICES``; multi-GPU trials get the set whose worst pairwise
link is fastest (NVML topology); a released GPU is handed out again only once the previous
engine's memory is gone (polled), and a GPU that never frees is reported stuck and kept out.
The ``nvml`` argument is the pynvml module, or a stand-in with the same functions in tests on
machines without a GPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from autotune.devices.base import PooledDevices, best_connected

MIB = 1024**2
# A GPU counts as released when its used memory is back within this margin of what it used
# when the pool was created (the driver and other tenants hold some).
RELEASE_MARGIN_BYTES = 512 * MIB
DEFAULT_RELEASE_TIMEOUT_S = 120.0


@dataclass
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_free: int
    memory_used: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_nvml() -> Any | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    return pynvml


def visible_indices(count: int, env: str | None) -> list[int]:
    """Physical indices allowed by CUDA_VISIBLE_DEVICES (indices only; UUIDs are matched later)."""
    if env is None:
        return list(range(count))
    return [int(v) for v in (p.strip() for p in env.split(",")) if v.isdigit() and int(v) < count]


class NvmlGpuPool(PooledDevices):
    kind = "gpu"

    def __init__(
        self, nvml: Any, gpus: list[GpuInfo], levels: dict[tuple[int, int], int],
        release_timeout_s: float = DEFAULT_RELEASE_TIMEOUT_S, poll_s: float = 0.5,
    ) -> None:
        self.nvml = nvml
        self.gpus = {g.index: g for g in gpus}
        self.levels = levels
        self.release_timeout_s = release_timeout_s
        self.poll_s = poll_s
        self.baseline_used = {g.index: g.memory_used for g in gpus}
        super().__init__([g.index for g in gpus], chooser=best_connected(levels))

    @classmethod
    def discover(
        cls, nvml: Any | None = None, only: list[int] | None = None, **kwargs: Any
    ) -> NvmlGpuPool | None:
        """The visible GPUs (``only`` these indices, if given), or None when NVML is missing
        or finds none."""
        nvml = nvml or load_nvml()
        if nvml is None:
            return None
        try:
            nvml.nvmlInit()
        except Exception:  # noqa: BLE001 - any NVML init failure means "no GPU here"
            return None
        count = nvml.nvmlDeviceGetCount()
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus: list[GpuInfo] = []
        handles: dict[int, Any] = {}
        wanted_uuids = [p.strip() for p in (env or "").split(",") if p.strip().startswith("GPU-")]
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            if env is not None and index not in visible_indices(count, env) and (
                uuid not in wanted_uuids
            ):
                continue
            if only is not None and index not in only:
                continue
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(index, uuid, _text(nvml.nvmlDeviceGetName(handle)),
                                int(memory.total), int(memory.free), int(memory.used)))
            handles[index] = handle
        levels: dict[tuple[int, int], int] = {}
        for a in handles:
            for b in handles:
                if a < b:
                    try:
                        levels[(a, b)] = int(
                            nvml.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b])
                        )
                    except Exception:  # noqa: BLE001 - topology is optional (e.g. MIG, vGPU)
                        pass
        if not gpus:
            return None
        return cls(nvml, gpus, levels, **kwargs)

    def environment(self, ids: tuple[int, ...]) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus[i].uuid for i in ids)}

    def device_memory(self) -> dict[int, int]:
        return {g.index: g.memory_total for g in self.gpus.values()}

    def host_names(self, device: int) -> list[str]:
        """A GPU by its UUID: the same for every process, whatever CUDA_VISIBLE_DEVICES."""
        return [self.gpus[device].uuid]

    def memory_used(self, index: int) -> int:
        handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
        return int(self.nvml.nvmlDeviceGetMemoryInfo(handle).used)

    def drain(self, ids: tuple[int, ...]) -> tuple[list[int], list[int]]:
        pending = set(ids)
        deadline = time.monotonic() + self.release_timeout_s
        while pending:
            for index in list(pending):
                if self.memory_used(index) <= self.baseline_used[index] + RELEASE_MARGIN_BYTES:
                    pending.discard(index)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_s)
        return [i for i in ids if i not in pending], sorted(pending)

    def describe(self) -> str:
        names = sorted({g.name for g in self.gpus.values()})
        return f"{len(self.gpus)}x GPU ({', '.join(names)})"

    def inventory(self) -> list[dict[str, object]]:
        return [
            {"index": g.index, "uuid": g.uuid, "name": g.name,
             "memory_total_mib": g.memory_total // MIB,
             "memory_free_mib": self.nvml_free(g.index) // MIB,
             "stuck": g.index in self.stuck()}
            for g in self.gpus.values()
        ]

    def nvml_free(self, index: int) -> int:
        handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
        return int(self.nvml.nvmlDeviceGetMemoryInfo(handle).free)

    def utilisation(self, index: int) -> tuple[float, int]:
        """(GPU utilisation %, memory used bytes) right now."""
        handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
        rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
        return float(rates.gpu), int(self.nvml.nvmlDeviceGetMemoryInfo(handle).used)
