"""One conformance suite for every DevicePool, plus NVML specifics with pynvml faked at its
function boundary (tests.support.fake_nvml) — these machines have no NVIDIA GPU."""

from __future__ import annotations

import threading
import time

import pytest

from autotune.devices import CpuSlotPool, DevicePool, NoDevicesError, NvmlGpuPool
from autotune.devices.cpu import derived_slots, parse_bytes
from autotune.devices.sampling import UtilisationSampler
from tests.support.fake_nvml import GIB, FakeNvml


def make_cpu() -> CpuSlotPool:
    return CpuSlotPool([0, 1, 2, 3], slots=4, kv_cache_bytes=2 * GIB)


def make_gpu() -> NvmlGpuPool:
    pool = NvmlGpuPool.discover(FakeNvml(), release_timeout_s=1, poll_s=0.01)
    assert pool is not None
    return pool


@pytest.fixture(params=["cpu", "gpu"])
def pool(request) -> DevicePool:
    return make_cpu() if request.param == "cpu" else make_gpu()


def test_conforms_to_protocol(pool: DevicePool) -> None:
    assert isinstance(pool, DevicePool)
    assert pool.slots >= 1 and pool.capacity >= 1
    assert pool.describe()
    assert len(pool.inventory()) == pool.slots


def test_acquire_release_round_trip(pool: DevicePool) -> None:
    sets = [pool.acquire(1) for _ in range(pool.slots)]
    ids = [i for s in sets for i in s.ids]
    assert len(ids) == len(set(ids)) == pool.slots
    for devices in sets:
        assert devices.kind == pool.kind
        pool.release(devices)
    again = [pool.acquire(1) for _ in range(pool.slots)]
    assert sorted(i for s in again for i in s.ids) == sorted(ids)


def test_more_than_capacity_is_refused(pool: DevicePool) -> None:
    with pytest.raises(NoDevicesError):
        pool.acquire(pool.capacity + 1)


def test_acquire_blocks_until_release(pool: DevicePool) -> None:
    held = [pool.acquire(1) for _ in range(pool.slots)]
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(1)))
    waiter.start()
    time.sleep(0.3)
    assert got == []
    pool.release(held[0])
    waiter.join(timeout=5)
    assert got and got[0].ids == held[0].ids


def test_concurrent_trials_never_share(pool: DevicePool) -> None:
    in_use: set[int] = set()
    lock = threading.Lock()
    errors: list[str] = []

    def trial() -> None:
        for _ in range(20):
            devices = pool.acquire(1)
            with lock:
                if in_use & set(devices.ids):
                    errors.append(f"shared {devices.ids}")
                in_use.update(devices.ids)
            time.sleep(0.001)
            with lock:
                in_use.difference_update(devices.ids)
            pool.release(devices)

    threads = [threading.Thread(target=trial) for _ in range(pool.slots * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_cpu_slots_pin_disjoint_cores_with_own_kv_budget() -> None:
    pool = make_cpu()
    a, b = pool.acquire(1), pool.acquire(1)
    assert a.env["VLLM_CPU_OMP_THREADS_BIND"] != b.env["VLLM_CPU_OMP_THREADS_BIND"]
    assert a.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert a.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert CpuSlotPool([0, 1], slots=1).acquire(1).env == {}  # one trial: vLLM's own binding


def test_cpu_slot_count_follows_cores_and_memory() -> None:
    per_instance = 4 * GIB
    assert derived_slots(2, 1, per_instance, 24 * GIB) == 2
    assert derived_slots(16, 1, per_instance, 24 * GIB) == 5  # (24 - 2) // 4
    assert derived_slots(16, 4, per_instance, 64 * GIB) == 4
    assert derived_slots(2, 1, per_instance, 1 * GIB) == 1
    assert parse_bytes("1G") == GIB and parse_bytes("512MiB") == 512 * 1024**2
    assert parse_bytes(1234) == 1234 and parse_bytes(None) is None


def test_nvml_inventory_respects_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    pool = NvmlGpuPool.discover(FakeNvml())
    assert pool is not None
    assert [g["index"] for g in pool.inventory()] == [2, 5]
    devices = pool.acquire(2)
    assert devices.env["CUDA_VISIBLE_DEVICES"].count("GPU-") == 2


def test_no_gpu_when_nvml_fails() -> None:
    assert NvmlGpuPool.discover(FakeNvml(fail_init=True)) is None
    assert NvmlGpuPool.discover(FakeNvml(names=[])) is None


def test_multi_gpu_trials_get_the_best_connected_set() -> None:
    pool = make_gpu()  # GPUs 0-3 on one board, 4-7 on another
    first = pool.acquire(1)
    assert first.ids == (0,)
    tp4 = pool.acquire(4)
    assert tp4.ids == (4, 5, 6, 7)  # not 1,2,3 + one from the other board
    tp2 = pool.acquire(2)
    assert set(tp2.ids) <= {1, 2, 3}


def test_gpu_is_handed_out_only_after_its_memory_is_released() -> None:
    nvml = FakeNvml(names=["H100"] * 2)
    pool = NvmlGpuPool.discover(nvml, release_timeout_s=5, poll_s=0.02)
    assert pool is not None
    devices = pool.acquire(2)
    nvml.used[0] = 70 * GIB  # the dead engine's memory is still mapped
    releaser = threading.Thread(target=pool.release, args=(devices,))
    releaser.start()
    time.sleep(0.2)
    assert releaser.is_alive()  # still polling
    nvml.used[0] = 400 * 1024**2
    releaser.join(timeout=5)
    assert not releaser.is_alive()
    assert pool.acquire(2).ids == (0, 1)


def test_gpu_that_never_frees_is_marked_stuck_not_reused() -> None:
    nvml = FakeNvml(names=["H100"] * 2)
    pool = NvmlGpuPool.discover(nvml, release_timeout_s=0.2, poll_s=0.02)
    assert pool is not None
    devices = pool.acquire(2)
    nvml.used[1] = 60 * GIB
    pool.release(devices)
    assert pool.stuck() == [1]
    assert pool.acquire(1).ids == (0,)
    with pytest.raises(NoDevicesError, match="stuck"):
        pool.acquire(2)


def test_gpu_utilisation_is_sampled() -> None:
    nvml = FakeNvml(names=["H100"] * 2, util={0: 90.0, 1: 70.0}, used={0: 10 * GIB, 1: 30 * GIB})
    pool = NvmlGpuPool.discover(nvml)
    assert pool is not None
    devices = pool.acquire(2)
    with UtilisationSampler(pool, devices, lambda: [], interval_s=0.02) as sampler:
        time.sleep(0.2)
    summary = sampler.summary()
    assert summary["gpu_util_mean_pct"] == pytest.approx(80.0)
    assert summary["gpu_mem_peak_mib"] == pytest.approx(40 * 1024)
