"""Trace input that used to crash a study or stall it (issue 24, item 10): token counts and
timestamps that are not finite numbers are refused naming file:line and column, and a replay
whose first run would last longer than a run may take is refused from the file alone, saying
how long it would take and what to set (token counts from the mock server's /tokenize)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autotune.bench.datasets import data_problem
from autotune.bench.prompt_set import WorkloadError
from autotune.bench.traces import MAX_REPLAY_S, parse_trace
from autotune.bench.workload import build_prompts
from autotune.space.workload import TracePrompts, WorkloadSpec
from autotune.testing.mock_openai import MockOpenAI


@pytest.fixture(scope="module")
def server() -> Iterator[MockOpenAI]:
    with MockOpenAI() as mock:
        yield mock


def _trace(path: Path, fmt: str, **more: Any) -> TracePrompts:
    return TracePrompts.model_validate({"path": str(path), "format": fmt, **more})


@pytest.mark.parametrize("name,text,line,message", [
    # json.loads reads Infinity and NaN as floats: int(inf) raised OverflowError on every resume
    ("t.jsonl", '{"timestamp": 0, "input_tokens": 3, "output_tokens": 2}\n'
                '{"timestamp": 1, "input_tokens": Infinity, "output_tokens": 2}\n', 2,
     "input_tokens: expected a whole number of tokens, got inf"),
    ("t.jsonl", '{"timestamp": 0, "input_tokens": 3, "output_tokens": NaN}\n', 1,
     "output_tokens: expected a whole number of tokens, got nan"),
    ("t.jsonl", '{"timestamp": 0, "input_tokens": 1e400, "output_tokens": 2}\n', 1,
     "input_tokens: expected a whole number of tokens"),
    ("t.csv", "timestamp,input_tokens,output_tokens\n0,3,2\n1,3,inf\n", 3,
     "output_tokens: expected a whole number of tokens, got 'inf'"),
    ("t.csv", "timestamp,input_tokens,output_tokens\n0,3,2\n1,-Infinity,2\n", 3,
     "input_tokens: expected a whole number of tokens"),
    # a timestamp that is not a finite number sorts nowhere and replays never
    ("t.jsonl", '{"timestamp": NaN, "input_tokens": 3, "output_tokens": 2}\n', 1,
     "timestamp: expected a finite number or a date-time, got nan"),
    ("t.csv", "timestamp,input_tokens,output_tokens\ninf,3,2\n", 2,
     "timestamp: expected a finite number or a date-time, got 'inf'"),
    ("t.jsonl", '{"timestamp": 1e308, "input_tokens": 3, "output_tokens": 2}\n'
                '{"timestamp": -1e308, "input_tokens": 3, "output_tokens": 2}\n', None,
     "timestamps span more than"),
])
def test_non_finite_trace_numbers_are_refused_naming_line_and_column(
    tmp_path: Path, name: str, text: str, line: int | None, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(WorkloadError) as raised:
        parse_trace(_trace(path, "generic"))
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(raised.value).startswith(where), str(raised.value)
    assert message in str(raised.value)


def _workload(path: Path, requests: int, unit: str | None = None,
              time_scale: float = 1.0) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "prompts": {"kind": "trace", "format": "generic", "path": str(path), "time_unit": unit},
        "num_requests": requests, "load": {"kind": "trace", "time_scale": time_scale}})


def test_a_replay_longer_than_a_run_may_take_is_refused_and_says_why(
    tmp_path: Path, server: MockOpenAI
) -> None:
    # Millisecond timestamps read as seconds (time_unit left out): 2 requests a second become
    # one every 8 minutes, and 200 requests a day of replay.
    path = tmp_path / "ms.csv"
    path.write_text("timestamp,input_tokens,output_tokens\n"
                    + "".join(f"{500 * i},8,2\n" for i in range(200)))
    text = data_problem(_workload(path, 200))
    assert text is not None and text.startswith(f"{path}: ")
    assert "200 requests would take 27.6 h to replay" in text
    assert f"a run replays at most {MAX_REPLAY_S / 3600:g} h" in text
    assert "time_unit" in text and "time_scale" in text
    # replayed faster, or read in the unit it was written in, it fits (100 s)
    assert data_problem(_workload(path, 200, time_scale=0.1)) is None
    fixed = _workload(path, 200, unit="ms")
    assert data_problem(fixed) is None
    prompts = build_prompts(fixed, server.base_url, server.served_name)
    assert prompts[-1].arrival_s == pytest.approx(99.5)
    # under a closed loop the arrival times are not used: nothing to refuse
    closed = WorkloadSpec.model_validate({**fixed.model_dump(), "prompts": {
        **fixed.prompts.model_dump(), "time_unit": None},
        "load": {"kind": "concurrency", "concurrency": 4}})
    assert data_problem(closed) is None


def test_a_trace_is_parsed_once_until_its_file_changes(tmp_path: Path) -> None:
    """Issue 24 item 13: every run re-read and re-parsed the whole trace (a production trace
    has millions of rows). Parsed once per file version: path, size and modification time."""
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f'{{"timestamp": {i}, "input_tokens": 3, "output_tokens": 2}}\n'
                            for i in range(1000)))
    spec = _trace(path, "generic")
    first = parse_trace(spec)
    again = parse_trace(spec)
    assert again == first
    assert all(a is b for a, b in zip(again, first, strict=True))  # not parsed again
    assert parse_trace(_trace(path, "generic", time_unit="ms"))[1].time_s == 1e-3  # own layout
    path.write_text('{"timestamp": 0, "input_tokens": 5, "output_tokens": 2}\n')
    changed = parse_trace(spec)
    assert [r.input_tokens for r in changed] == [5]
    again.clear()  # a caller's list is its own
    assert len(parse_trace(spec)) == 1
