"""Prompts from production traces: arrival time, input and output lengths, shared prefixes.

Formats, read as published (other columns are ignored):

- ``azure`` (Azure LLM inference traces, CSV): ``TIMESTAMP`` (a date-time such as
  ``2023-11-16 18:15:46.6805900``), ``ContextTokens``, ``GeneratedTokens``.
- ``burstgpt`` (BurstGPT, CSV): ``Timestamp`` (seconds), ``Request tokens``, ``Response
  tokens``; rows with 0 response tokens (failed requests in the log) are left out.
- ``mooncake`` (Mooncake traces, JSONL): ``timestamp`` (milliseconds), ``input_length``,
  ``output_length``, ``hash_ids`` (blocks of ``block_tokens`` = 512 tokens: requests naming the
  same hash id share that block, so a prompt is its blocks in order, cut to ``input_length``).
- ``generic`` (CSV when the file ends in ``.csv``, else JSONL): the columns ``columns`` names
  (defaults ``timestamp``, ``input_tokens``, ``output_tokens``; optional ``group``: requests of
  one group share their first ``group_prefix_tokens`` tokens; optional ``hash_ids`` as in
  Mooncake); numeric timestamps in ``time_unit`` (default s), or ISO date-times.

Rows are replayed in time order. Run ``k`` of ``count`` requests takes the rows from ``k *
count`` on (wrapping around, later in time, once the trace is exhausted); its arrivals are
``(t - t0) * time_scale``, warm-up and measured requests each from their own first row. Bodies
are token ids of the served model's own vocabulary, drawn afresh for every run (blocks and
group prefixes too): shared within a run as the trace says, never across runs.

Token counts and timestamps must be finite numbers. ``replay_problem`` refuses a replay whose
first run's arrivals would span more than ``MAX_REPLAY_S`` (a trace read in the wrong time unit
replays for days), saying how long it would take and what to set; ``bench.datasets``'s
``data_problem`` asks it for a workload under a trace load, before any engine starts.

A trace is parsed once per version of its file (path, size, modification time) and layout;
every later run of the process takes the rows from memory (the last few traces are kept).
"""

from __future__ import annotations

import csv
import io
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from autotune.bench.data_files import jsonl_objects, read_text
from autotune.bench.engine_tokenizer import EngineTokenizer
from autotune.bench.prompt_set import Prompt, PromptSet, WorkloadError
from autotune.space import TraceColumns, TracePrompts

_UNIT_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
# The longest a run's arrivals may span (after ``time_scale``): longer is almost always a trace
# read in the wrong time unit, and would hold an engine for hours of one trial.
MAX_REPLAY_S = 6 * 3600.0


@dataclass(frozen=True)
class TraceRow:
    where: str  # file:line
    time_s: float
    input_tokens: int
    output_tokens: int
    group: str | None = None
    hash_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class _Layout:
    timestamp: str
    input_tokens: str
    output_tokens: str
    group: str | None
    hash_ids: str | None
    unit_s: float
    table: bool  # CSV, else JSONL


def _layout(spec: TracePrompts) -> _Layout:
    if spec.format == "azure":
        return _Layout("TIMESTAMP", "ContextTokens", "GeneratedTokens", None, None, 1.0, True)
    if spec.format == "burstgpt":
        return _Layout("Timestamp", "Request tokens", "Response tokens", None, None, 1.0, True)
    if spec.format == "mooncake":
        return _Layout("timestamp", "input_length", "output_length", None, "hash_ids", 1e-3,
                       False)
    columns = spec.columns or TraceColumns()
    return _Layout(columns.timestamp, columns.input_tokens, columns.output_tokens,
                   columns.group, columns.hash_ids, _UNIT_S[spec.time_unit or "s"],
                   Path(spec.path).suffix.lower() == ".csv")


