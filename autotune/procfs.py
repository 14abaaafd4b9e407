"""The one reader of Linux's /proc: CPU time (host, per core, per process), uptime, RSS, and
who listens on a TCP port.

Every function takes the ``proc`` root (a fake one in tests) and parses one file; none keeps
state. Host-wide files that cannot be read raise ``OSError``; a process that is gone reads as
None (processes come and go between listing /proc and opening their files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# /proc/stat's CPU columns that autotune reads: user nice system idle iowait irq softirq steal.
CPU_FIELDS = 8


@dataclass(frozen=True)
class CpuTimes:
    """One ``cpu`` line of /proc/stat, in jiffies (columns missing on old kernels are 0)."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @classmethod
    def parse(cls, fields: list[str]) -> CpuTimes:
        values = [int(v) for v in fields[:CPU_FIELDS]]
        values += [0] * (CPU_FIELDS - len(values))
        return cls(*values)

    @property
    def total(self) -> int:
        return (self.user + self.nice + self.system + self.idle + self.iowait + self.irq
                + self.softirq + self.steal)


@dataclass(frozen=True)
class CpuStat:
    """/proc/stat's CPU lines: all CPUs together, and each core by its number."""

    host: CpuTimes
    cores: dict[int, CpuTimes]


@dataclass(frozen=True)
class ProcessStat:
    """The fields of /proc/PID/stat that autotune reads (CPU times in clock ticks)."""

    state: str
    ppid: int
    session: int
    cpu_ticks: int  # utime + stime
    start_ticks: int  # starttime: clock ticks after boot


def cpu_stat(proc: str | os.PathLike[str] = PROC) -> CpuStat:
    """Parse /proc/stat's ``cpu`` and ``cpuN`` lines."""
    host: CpuTimes | None = None
    cores: dict[int, CpuTimes] = {}
    for line in (Path(proc) / "stat").read_text().splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        if name == "cpu":
            host = CpuTimes.parse(fields)
        elif name[3:].isdigit():
            cores[int(name[3:])] = CpuTimes.parse(fields)
    if host is None:
        raise OSError(f"no cpu line in {Path(proc) / 'stat'}")
    return CpuStat(host, cores)


def uptime_s(proc: str | os.PathLike[str] = PROC) -> float:
    """Seconds since boot, from /proc/uptime."""
    return float((Path(proc) / "uptime").read_text().split()[0])


def pids(proc: str | os.PathLike[str] = PROC) -> list[int]:
    """Every process id listed in /proc (some may be gone by the time they are read)."""
    return [int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit()]


def process_stat(pid: int, proc: str | os.PathLike[str] = PROC) -> ProcessStat | None:
    """/proc/PID/stat of ``pid``, or None when it is gone."""
    try:
        text = (Path(proc) / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold ") ": split after the
    # last one. Indices below count from field 3 (state), as proc(5) numbers minus 3.
    fields = text[text.rfind(")") + 2 :].split()
    return ProcessStat(
        state=fields[0], ppid=int(fields[1]), session=int(fields[3]),
        cpu_ticks=int(fields[11]) + int(fields[12]), start_ticks=int(fields[19]),
    )


def rss_bytes(pid: int, proc: str | os.PathLike[str] = PROC) -> int | None:
    """Resident memory of ``pid`` (VmRSS in /proc/PID/status), or None when it is gone."""
    try:
        lines = (Path(proc) / str(pid) / "status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None  # a zombie or kernel thread has no VmRSS line


_TCP_LISTEN = "0A"  # st column of /proc/net/tcp for a listening socket


def listening_sockets(port: int, proc: str | os.PathLike[str] = PROC) -> set[int]:
    """Inodes of the TCP sockets (IPv4 and IPv6) listening on local ``port`` in this network
    namespace, from /proc/net/tcp and /proc/net/tcp6."""
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (Path(proc) / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int, proc: str | os.PathLike[str] = PROC) -> set[int]:
    """Inodes of the sockets ``pid`` holds open (its /proc/PID/fd links ``socket:[N]``); empty
    when it is gone or its descriptors cannot be read (another user's process)."""
    found: set[int] = set()
    try:
        entries = list(os.scandir(Path(proc) / str(pid) / "fd"))
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def command_line(pid: int, proc: str | os.PathLike[str] = PROC) -> str:
    """``pid``'s command line, arguments separated by spaces ("" when it is gone)."""
    try:
        raw = (Path(proc) / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()
