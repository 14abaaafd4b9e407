"""CPU core sets for vLLM's CPU build.

With one trial at a time the engine gets the whole host and vLLM's own thread binding. For
parallel trials each slot is a disjoint set of cores, pinned with ``VLLM_CPU_OMP_THREADS_BIND``
(``VLLM_CPU_NUM_OF_RESERVED_CPU=0``), with its own KV-cache budget, so trials share neither
cores nor memory. The number of slots follows from the cores and from what one engine
instance really needs in memory.
"""

from __future__ import annotations

import glob
import os

from autotune.devices.base import PooledDevices

# Resident memory of one CPU engine instance on the demo model, measured here (vLLM 0.32 CPU):
# API server ~0.6 GiB + engine core ~0.6 GiB + worker ~1.6 GiB. Model weights and the KV cache
# come on top.
ENGINE_BASE_MEMORY_BYTES = 3 * 1024**3
HOST_RESERVE_BYTES = 2 * 1024**3
DEFAULT_KV_CACHE_BYTES = 1024**3


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def node_memory_bytes(core: int) -> int | None:
    """Total memory of the NUMA node of ``core`` (what vLLM's CPU worker sizes its budget
    from), or the host's MemTotal where no node is exposed."""
    node = next(iter(glob.glob(f"/sys/devices/system/cpu/cpu{core}/node*")), None)
    paths = [f"/sys/devices/system/node/{os.path.basename(node)}/meminfo"] if node else []
    for path in [*paths, "/proc/meminfo"]:
        try:
            with open(path) as fh:
                for line in fh:
                    if "MemTotal:" in line:
                        return int(line.split("MemTotal:")[1].split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return None


def parse_bytes(value: object) -> int | None:
    """``"1G"``, ``"512M"``, ``2147483648`` → bytes (vLLM's --kv-cache-memory-bytes format)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    if text and text[-1] in scale:
        return int(float(text[:-1]) * scale[text[-1]])
    return int(float(text))


def derived_slots(
    cores: int, cores_per_slot: int, per_instance_bytes: int, available_bytes: int
) -> int:
    """How many engines fit at once: limited by cores and by memory, at least one."""
    by_cores = cores // max(cores_per_slot, 1)
    by_memory = max(available_bytes - HOST_RESERVE_BYTES, 0) // max(per_instance_bytes, 1)
    return max(1, min(by_cores, by_memory))


class CpuSlotPool(PooledDevices):
    kind = "cpu"

    def __init__(
        self,
        cores: list[int] | None = None,
        *,
        slots: int = 1,
        kv_cache_bytes: int | None = None,
    ) -> None:
        host_cores = sorted(os.sched_getaffinity(0))
        self.cores = cores or host_cores
        if slots < 1 or slots > len(self.cores):
            raise ValueError(f"{slots} CPU slot(s) asked for {len(self.cores)} core(s)")
        # One slot on the whole host keeps vLLM's own binding; anything narrower is pinned.
        self.pinned = slots > 1 or sorted(self.cores) != host_cores
        per_slot = len(self.cores) // slots
        self.core_sets = [self.cores[i * per_slot:(i + 1) * per_slot] for i in range(slots)]
        self.kv_cache_bytes = kv_cache_bytes
        super().__init__(list(range(slots)))

    @classmethod
    def for_parallel(
        cls, parallel: int | None, *, kv_cache_bytes: int | None = None,
        cores_per_slot: int = 1,
    ) -> CpuSlotPool:
        """``parallel`` slots (None = as many as cores and memory allow)."""
        cores = sorted(os.sched_getaffinity(0))
        per_instance = ENGINE_BASE_MEMORY_BYTES + (kv_cache_bytes or DEFAULT_KV_CACHE_BYTES)
        most = derived_slots(len(cores), cores_per_slot, per_instance, available_memory_bytes())
        slots = most if parallel is None else min(parallel, most)
        return cls(cores, slots=slots, kv_cache_bytes=kv_cache_bytes)

    @property
    def capacity(self) -> int:
        return 1  # vLLM's CPU build runs one engine per slot; no tensor parallelism across slots

    def environment(self, ids: tuple[int, ...]) -> dict[str, str]:
        if not self.pinned:
            return {}
        cores = [c for i in ids for c in self.core_sets[i]]
        env = {
            "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores),
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            # vLLM binds OpenMP threads to these cores only in its multiprocess executor.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
        }
        if self.kv_cache_bytes:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, self.kv_cache_bytes // 1024**3))
        return env

    def label(self, ids: tuple[int, ...]) -> str:
        return _ranges(self.cores_of(ids)) if self.pinned else "all cores"

    def host_names(self, device: int) -> list[str]:
        """A slot's cores: pools that cut the host into other slots still see the overlap."""
        return [f"cpu-core-{core}" for core in self.cores_of((device,))]

    def device_memory(self) -> dict[int, int]:
        memory = {i: node_memory_bytes(self.cores_of((i,))[0]) for i in range(self.slots)}
        return {i: m for i, m in memory.items() if m}

    def cores_of(self, ids: tuple[int, ...]) -> list[int]:
        return [c for i in ids for c in self.core_sets[i]] if self.pinned else list(self.cores)

    def describe(self) -> str:
        if not self.pinned:
            return f"CPU, {len(self.cores)} core(s), 1 engine slot"
        return (f"CPU cores {_ranges(self.cores)}, {self.slots} engine slot(s) of "
                f"{len(self.core_sets[0])} core(s)")

    def inventory(self) -> list[dict[str, object]]:
        return [
            {"slot": i, "cores": self.cores_of((i,)), "pinned": self.pinned}
            for i in range(self.slots)
        ]


def _ranges(cores: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"`` (the inverse of ``parse_core_list``)."""
    runs: list[list[int]] = []
    for core in sorted(cores):
        if runs and runs[-1][1] == core - 1:
            runs[-1][1] = core
        else:
            runs.append([core, core])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