def _entries(path: Path, table: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    text = read_text(path, "trace file")
    if not table:
        yield from jsonl_objects(path, text)
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for entry in reader:
            yield reader.line_num, entry
    except csv.Error as exc:
        raise WorkloadError(f"{path}:{reader.line_num}: not CSV: {exc}") from None


def _field(where: str, entry: dict[str, Any], column: str) -> Any:
    value = entry.get(column)
    if value is None or value == "":
        raise WorkloadError(f"{where}: {column}: missing (the row has: "
                            f"{', '.join(k for k in entry if k is not None)})")
    return value


def _count(where: str, entry: dict[str, Any], column: str) -> int:
    value = _field(where, entry, column)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if (isinstance(value, bool) or not math.isfinite(number) or number < 0
            or number != int(number)):
        raise WorkloadError(f"{where}: {column}: expected a whole number of tokens, "
                            f"got {value!r}")
    return int(number)


def _time(where: str, entry: dict[str, Any], column: str, unit_s: float) -> float:
    value = _field(where, entry, column)
    if not isinstance(value, bool):
        try:
            seconds = float(value) * unit_s
        except (TypeError, ValueError):
            pass
        else:
            if math.isfinite(seconds):
                return seconds
            raise WorkloadError(f"{where}: {column}: expected a finite number or a date-time, "
                                f"got {value!r}")
    if isinstance(value, str):
        stamp = value.strip()
        fraction = 0.0
        head, dot, tail = stamp.partition(".")
        if dot and tail.isdigit():  # 7 fractional digits (Azure's) are more than datetime's 6
            stamp, fraction = head, float("0." + tail)
        try:
            return datetime.fromisoformat(stamp).timestamp() + fraction
        except ValueError:
            pass
    raise WorkloadError(f"{where}: {column}: expected a number or a date-time, got {value!r}")


def _hash_ids(where: str, entry: dict[str, Any], column: str) -> tuple[int, ...]:
    value = entry.get(column)
    if isinstance(value, str):  # a CSV cell: "1 2 3", "[1, 2, 3]" or "1;2;3"
        value = value.strip().strip("[]").replace(",", " ").replace(";", " ").split()
    if not isinstance(value, list):
        raise WorkloadError(f"{where}: {column}: expected a list of integers")
    try:
        return tuple(int(v) for v in value if not isinstance(v, bool | float))
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: {column}: expected a list of integers") from None


# Parsed traces by file version (path, size, modification time) and layout: every run of a
# study reads the same trace, which may have millions of rows. The few most recent are kept.
_PARSED: OrderedDict[tuple[str, int, int, _Layout], tuple[TraceRow, ...]] = OrderedDict()
_PARSED_KEEP = 4
_PARSED_LOCK = threading.Lock()


def parse_trace(spec: TracePrompts) -> list[TraceRow]:
    """The trace's rows in time order (rows with 0 input or output tokens left out); parsed
    once per version of the file (its size and modification time), then taken from memory."""
    path = Path(spec.path).expanduser()
    layout = _layout(spec)
    try:
        stat = path.stat()
    except OSError:
        return list(_parse(path, layout))  # read_text says what is wrong
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, layout)
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
        if cached is not None:
            _PARSED.move_to_end(key)
            return list(cached)
    rows = _parse(path, layout)
    with _PARSED_LOCK:
        _PARSED[key] = rows
        while len(_PARSED) > _PARSED_KEEP:
            _PARSED.popitem(last=False)
    return list(rows)


def _parse(path: Path, layout: _Layout) -> tuple[TraceRow, ...]:
    rows: list[TraceRow] = []
    for number, entry in _entries(path, layout.table):
        where = f"{path}:{number}"
        output = _count(where, entry, layout.output_tokens)
        row = TraceRow(
            where,
            _time(where, entry, layout.timestamp, layout.unit_s),
            _count(where, entry, layout.input_tokens),
            output,
            str(_field(where, entry, layout.group)) if layout.group else None,
            _hash_ids(where, entry, layout.hash_ids) if layout.hash_ids else None,
        )
        if output == 0 or row.input_tokens == 0:
            continue
        rows.append(row)
    if not rows:
        raise WorkloadError(f"{path}: no requests (rows with input and output tokens)")
    rows.sort(key=lambda r: r.time_s)
    if not math.isfinite(rows[-1].time_s - rows[0].time_s):
        raise WorkloadError(f"{path}: the timestamps span more than any replay can (from "
                            f"{rows[0].where}, {rows[0].time_s:g} s, to {rows[-1].where}, "
                            f"{rows[-1].time_s:g} s)")
    return tuple(rows)


