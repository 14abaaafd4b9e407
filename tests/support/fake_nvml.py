"""A stand-in for the ``pynvml`` module, faked only at its function boundary, for machines
without an NVIDIA GPU. Memory used by an engine can be set per GPU to test release polling."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

GIB = 1024**3


class NVMLError(Exception):
    pass


@dataclass
class FakeNvml:
    names: list[str] = field(default_factory=lambda: ["NVIDIA H100 80GB HBM3"] * 8)
    total: int = 80 * GIB
    used: dict[int, int] = field(default_factory=dict)
    util: dict[int, float] = field(default_factory=dict)
    # topology level between two GPUs (NVML: 10 same board ... 50 system); default by halves
    levels: dict[tuple[int, int], int] = field(default_factory=dict)
    initialised: bool = False
    fail_init: bool = False

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.fail_init:
            raise NVMLError("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if not 0 <= index < len(self.names):
            raise NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:  # noqa: N802
        return self.names[handle]

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return f"GPU-00000000-0000-0000-0000-{handle:012d}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        used = self.used.get(handle, 500 * 1024**2)
        return SimpleNamespace(total=self.total, used=used, free=self.total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=self.util.get(handle, 0.0), memory=0.0)

    def nvmlDeviceGetTopologyCommonAncestor(self, a: int, b: int) -> int:  # noqa: N802
        key = (min(a, b), max(a, b))
        if key in self.levels:
            return self.levels[key]
        return 10 if a // 4 == b // 4 else 40  # two boards of four
