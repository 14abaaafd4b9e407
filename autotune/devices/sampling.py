"""Sample how busy an engine keeps its devices while it is being measured.

Every ``interval_s`` (0.5 s): on GPUs, NVML utilisation and memory of the trial's GPUs; on a CPU
host, the busy fraction of the trial's cores (from /proc/stat) and the engine's resident memory.
``summary()`` gives mean and peak per trial.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from autotune.devices.base import DevicePool, DeviceSet

MIB = 1024**2


def read_core_times() -> dict[int, tuple[int, int]]:
    """Per core: (busy jiffies, total jiffies) from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        total = sum(values[:8])
        out[int(name[3:])] = (total - idle, total)
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class UtilisationSampler:
    def __init__(
        self, pool: DevicePool, devices: DeviceSet, engine_pids: Callable[[], list[int]],
        interval_s: float = 0.5,
    ) -> None:
        self.pool = pool
        self.devices = devices
        self.engine_pids = engine_pids
        self.interval_s = interval_s
        self.util: list[float] = []
        self.memory: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="utilisation")
        cores_of = getattr(pool, "cores_of", None)
        self.cores = cores_of(devices.ids) if cores_of else []

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        previous = read_core_times()
        while not self._stop.wait(self.interval_s):
            try:
                if self.devices.kind == "gpu":
                    samples = [self.pool.utilisation(i)  # type: ignore[attr-defined]
                               for i in self.devices.ids]
                    self.util.append(sum(u for u, _ in samples) / len(samples))
                    self.memory.append(sum(m for _, m in samples))
                else:
                    now = read_core_times()
                    busy = total = 0
                    for core in self.cores:
                        if core in now and core in previous:
                            busy += now[core][0] - previous[core][0]
                            total += now[core][1] - previous[core][1]
                    previous = now
                    if total > 0:
                        self.util.append(100.0 * busy / total)
                    self.memory.append(rss_bytes(self.engine_pids()))
            except Exception:  # noqa: BLE001 - a failed sample must not fail the trial
                continue

    def summary(self) -> dict[str, float]:
        prefix = "gpu" if self.devices.kind == "gpu" else "cpu"
        out: dict[str, float] = {}
        if self.util:
            out[f"{prefix}_util_mean_pct"] = sum(self.util) / len(self.util)
            out[f"{prefix}_util_peak_pct"] = max(self.util)
        if self.memory:
            key = "gpu_mem" if prefix == "gpu" else "engine_rss"
            out[f"{key}_peak_mib"] = max(self.memory) / MIB
            out[f"{key}_mean_mib"] = sum(self.memory) / len(self.memory) / MIB
        return out
