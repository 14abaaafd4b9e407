"""Two autotune processes on one host never hand out the same device (issue 24, item 13):
``confirm`` next to a study's workers, two studies on one GPU host. Each side is a real
process holding a real pool (CPU slots, or GPUs through pynvml faked at its function boundary,
tests.support.fake_nvml); the host-wide locks are real ``flock``s in a shared directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from autotune.devices import CpuSlotPool, NvmlGpuPool, detect_pool, pool_from_spec
from autotune.devices.host_lock import LOCK_DIR_ENV, HostLocks
from tests.support.fake_nvml import FakeNvml

ROOT = Path(__file__).resolve().parents[2]

# The other process: makes a pool as POOL says, acquires one device, prints its ids and holds
# it until a line comes on stdin (or it is killed).
HOLDER = textwrap.dedent("""
    import json, sys
    from autotune.devices import CpuSlotPool, NvmlGpuPool
    from autotune.devices.host_lock import HostLocks
    from tests.support.fake_nvml import FakeNvml
    kind, lock_dir = sys.argv[1], sys.argv[2]
    if kind == "gpu":
        pool = NvmlGpuPool.discover(FakeNvml(names=["GPU"] * 2))
    elif kind == "cpu-whole":
        pool = CpuSlotPool([0, 1], slots=1)
    else:
        pool = CpuSlotPool([0, 1], slots=2)
    pool.share_host(HostLocks(lock_dir))
    devices = pool.acquire(1)
    print(json.dumps(list(devices.ids)), flush=True)
    sys.stdin.readline()
    pool.release(devices)
    print("released", flush=True)
    sys.stdin.readline()
""")


class Holder:
    def __init__(self, kind: str, lock_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, kind, str(lock_dir)], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        self.ids = json.loads(self.proc.stdout.readline())

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _two_cores() -> None:
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs cores 0 and 1")


def _acquire_in_thread(pool, n: int = 1):
    got: list = []
    thread = threading.Thread(target=lambda: got.append(pool.acquire(n)), daemon=True)
    thread.start()
    return thread, got


def _pool(kind: str, lock_dir: Path):
    if kind == "gpu":
        pool = NvmlGpuPool.discover(FakeNvml(names=["GPU"] * 2), release_timeout_s=1,
                                    poll_s=0.01)
    else:
        _two_cores()
        pool = CpuSlotPool([0, 1], slots=2)
    return pool.share_host(HostLocks(lock_dir))


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_a_device_another_process_holds_is_not_handed_out(tmp_path: Path, kind: str) -> None:
    pool = _pool(kind, tmp_path)
    other = Holder(kind, tmp_path)
    try:
        assert other.ids == [0]
        mine = pool.acquire(1)
        assert mine.ids == (1,)  # not the other process's device
        assert pool.held_elsewhere() == {0: f"pid {other.proc.pid}"}
        thread, got = _acquire_in_thread(pool)
        thread.join(1.5)
        assert not got  # both devices are in use on this host: wait
        other.release()
        thread.join(10)
        assert got and got[0].ids == (0,)
        pool.release(mine)
        pool.release(got[0])
    finally:
        other.close()


def test_pools_that_cut_the_host_differently_still_exclude_each_other(tmp_path: Path) -> None:
    _two_cores()
    pool = CpuSlotPool([0, 1], slots=2).share_host(HostLocks(tmp_path))
    other = Holder("cpu-whole", tmp_path)  # one slot of both cores
    try:
        thread, got = _acquire_in_thread(pool)
        thread.join(1.5)
        assert not got
        other.release()
        thread.join(10)
        assert got and got[0].ids == (0,)
        pool.release(got[0])
    finally:
        other.close()


def test_a_killed_process_leaves_no_device_held(tmp_path: Path) -> None:
    pool = _pool("gpu", tmp_path)
    holders = [Holder("gpu", tmp_path), None]
    try:
        holders[1] = Holder("gpu", tmp_path)
        assert sorted(h.ids[0] for h in holders) == [0, 1]  # two processes: two GPUs
        holders[0].proc.send_signal(signal.SIGKILL)
        holders[0].proc.wait()
        started = time.monotonic()
        devices = pool.acquire(1)
        assert devices.ids == tuple(holders[0].ids)
        assert time.monotonic() - started < 5
        pool.release(devices)
    finally:
        for holder in holders:
            if holder is not None:
                holder.close()


def test_pools_in_one_process_do_not_wait_for_each_other(tmp_path: Path) -> None:
    locks = HostLocks(tmp_path)
    first = NvmlGpuPool.discover(FakeNvml(names=["GPU"]), release_timeout_s=1, poll_s=0.01)
    second = NvmlGpuPool.discover(FakeNvml(names=["GPU"]), release_timeout_s=1, poll_s=0.01)
    assert first is not None and second is not None
    a = first.share_host(locks).acquire(1)
    b = second.share_host(HostLocks(tmp_path)).acquire(1)  # as before: each pool its own
    first.release(a)
    second.release(b)


def _free_elsewhere(lock_dir: Path, name: str) -> bool:
    """Whether another process can take the host lock ``name`` now."""
    code = ("import sys; from autotune.devices.host_lock import HostLocks; "
            "print(HostLocks(sys.argv[1]).take([sys.argv[2]]))")
    run = subprocess.run([sys.executable, "-c", code, str(lock_dir), name], cwd=ROOT,
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return run.stdout.strip() == "True"


def test_the_pools_autotune_makes_share_the_host(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    core = min(os.sched_getaffinity(0))
    for pool in (detect_pool("cpu"), pool_from_spec("cpu"), pool_from_spec(f"cpu:{core}")):
        devices = pool.acquire(1)
        assert not _free_elsewhere(tmp_path, f"cpu-core-{core}")
        pool.release(devices)
        assert _free_elsewhere(tmp_path, f"cpu-core-{core}")
