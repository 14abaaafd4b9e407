"""Sample how busy an engine keeps its devices while it is being measured.

Every ``interval_s`` (0.5 s): on GPUs, NVML utilisation and memory of the trial's GPUs; on a CPU
host, the busy fraction of the trial's cores (from /proc/stat) and the engine's resident memory.
``summary()`` gives mean and peak per trial.
"""

from __future__ import annotations

from collections.abc import Callable

from autotune import procfs
from autotune.devices.base import DevicePool, DeviceSet
from autotune.periodic import PeriodicSampler

MIB = 1024**2


def read_core_times() -> dict[int, tuple[int, int]]:
    """Per core: (busy jiffies, total jiffies) from /proc/stat; {} when it cannot be read."""
    try:
        cores = procfs.cpu_stat().cores
    except OSError:
        return {}
    # Busy: everything but idle and iowait (steal included, unlike host_load's busy).
    return {core: (t.total - t.idle - t.iowait, t.total) for core, t in cores.items()}


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of ``pids`` together (the gone ones count nothing)."""
    return sum(procfs.rss_bytes(pid) or 0 for pid in pids)


class UtilisationSampler(PeriodicSampler):
    def __init__(
        self, pool: DevicePool, devices: DeviceSet, engine_pids: Callable[[], list[int]],
        interval_s: float = 0.5,
    ) -> None:
        super().__init__(interval_s, name="utilisation", join_timeout_s=5)
        self.pool = pool
        self.devices = devices
        self.engine_pids = engine_pids
        self.util: list[float] = []
        self.memory: list[int] = []
        cores_of = getattr(pool, "cores_of", None)
        self.cores = cores_of(devices.ids) if cores_of else []
        self._previous: dict[int, tuple[int, int]] = {}

    def on_start(self) -> None:
        self._previous = read_core_times()

    def sample(self) -> None:
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
                    if core in now and core in self._previous:
                        busy += now[core][0] - self._previous[core][0]
                        total += now[core][1] - self._previous[core][1]
                self._previous = now
                if total > 0:
                    self.util.append(100.0 * busy / total)
                self.memory.append(rss_bytes(self.engine_pids()))
        except Exception:  # noqa: BLE001 - a failed sample must not fail the trial
            return

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