class _Bodies:
    """Token ids for one run: shared blocks per hash id, shared prefixes per group."""

    def __init__(self, spec: TracePrompts, pool: list[int], seed: int, run_index: int):
        self.spec = spec
        self.pool = pool
        self.key = f"{seed}:{run_index}:trace"
        self.blocks: dict[int, list[int]] = {}
        self.prefixes: dict[str, list[int]] = {}

    def _draw(self, name: str, length: int) -> list[int]:
        rng = random.Random(f"{self.key}:{name}")
        return [rng.choice(self.pool) for _ in range(length)]

    def body(self, row: TraceRow, position: int, length: int) -> list[int]:
        ids: list[int] = []
        if row.hash_ids:
            for hash_id in row.hash_ids:
                if len(ids) >= length:
                    break
                if hash_id not in self.blocks:
                    self.blocks[hash_id] = self._draw(f"block:{hash_id}", self.spec.block_tokens)
                ids.extend(self.blocks[hash_id])
        elif row.group is not None and self.spec.group_prefix_tokens:
            if row.group not in self.prefixes:
                self.prefixes[row.group] = self._draw(f"group:{row.group}",
                                                      self.spec.group_prefix_tokens)
            ids.extend(self.prefixes[row.group])
        ids = ids[:length]
        return ids + self._draw(f"row:{position}", length - len(ids))


def trace_prompts(
    spec: TracePrompts, count: int, warmup: int, seed: int, run_index: int,
    tokenizer: EngineTokenizer, time_scale: float = 1.0,
) -> PromptSet:
    """``count`` requests of run ``run_index`` (the first ``warmup`` of them the warm-up), with
    their arrival offsets; rows longer than the engine's max_model_len with their output are
    left out (the next row taken) or their input cut, as ``spec.too_long`` says."""
    rows = parse_trace(spec)
    pool = tokenizer.pool()
    limit = tokenizer.limit()
    bodies = _Bodies(spec, pool, seed, run_index)
    period = _period(rows)
    chosen: list[tuple[float, Prompt]] = []
    filtered = truncated = misses = 0
    position = run_index * count
    while len(chosen) < count:
        cycle, index = divmod(position, len(rows))
        row = rows[index]
        position += 1
        length = row.input_tokens
        if length + row.output_tokens > limit:
            room = limit - row.output_tokens
            if spec.too_long == "filter" or room < 1:
                filtered += 1
                misses += 1
                if misses >= len(rows):
                    raise WorkloadError(f"{spec.path}: no request fits the engine's "
                                        f"max_model_len {limit} with its output")
                continue
            length = room
            truncated += 1
        misses = 0
        group = row.group if row.group is not None else (
            f"hash-{row.hash_ids[0]}" if row.hash_ids else None)
        prompt = Prompt(bodies.body(row, position, length), row.output_tokens, length,
                        group=group)
        chosen.append((row.time_s + cycle * period, prompt))
    out: list[Prompt] = []
    for part in (chosen[:warmup], chosen[warmup:]):
        if part:
            t0 = part[0][0]
            out.extend(Prompt(p.body, p.max_tokens, p.input_tokens, arrival_s=(t - t0) *
                              time_scale, group=p.group) for t, p in part)
    return PromptSet(out, filtered=filtered, truncated=truncated)


def _period(rows: list[TraceRow]) -> float:
    """How much later in time the trace's rows come again once it wraps around."""
    span = rows[-1].time_s - rows[0].time_s
    return span + (span / (len(rows) - 1) if len(rows) > 1 and span > 0 else 1.0)


def replay_problem(spec: TracePrompts, count: int, warmup: int, time_scale: float = 1.0
                   ) -> str | None:
    """Why the first run of ``count`` requests of this trace cannot be replayed (read from the
    file alone: rows left out for the engine's max_model_len would only make it longer), or
    None; ``WorkloadError`` when the file cannot be read."""
    rows = parse_trace(spec)
    period = _period(rows)
    times = [rows[i % len(rows)].time_s + i // len(rows) * period for i in range(count)]
    try:
        _check_length(spec, times, warmup, time_scale)
    except WorkloadError as exc:
        return str(exc)
    return None


def _check_length(spec: TracePrompts, times: list[float], warmup: int,
                  time_scale: float) -> None:
    """Refuse a run whose warm-up or measured arrivals span more than ``MAX_REPLAY_S``."""
    for part in (times[:warmup], times[warmup:]):
        if len(part) < 2:
            continue
        span = (part[-1] - part[0]) * time_scale
        if span <= MAX_REPLAY_S:
            continue
        unit = "ms" if spec.format == "mooncake" else (spec.time_unit or "s")
        raise WorkloadError(
            f"{spec.path}: {len(part)} requests would take {span / 3600:.1f} h to replay "
            f"(timestamps read in {unit}, time_scale {time_scale:g}); a run replays at most "
            f"{MAX_REPLAY_S / 3600:g} h: check the trace's time unit (time_unit, for format "
            "generic), or replay it faster (load.time_scale) or with fewer requests")
