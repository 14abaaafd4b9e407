"""Host CPU accounting over a measurement: how much of the host did processes not ours use?

``HostLoadSampler`` samples /proc (host CPU, our processes' CPU) in a thread while a benchmark
runs; ``host_load`` turns the samples into a ``HostLoad``, which ``stats.detect_disturbance``
judges.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from autotune import procfs
from autotune.periodic import PeriodicSampler


@dataclass(frozen=True)
class HostLoad:
    """CPU accounting of the host over a sampled period. Percentages are of host capacity.

    Capacity is every CPU's time over the period (``cpus`` × duration). ``busy_pct`` is the
    time CPUs ran anything (steal excluded), ``ours_pct`` the part run by our processes,
    ``foreign_pct`` the rest (busy − ours, never below 0), ``foreign_peak_pct`` the highest
    foreign share over any stretch of consecutive samples at least ``peak_window_s`` long, and
    ``steal_pct`` the time the hypervisor gave our virtual CPUs to someone else.
    """

    duration_s: float
    cpus: int
    busy_pct: float
    ours_pct: float
    foreign_pct: float
    foreign_peak_pct: float
    steal_pct: float
    samples: int

    @property
    def foreign_cores(self) -> float:
        """Foreign CPU use in cores (``foreign_pct`` of ``cpus``)."""
        return self.foreign_pct / 100.0 * self.cpus

    @property
    def foreign_share_of_busy_pct(self) -> float:
        """Foreign CPU time as a share of all busy time (NaN when the host was idle)."""
        return 100.0 * self.foreign_pct / self.busy_pct if self.busy_pct > 0 else math.nan

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {k: float(v) for k, v in asdict(self).items()}
        out["foreign_cores"] = self.foreign_cores
        out["foreign_share_of_busy_pct"] = self.foreign_share_of_busy_pct
        return out


@dataclass(frozen=True)
class HostSample:
    """One look at /proc: when (monotonic s), host jiffies and our processes' CPU ticks."""

    at: float
    cpu: tuple[int, int, int]  # total, busy, steal jiffies, all CPUs
    uptime_ticks: float
    ours: dict[int, tuple[int, int]]  # pid -> (utime + stime, starttime), in ticks


@dataclass(frozen=True)
class _Interval:
    seconds: float
    total: int
    busy: int
    steal: int
    ours: int


def _intervals(samples: Sequence[HostSample]) -> list[_Interval]:
    out = []
    for prev, cur in zip(samples, samples[1:], strict=False):
        ours = 0
        for pid, (ticks, started) in cur.ours.items():
            if pid in prev.ours and prev.ours[pid][1] == started:
                ours += max(0, ticks - prev.ours[pid][0])
            elif started >= prev.uptime_ticks:
                ours += ticks  # born during the interval: all its CPU time is in it
        out.append(
            _Interval(
                seconds=cur.at - prev.at,
                total=cur.cpu[0] - prev.cpu[0],
                busy=cur.cpu[1] - prev.cpu[1],
                steal=cur.cpu[2] - prev.cpu[2],
                ours=ours,
            )
        )
    return out


def host_load(samples: Sequence[HostSample], cpus: int, peak_window_s: float) -> HostLoad:
    """The load between the first and the last sample (zeros with fewer than two).

    A process of ours counts in an interval when it was seen at both ends (the difference of
    its CPU time) or was born during it (all its CPU time); one seen only at the end but older
    than the interval counts nothing, its CPU time before the interval being unknown.
    """
    intervals = _intervals(samples)

    def pct(part: float, whole: float) -> float:
        return 100.0 * part / whole if whole > 0 else 0.0

    def foreign(chunk: Sequence[_Interval]) -> float:
        busy = sum(i.busy for i in chunk)
        ours = min(busy, sum(i.ours for i in chunk))
        return pct(busy - ours, sum(i.total for i in chunk))

    total = sum(i.total for i in intervals)
    busy = sum(i.busy for i in intervals)
    ours = min(busy, sum(i.ours for i in intervals))
    peak = foreign(intervals)
    for first in range(len(intervals)):
        seconds = 0.0
        for last in range(first, len(intervals)):
            seconds += intervals[last].seconds
            if seconds >= peak_window_s:
                peak = max(peak, foreign(intervals[first : last + 1]))
                break
    return HostLoad(
        duration_s=sum(i.seconds for i in intervals),
        cpus=cpus,
        busy_pct=pct(busy, total),
        ours_pct=pct(ours, total),
        foreign_pct=pct(busy - ours, total),
        foreign_peak_pct=peak,
        steal_pct=pct(sum(i.steal for i in intervals), total),
        samples=len(samples),
    )


