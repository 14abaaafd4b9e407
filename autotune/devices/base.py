"""The device-pool boundary and the fair allocator every pool shares.

A pool hands out disjoint device sets. Requests are served first-fit in arrival order, so small
trials fill devices a large one cannot use yet; a request that has been overtaken
``max_bypass`` times reserves the pool (nobody behind it may start) until it fits, so the
largest request is never starved.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self, runtime_checkable

from autotune.devices.host_lock import HostLocks

DeviceKind = Literal["cpu", "gpu"]
DEFAULT_MAX_BYPASS = 4


@dataclass(frozen=True)
class DeviceSet:
    """The devices of one trial and the environment that confines the engine to them."""

    kind: DeviceKind
    ids: tuple[int, ...]
    env: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    label: str = ""  # what the devices are, for people (e.g. CPU cores "0-3")

    def describe(self) -> str:
        return f"{self.kind}:{self.label or ','.join(str(i) for i in self.ids)}"


class NoDevicesError(Exception):
    """More devices were asked for than the pool can ever provide."""


@runtime_checkable
class DevicePool(Protocol):
    """Hands out disjoint device sets; thread-safe.

    ``capacity``: the most devices one trial may get (what "devices present" means to the
    rejection rules). ``slots``: how many single-device trials can run at once.
    ``acquire(n)`` blocks until ``n`` devices are free (fairly, see module doc) and returns
    them; it raises NoDevicesError when ``n`` can never be satisfied. ``release`` gives a set
    back (also after failures); a pool may hold a released device back until the previous
    engine's memory is free, and report it as stuck when that never happens.
    ``mark_suspect`` notes devices whose engine left a process behind: they stay in use, but
    other free devices are handed out first, and ``suspects()`` says why.
    """

    kind: DeviceKind

    @property
    def capacity(self) -> int: ...

    @property
    def slots(self) -> int: ...

    def acquire(self, n: int) -> DeviceSet: ...

    def release(self, devices: DeviceSet) -> None: ...

    def stuck(self) -> list[int]: ...

    def mark_suspect(self, devices: DeviceSet, reason: str) -> None: ...

    def suspects(self) -> dict[int, str]: ...

    def describe(self) -> str: ...

    def inventory(self) -> list[dict[str, object]]: ...


@runtime_checkable
class ReportsDeviceMemory(Protocol):
    """Optional pool capability: ``device_memory()`` maps each device id to its total memory in
    bytes (a CPU slot: the total of the host memory node its cores use). The memory-fit check
    reads it; a pool without it gets no check on a memory budget it cannot know."""

    def device_memory(self) -> dict[int, int]: ...


@dataclass(eq=False)
class Request:
    n: int
    bypassed: int = 0
    granted: tuple[int, ...] | None = None


Chooser = Callable[[Sequence[int], int], tuple[int, ...]]


def lowest_ids(free: Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(sorted(free)[:n])


class Allocator:
    """The allocation policy, without threads or time (the simulator uses it too)."""

    def __init__(
        self, devices: Sequence[int], *, max_bypass: int = DEFAULT_MAX_BYPASS,
        chooser: Chooser = lowest_ids,
    ) -> None:
        self.devices = tuple(devices)
        self.free: set[int] = set(devices)
        self.unavailable: set[int] = set()
        self.suspect: set[int] = set()  # handed out last (their last engine left a process)
        self.waiting: list[Request] = []
        self.max_bypass = max_bypass
        self.chooser = chooser

    @property
    def usable(self) -> int:
        return len(self.devices) - len(self.unavailable)

    def submit(self, n: int) -> Request:
        if n < 1:
            raise NoDevicesError(f"a trial needs at least one device, not {n}")
        if n > self.usable:
            raise NoDevicesError(
                f"{n} device(s) asked; {len(self.devices)} present"
                + (f", {len(self.unavailable)} stuck" if self.unavailable else "")
            )
        request = Request(n)
        self.waiting.append(request)
        return request

    def grant(self) -> list[Request]:
        """Serve waiting requests that fit now; return those granted."""
        granted: list[Request] = []
        overtaken: list[Request] = []
        for request in list(self.waiting):
            if request.n <= len(self.free):
                trusted = sorted(self.free - self.suspect)
                ids = self.chooser(trusted if len(trusted) >= request.n else sorted(self.free),
                                   request.n)
                self.free.difference_update(ids)
                request.granted = ids
                self.waiting.remove(request)
                granted.append(request)
                for older in overtaken:
                    older.bypassed += 1
            else:
                if request.bypassed >= self.max_bypass:
                    break  # reserved: nobody behind it may start until it fits
                overtaken.append(request)
        return granted

    def cancel(self, request: Request) -> None:
        if request in self.waiting:
            self.waiting.remove(request)

    def release(self, ids: Sequence[int]) -> None:
        for device in ids:
            if device in self.devices and device not in self.unavailable:
                self.free.add(device)

    def mark_unavailable(self, ids: Sequence[int]) -> None:
        self.unavailable.update(ids)
        self.free.difference_update(ids)


class PooledDevices:
    """Thread-safe shell around an Allocator; subclasses say what a device is.

    With ``share_host`` the pool also respects the other autotune processes of the host
    (``host_lock``): a free device another process holds is not handed out until it is given
    back there; ``host_names`` says which lock names a device takes.
    """

    kind: DeviceKind

    def __init__(self, ids: Sequence[int], chooser: Chooser = lowest_ids) -> None:
        self._allocator = Allocator(ids, chooser=chooser)
        self._cond = threading.Condition()
        self._suspects: dict[int, str] = {}
        self._host: HostLocks | None = None

    def share_host(self, locks: HostLocks | None = None) -> Self:
        """Hand out only devices no other autotune process on this host holds (``locks``: the
        host's lock directory, ``host_lock.lock_dir()`` by default). Returns the pool."""
        self._host = locks or HostLocks()
        return self

    def host_names(self, device: int) -> list[str]:
        """The host-wide lock names of one device (what another pool calls the same thing)."""
        return [f"{self.kind}-{device}"]

    def held_elsewhere(self) -> dict[int, str]:
        """Free devices that another process of the host holds now, with its lock's note."""
        if self._host is None:
            return {}
        with self._cond:
            free = sorted(self._allocator.free)
        held: dict[int, str] = {}
        for device in free:
            names = self.host_names(device)
            if self._host.take(names):
                self._host.give_back(names)
            else:
                held[device] = "; ".join(filter(None, map(self._host.holder, names)))
        return held

    def _grant(self) -> None:
        """The allocator's grant, among the free devices this process can lock host-wide;
        the granted ones stay locked until released. Called with ``_cond`` held."""
        if self._host is None or not self._allocator.waiting:
            self._allocator.grant()
            return
        free = set(self._allocator.free)
        locked = {d for d in sorted(free) if self._host.take(self.host_names(d))}
        elsewhere = free - locked
        self._allocator.free -= elsewhere
        try:
            self._allocator.grant()
        finally:
            self._allocator.free |= elsewhere
            for device in locked & self._allocator.free:
                self._host.give_back(self.host_names(device))

    @property
    def capacity(self) -> int:
        return len(self._allocator.devices)

    @property
    def slots(self) -> int:
        return len(self._allocator.devices)

    def acquire(self, n: int) -> DeviceSet:
        if n > self.capacity:
            raise NoDevicesError(
                f"{n} {self.kind} device(s) asked for one trial; at most {self.capacity} here"
            )
        with self._cond:
            request = self._allocator.submit(n)
            try:
                while request.granted is None:
                    self._grant()
                    if request.granted is None:
                        if n > self._allocator.usable:
                            raise NoDevicesError(
                                f"{n} device(s) asked; devices {self.stuck()} are stuck"
                            )
                        self._cond.wait(timeout=1.0)
                    self._cond.notify_all()
            except BaseException:
                self._allocator.cancel(request)
                if request.granted is not None:
                    self._allocator.release(request.granted)
                    self._give_back_host(request.granted)
                self._cond.notify_all()
                raise
        return DeviceSet(self.kind, request.granted, self.environment(request.granted),
                         self.label(request.granted))

    def release(self, devices: DeviceSet) -> None:
        ready, stuck = self.drain(devices.ids)
        with self._cond:
            if stuck:
                self._allocator.mark_unavailable(stuck)
            self._allocator.release(ready)
            self._give_back_host(devices.ids)
            self._grant()
            self._cond.notify_all()

    def _give_back_host(self, ids: Sequence[int]) -> None:
        if self._host is not None:
            for device in ids:
                if device in self._allocator.devices:
                    self._host.give_back(self.host_names(device))

    def stuck(self) -> list[int]:
        return sorted(self._allocator.unavailable)

    def mark_suspect(self, devices: DeviceSet, reason: str) -> None:
        with self._cond:
            self._allocator.suspect.update(devices.ids)
            self._suspects.update(dict.fromkeys(devices.ids, reason))

    def suspects(self) -> dict[int, str]:
        with self._cond:
            return dict(self._suspects)

    def drain(self, ids: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """Wait until the devices are free of the previous engine: (ready, stuck)."""
        return list(ids), []

    def environment(self, ids: tuple[int, ...]) -> dict[str, str]:
        raise NotImplementedError

    def label(self, ids: tuple[int, ...]) -> str:
        return ",".join(str(i) for i in ids)


def best_connected(levels: dict[tuple[int, int], int]) -> Chooser:
    """A chooser preferring device sets whose worst pairwise link is the fastest.

    ``levels[(a, b)]`` is NVML's topology level between two devices (lower is closer:
    same board < same switch < host bridge < NUMA node < system).
    """

    def choose(free: Sequence[int], n: int) -> tuple[int, ...]:
        if n == 1 or not levels:
            return tuple(sorted(free)[:n])
        candidates = itertools.combinations(sorted(free), n)
        best: tuple[int, ...] | None = None
        best_key: tuple[int, int] | None = None
        for count, combo in enumerate(candidates):
            if count > 5000:
                break
            pairs = [levels.get((a, b), levels.get((b, a), 100))
                     for a, b in itertools.combinations(combo, 2)]
            key = (max(pairs), sum(pairs))
            if best_key is None or key < best_key:
                best, best_key = combo, key
        assert best is not None
        return best

    return choose
