"""The periodic sampler base: hooks in order, errors handed back, one start."""

from __future__ import annotations

import threading
import time

import pytest

from autotune.periodic import PeriodicSampler


class Recorder(PeriodicSampler):
    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(0.01, name="recorder")
        self.events: list[str] = []
        self.threads: set[str] = set()
        self.fail_after = fail_after

    def on_start(self) -> None:
        self.events.append("start")

    def sample(self) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_after is not None and self.events.count("sample") >= self.fail_after:
            raise ValueError("sample broke")
        self.events.append("sample")

    def on_stop(self) -> None:
        self.events.append("stop")


def test_hooks_run_in_order_and_samples_in_the_thread() -> None:
    with Recorder() as sampler:
        assert sampler.events == ["start"]
        time.sleep(0.2)
    events = sampler.events
    assert events[0] == "start" and events[-1] == "stop"
    assert events.count("sample") >= 3 and set(events[1:-1]) == {"sample"}
    assert sampler.threads == {"recorder"}
    sampler.stop()  # a second stop does nothing
    assert sampler.events == events


def test_an_error_in_the_thread_is_raised_by_stop_and_skips_on_stop() -> None:
    sampler = Recorder(fail_after=2)
    sampler.start()
    time.sleep(0.2)
    with pytest.raises(ValueError, match="sample broke"):
        sampler.stop()
    assert sampler.events == ["start", "sample", "sample"]


def test_starts_once() -> None:
    sampler = Recorder()
    with sampler, pytest.raises(RuntimeError, match="Recorder already started"):
        sampler.start()