class HostLoadSampler(PeriodicSampler):
    """Samples host CPU (``/proc/stat``) and our processes' CPU (``/proc/PID/stat``) in a thread.

    Use as a context manager around a measurement, then read ``result()``::

        with HostLoadSampler(lambda: [os.getpid(), engine_pid]) as sampler:
            run_benchmark()
        load = sampler.result()

    ``ours`` is called at every sample, so processes that start later are picked up; with
    ``include_descendants`` every descendant of the pids it returns is ours too. Limits of
    the accounting: a process of ours that exits between two samples loses its CPU time of that
    interval (it shows as foreign), and in a container ``/proc/stat`` describes the host.
    Linux only: ``/proc`` must exist. ``stop()`` raises whatever ``ours`` (or reading
    ``/proc``) raised in the sampling thread.
    """

    def __init__(
        self,
        ours: Callable[[], Iterable[int]],
        *,
        interval_s: float = 0.5,
        include_descendants: bool = True,
        peak_window_s: float = 2.0,
        proc: str | os.PathLike[str] = procfs.PROC,
    ) -> None:
        super().__init__(interval_s, name="host-load")
        self._ours = ours
        self._include_descendants = include_descendants
        self._peak_window_s = peak_window_s
        self._proc = Path(proc)
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._cpus = 1
        self._samples: list[HostSample] = []
        self._lock = threading.Lock()

    # The first sample is taken before the thread starts and the last after it ends, so the
    # accounting covers exactly the time between start() and stop().
    def on_start(self) -> None:
        self.sample()

    def on_stop(self) -> None:
        self.sample()

    def sample(self) -> None:
        uptime = procfs.uptime_s(self._proc) * self._ticks
        stat = procfs.cpu_stat(self._proc)
        self._cpus = max(1, len(stat.cores))
        host = stat.host
        busy = host.user + host.nice + host.system + host.irq + host.softirq
        cpu = (busy + host.idle + host.iowait + host.steal, busy, host.steal)
        ours = self._our_stats()
        with self._lock:
            self._samples.append(HostSample(time.monotonic(), cpu, uptime, ours))

    def _our_stats(self) -> dict[int, tuple[int, int]]:
        roots = {int(p) for p in self._ours()}
        if not self._include_descendants:
            stats = {pid: procfs.process_stat(pid, self._proc) for pid in roots}
            return {pid: (s.cpu_ticks, s.start_ticks) for pid, s in stats.items() if s}
        everything: dict[int, procfs.ProcessStat] = {}
        for pid in procfs.pids(self._proc):
            s = procfs.process_stat(pid, self._proc)
            if s is not None:
                everything[pid] = s
        children: dict[int, list[int]] = {}
        for pid, s in everything.items():
            children.setdefault(s.ppid, []).append(pid)
        ours: set[int] = set()
        todo = [pid for pid in roots if pid in everything]
        while todo:
            pid = todo.pop()
            if pid not in ours:
                ours.add(pid)
                todo.extend(children.get(pid, ()))
        return {pid: (everything[pid].cpu_ticks, everything[pid].start_ticks) for pid in ours}

    def result(self) -> HostLoad:
        """The load over everything sampled so far (zeros before the second sample)."""
        with self._lock:
            samples = list(self._samples)
        return host_load(samples, self._cpus, self._peak_window_s)
