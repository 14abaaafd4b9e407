"""Device pools: which devices a trial's engine runs on.

``DevicePool`` is the boundary; ``CpuSlotPool`` hands out CPU core sets (the CPU build of vLLM),
``NvmlGpuPool`` hands out NVIDIA GPUs found through NVML. ``detect_pool`` picks one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

DeviceKind = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class DeviceSet:
    """The devices of one trial and the environment that confines the engine to them."""

    kind: DeviceKind
    ids: tuple[int, ...]
    env: dict[str, str] = field(default_factory=dict, hash=False)

    def describe(self) -> str:
        return f"{self.kind}:{','.join(str(i) for i in self.ids)}"


class NoDevicesError(Exception):
    pass


@runtime_checkable
class DevicePool(Protocol):
    """Hands out disjoint device sets.

    ``capacity`` is the number of devices a single trial may ask for (what "devices present"
    means to the rejection rules). ``acquire(n)`` blocks until ``n`` devices are free and
    returns them; it raises NoDevicesError when ``n`` exceeds the capacity. ``release`` gives a
    set back (also after failures). Thread-safe.
    """

    kind: DeviceKind

    @property
    def capacity(self) -> int: ...

    def acquire(self, n: int) -> DeviceSet: ...

    def release(self, devices: DeviceSet) -> None: ...

    def describe(self) -> str: ...


class _SlotPool:
    """Shared bookkeeping: a fixed list of slot ids, each used by at most one trial."""

    kind: DeviceKind

    def __init__(self, slot_ids: list[int]) -> None:
        self._free = list(slot_ids)
        self._all = tuple(slot_ids)
        self._cond = threading.Condition()

    @property
    def capacity(self) -> int:
        return len(self._all)

    def acquire(self, n: int) -> DeviceSet:
        if n > self.capacity or n < 1:
            raise NoDevicesError(f"{n} {self.kind} device(s) asked, {self.capacity} present")
        with self._cond:
            while len(self._free) < n:
                self._cond.wait()
            taken = tuple(self._free[:n])
            del self._free[:n]
        return DeviceSet(self.kind, taken, self._env(taken))

    def release(self, devices: DeviceSet) -> None:
        with self._cond:
            for device in devices.ids:
                if device in self._all and device not in self._free:
                    self._free.append(device)
            self._free.sort()
            self._cond.notify_all()

    def _env(self, ids: tuple[int, ...]) -> dict[str, str]:
        raise NotImplementedError


class CpuSlotPool(_SlotPool):
    """One slot holding every core of the host: the engine runs on all of them.

    vLLM's CPU backend runs one engine per slot; tensor parallelism across CPU slots is not
    offered, so capacity is 1.
    """

    kind: DeviceKind = "cpu"

    def __init__(self, cores: list[int] | None = None) -> None:
        self.cores = cores or sorted(os.sched_getaffinity(0))
        super().__init__([0])

    def _env(self, ids: tuple[int, ...]) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        return f"CPU, {len(self.cores)} core(s), 1 engine slot"


class NvmlGpuPool(_SlotPool):
    """NVIDIA GPUs from NVML, restricted to CUDA_VISIBLE_DEVICES when it is set."""

    kind: DeviceKind = "gpu"

    def __init__(self, indices: list[int], names: list[str]) -> None:
        self.names = names
        super().__init__(indices)

    def _env(self, ids: tuple[int, ...]) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in ids)}

    def describe(self) -> str:
        names = sorted(set(self.names))
        return f"{self.capacity}x GPU ({', '.join(names)})"

    @classmethod
    def discover(cls) -> NvmlGpuPool | None:
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - any NVML init failure means "no GPU here"
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            indices = list(range(count))
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                wanted = [v.strip() for v in visible.split(",") if v.strip()]
                indices = [int(v) for v in wanted if v.isdigit() and int(v) < count]
            names = []
            for i in indices:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                names.append(name.decode() if isinstance(name, bytes) else name)
        finally:
            pynvml.nvmlShutdown()
        return cls(indices, names) if indices else None


def detect_pool(kind: Literal["auto", "cpu", "gpu"] = "auto") -> DevicePool:
    if kind in ("auto", "gpu"):
        gpus = NvmlGpuPool.discover()
        if gpus is not None:
            return gpus
        if kind == "gpu":
            raise NoDevicesError("engine.devices is 'gpu' but NVML found no NVIDIA GPU here")
    return CpuSlotPool()
