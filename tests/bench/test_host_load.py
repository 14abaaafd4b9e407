"""HostLoadSampler on a fake /proc and on the real one (moved from test_stats)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune.bench.host_load import HostLoadSampler

# --- host load --------------------------------------------------------------------------------


def _write_proc(
    root: Path, cpu: list[int], uptime_s: float, pids: dict[int, tuple[int, int, int]]
) -> None:
    """A fake /proc: ``cpu`` is user..steal jiffies; pids map to (ppid, utime+stime, start)."""
    root.mkdir(exist_ok=True)
    (root / "stat").write_text(
        "cpu  " + " ".join(map(str, cpu)) + " 0 0\n"
        "cpu0 0 0 0 0 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\nintr 1\n"
    )
    (root / "uptime").write_text(f"{uptime_s} 0.0\n")
    for pid, (ppid, ticks, start) in pids.items():
        (root / str(pid)).mkdir(exist_ok=True)
        fields = ["S", ppid] + [0] * 9 + [ticks, 0] + [0] * 6 + [start] + [0] * 30
        (root / str(pid) / "stat").write_text(f"{pid} (a) b) " + " ".join(map(str, fields)))


def test_host_load_accounting_on_a_fake_proc(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    proc = tmp_path / "proc"
    # user nice system idle iowait irq softirq steal
    _write_proc(proc, [100, 0, 0, 1000, 0, 0, 0, 0], 10.0, {10: (1, 50, 0), 99: (1, 5, 0)})
    sampler = HostLoadSampler(lambda: [10], interval_s=3600, proc=proc)
    sampler.start()
    # Over the interval: 200 jiffies of capacity (2 CPUs), 120 busy, 10 steal. Ours: pid 10
    # +30; its child 11, born during the interval, all its 20; its child 12, older than the
    # interval but never seen before, nothing (its CPU time before the interval is unknown).
    _write_proc(
        proc,
        [200, 10, 10, 1070, 0, 0, 0, 10],
        11.0,
        {10: (1, 80, 0), 11: (10, 20, int(10.5 * ticks)), 99: (1, 90, 0), 12: (10, 7, 0)},
    )
    sampler.stop()
    load = sampler.result()
    assert load.cpus == 2
    assert load.samples == 2
    assert load.busy_pct == pytest.approx(60.0)
    assert load.ours_pct == pytest.approx(25.0)
    assert load.foreign_pct == pytest.approx(35.0)
    assert load.foreign_peak_pct == pytest.approx(35.0)
    assert load.steal_pct == pytest.approx(5.0)
    assert load.foreign_cores == pytest.approx(0.7)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_host_load_sees_a_foreign_busy_loop() -> None:
    """Two samplers watch one busy loop: one counts it as ours, the other as foreign."""
    loop = subprocess.Popen(
        [sys.executable, "-c", "import time\ne = time.time() + 4\nwhile time.time() < e: pass"]
    )
    try:
        time.sleep(0.5)
        me = os.getpid()
        foreign = HostLoadSampler(lambda: [me], include_descendants=False)
        mine = HostLoadSampler(lambda: [me])  # the loop is our child: ours
        loop_before, t0 = _cpu_ticks(loop.pid), time.monotonic()
        with foreign, mine:
            time.sleep(2.0)
        loop_ticks, seconds = _cpu_ticks(loop.pid) - loop_before, time.monotonic() - t0
    finally:
        loop.kill()
        loop.wait()
    a, b = foreign.result(), mine.result()
    cpus = a.cpus
    loop_pct = 100.0 * loop_ticks / (seconds * os.sysconf("SC_CLK_TCK") * cpus)
    assert cpus == os.cpu_count()
    assert a.samples >= 4 and 1.8 < a.duration_s < 3.5
    for load in (a, b):
        assert 0.0 <= load.foreign_pct <= load.busy_pct <= 100.0
        assert 0.0 <= load.steal_pct <= 100.0
    assert loop_pct > 3.0, "the busy loop got no CPU at all"
    assert a.foreign_pct - b.foreign_pct == pytest.approx(loop_pct, abs=max(3.0, 0.3 * loop_pct))
    assert b.ours_pct - a.ours_pct == pytest.approx(loop_pct, abs=max(3.0, 0.3 * loop_pct))
    assert a.foreign_pct >= loop_pct * 0.7


def test_host_load_sampler_hands_back_errors_from_its_thread() -> None:
    calls = []

    def ours() -> list[int]:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("engine handle gone")
        return [os.getpid()]

    sampler = HostLoadSampler(ours, interval_s=0.01)
    sampler.start()
    time.sleep(0.2)
    with pytest.raises(RuntimeError, match="engine handle gone"):
        sampler.stop()
