"""procfs on a fake /proc, and on the real one where there is one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autotune import procfs
from autotune.devices.sampling import read_core_times, rss_bytes


def _fake_proc(root: Path) -> Path:
    root.mkdir()
    (root / "stat").write_text(
        "cpu  10 1 2 300 4 5 6 7 0 0\n"
        "cpu0 4 0 1 150 2 2 3 3 0 0\n"
        "cpu1 6 1 1 150 2 3 3 4\n"
        "intr 12345\nctxt 99\n"
    )
    (root / "uptime").write_text("1234.56 4000.00\n")
    (root / "42").mkdir()
    # The command name holds ") " and spaces: fields are counted after the last ")".
    fields = ["R", 7, 40, 40] + [0] * 7 + [111, 22] + [0] * 6 + [9876] + [0] * 30
    (root / "42" / "stat").write_text("42 (odd) name) " + " ".join(map(str, fields)) + "\n")
    (root / "42" / "status").write_text("Name:\todd\nVmPeak:\t 9000 kB\nVmRSS:\t  2048 kB\n")
    (root / "43").mkdir()
    (root / "43" / "status").write_text("Name:\tzombie\nState:\tZ\n")
    (root / "self").mkdir()
    return root


def test_cpu_stat_host_and_cores(tmp_path: Path) -> None:
    stat = procfs.cpu_stat(_fake_proc(tmp_path / "proc"))
    assert stat.host == procfs.CpuTimes(10, 1, 2, 300, 4, 5, 6, 7)
    assert stat.host.total == 335
    assert sorted(stat.cores) == [0, 1]
    assert stat.cores[1] == procfs.CpuTimes(6, 1, 1, 150, 2, 3, 3, 4)


def test_short_cpu_lines_pad_with_zeros() -> None:
    assert procfs.CpuTimes.parse(["1", "2", "3", "4"]) == procfs.CpuTimes(1, 2, 3, 4, 0, 0, 0, 0)


def test_missing_host_files_raise(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("intr 1\n")
    with pytest.raises(OSError, match="no cpu line"):
        procfs.cpu_stat(tmp_path)
    with pytest.raises(OSError):
        procfs.uptime_s(tmp_path)


def test_uptime_pids_and_process_files(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "proc")
    assert procfs.uptime_s(proc) == pytest.approx(1234.56)
    assert sorted(procfs.pids(proc)) == [42, 43]
    assert procfs.process_stat(42, proc) == procfs.ProcessStat(
        state="R", ppid=7, session=40, cpu_ticks=133, start_ticks=9876
    )
    assert procfs.process_stat(43, proc) is None  # no stat file: gone
    assert procfs.process_stat(44, proc) is None
    assert procfs.rss_bytes(42, proc) == 2048 * 1024
    assert procfs.rss_bytes(43, proc) is None  # no VmRSS line
    assert procfs.rss_bytes(44, proc) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_the_real_proc() -> None:
    me = os.getpid()
    stat = procfs.cpu_stat()
    assert len(stat.cores) == os.cpu_count()
    assert stat.host.total >= sum(t.total for t in stat.cores.values()) * 0.9
    assert procfs.uptime_s() > 0
    assert me in procfs.pids()
    mine = procfs.process_stat(me)
    assert mine is not None and mine.ppid == os.getppid() and mine.session == os.getsid(0)
    assert (procfs.rss_bytes(me) or 0) > 1024**2
    # The CPU sampler's views of the same files.
    cores = read_core_times()
    assert sorted(cores) == sorted(stat.cores)
    assert all(0 <= busy <= total for busy, total in cores.values())
    assert rss_bytes([2**22 + 12345]) == 0  # above pid_max: never a live process
    assert rss_bytes([me, me]) > 2 * 1024**2
