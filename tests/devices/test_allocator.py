"""Allocator properties over generated scenarios (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autotune.devices.base import Allocator, NoDevicesError


def simulate(n_devices: int, jobs: list[tuple[int, int]], workers: int, fail_every: int):
    """Event-driven: ``workers`` slots each submit the next job; jobs hold devices for their
    duration (a failing job releases at once). Returns a log of (time, event, ...)."""
    allocator = Allocator(range(n_devices))
    queue = list(enumerate(jobs))
    running: list[tuple[int, int, tuple[int, ...]]] = []  # (end, job, ids)
    waiting: dict[int, object] = {}
    now = 0
    log = []
    submitted = 0
    while queue or waiting or running:
        while queue and len(waiting) + len(running) < workers:
            job, (size, _) = queue.pop(0)
            waiting[job] = allocator.submit(size)
            submitted += 1
        for request in allocator.grant():
            job = next(j for j, r in waiting.items() if r is request)
            del waiting[job]
            size, duration = jobs[job]
            if fail_every and job % fail_every == 0:
                duration = 0  # the engine failed at once; devices still come back
            held = set().union(*(set(ids) for _, _, ids in running)) if running else set()
            assert not held & set(request.granted), "a device given to two trials"
            assert len(request.granted) == size
            running.append((now + duration, job, request.granted))
            log.append((now, "start", job, size))
        if not running:
            assert not waiting, "requests wait while nothing runs"
            continue
        running.sort()
        end, job, ids = running.pop(0)
        now = max(now, end)
        allocator.release(ids)
        log.append((now, "end", job, len(ids)))
    assert allocator.free == set(range(n_devices)), "devices lost"
    return log


jobs_strategy = st.lists(
    st.tuples(st.sampled_from([1, 1, 1, 2, 2, 4, 8]), st.integers(1, 50)), min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(jobs=jobs_strategy, workers=st.integers(1, 8), fail_every=st.integers(0, 4))
def test_never_shared_never_lost_always_finishes(jobs, workers, fail_every) -> None:
    log = simulate(8, jobs, workers, fail_every)
    assert sum(1 for e in log if e[1] == "start") == len(jobs)
    # never more devices in use than present
    in_use = 0
    for _, event, _, size in log:  # the log is in event order
        in_use += size if event == "start" else -size
        assert 0 <= in_use <= 8


@settings(max_examples=200, deadline=None)
@given(small=st.lists(st.integers(1, 30), min_size=5, max_size=60))
def test_largest_request_is_not_starved(small) -> None:
    """An 8-GPU request behind an endless stream of 1-GPU ones starts after at most
    max_bypass of them overtake it."""
    allocator = Allocator(range(8), max_bypass=4)
    running = [allocator.submit(1) for _ in range(7)]
    allocator.grant()
    big = allocator.submit(8)
    overtakers = 0
    for _duration in small:
        allocator.submit(1)
        for request in allocator.grant():
            if request is big:
                break
            overtakers += 1
        if big.granted:
            break
        allocator.release(running.pop(0).granted)
        granted = allocator.grant()
        running += [r for r in granted if r is not big]
        overtakers += sum(1 for r in granted if r is not big)
        if big.granted:
            break
        if not running:
            break
    assert overtakers <= 4 + 7


def test_asking_more_than_present_is_refused() -> None:
    allocator = Allocator(range(4))
    with pytest.raises(NoDevicesError, match="5 device"):
        allocator.submit(5)
    allocator.mark_unavailable([0])
    with pytest.raises(NoDevicesError, match="stuck"):
        allocator.submit(4)


def test_small_requests_backfill_while_a_big_one_waits() -> None:
    allocator = Allocator(range(4), max_bypass=2)
    first = allocator.submit(2)
    allocator.grant()
    big = allocator.submit(4)
    small = [allocator.submit(1) for _ in range(3)]
    granted = allocator.grant()
    assert first.granted and not big.granted
    assert granted == small[:2]  # the two free devices are used, not left idle
    assert big.bypassed == 2
    # big has been overtaken max_bypass times: it now reserves the pool
    allocator.release(small[0].granted)
    assert allocator.grant() == []
    allocator.release(small[1].granted)
    allocator.release(first.granted)
    assert allocator.grant() == [big]
