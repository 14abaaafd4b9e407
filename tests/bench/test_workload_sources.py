"""Prompt sources: every parser and its errors (file:line and the field), the shipped samples
reproduced by their script, and the builders' run-to-run freshness and sharing (token counts
from the mock server's /tokenize; the real engine's are in
tests/bench/test_workload_sources_engine.py)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from autotune.bench.datasets import parse_chat_jsonl, parse_jsonl, parse_sharegpt
from autotune.bench.prompt_set import PromptSet, WorkloadError
from autotune.bench.traces import parse_trace
from autotune.bench.workload import build_prompts
from autotune.space.workload import NormalLength, TracePrompts, UniformLength, WorkloadSpec
from autotune.testing.mock_openai import MockOpenAI

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "workloads"


@pytest.fixture(scope="module")
def server() -> Iterator[MockOpenAI]:
    with MockOpenAI() as mock:
        yield mock


def _workload(prompts: dict[str, Any], requests: int = 8, **more: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "prompts": prompts, "num_requests": requests,
        "load": {"kind": "concurrency", "concurrency": 2}, **more})


def _build(server: MockOpenAI, workload: WorkloadSpec, run_index: int = 0) -> PromptSet:
    return build_prompts(workload, server.base_url, server.served_name, run_index)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _trace(path: Path, fmt: str, **more: Any) -> TracePrompts:
    return TracePrompts.model_validate({"path": str(path), "format": fmt, **more})


# --- the shipped samples -------------------------------------------------------------------

def test_the_script_reproduces_the_committed_samples_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_workloads.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in SAMPLES.iterdir())
    for name in made:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name


def test_the_samples_parse() -> None:
    conversations = parse_sharegpt(SAMPLES / "sharegpt-sample.json")
    chats = parse_chat_jsonl(SAMPLES / "chat-sample.jsonl")
    plain = parse_jsonl(SAMPLES / "prompts-sample.jsonl")
    assert len(conversations) == len(chats) == len(plain) == 40
    assert any(r.later for r in conversations) and any(r.later for r in chats)
    assert any(r.output_tokens is None for r in plain)
    for fmt, name in [("azure", "azure-trace-sample.csv"), ("burstgpt", "burstgpt-sample.csv"),
                      ("mooncake", "mooncake-trace-sample.jsonl")]:
        rows = parse_trace(_trace(SAMPLES / name, fmt))
        assert len(rows) >= 100 and rows[0].time_s <= rows[-1].time_s


# --- datasets: parsing ---------------------------------------------------------------------

SHAREGPT = [
    {"id": "a", "conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello there"}, {"from": "human", "value": "Again"},
        {"from": "chatgpt", "value": "Yes"}, {"from": "human", "value": "Bye"}]},
    {"id": "b", "conversations": [{"from": "human", "value": "Q"}]},
]


def test_sharegpt_conversations_become_first_turns_and_later_turns(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.json", json.dumps(SHAREGPT, indent=1))
    first, second = parse_sharegpt(path)
    assert first.messages == ({"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Hi"})
    assert first.answer == "Hello there"
    assert [(t.content, t.answer) for t in first.later] == [("Again", "Yes"), ("Bye", None)]
    assert first.where == f"{path}:2" and second.where.startswith(f"{path}:")
    assert second.answer is None and second.later == ()


@pytest.mark.parametrize("text,where,field", [
    ('{"conversations": []}', 1, "expected a JSON list"),
    ('[\n {"conversations": [{"from": "human", "value": "x"}]},\n {"convs": []}\n]', 3,
     "conversations: expected an object"),
    ('[\n {"conversations": [\n  {"from": "robot", "value": "x"}]}]', 2,
     "conversations[0].from: unknown role 'robot'"),
    ('[{"conversations": [{"from": "human", "value": 3}]}]', 1, "conversations[0].value"),
    ('[{"conversations": [{"from": "gpt", "value": "x"}]}]', 1,
     "conversations: no user message"),
    ('[\n {"conversations": [}\n]', 2, "not JSON"),
    ('[{"conversations": [{"from": "human", "value": "x"}]}\n{"x": 1}]', 2, "expected ','"),
    ('[{"conversations": [{"from": "human", "value": "x"}]}]\n]', 2, "text after the list"),
])
def test_bad_sharegpt_files_name_the_line_and_field(
    tmp_path: Path, text: str, where: int, field: str
) -> None:
    path = _write(tmp_path, "bad.json", text)
    with pytest.raises(WorkloadError) as raised:
        parse_sharegpt(path)
    assert str(raised.value).startswith(f"{path}:{where}: ") and field in str(raised.value)


def test_chat_jsonl_lines(tmp_path: Path) -> None:
    lines = [{"messages": [{"role": "user", "content": "One"},
                           {"role": "assistant", "content": "Two"}]},
             {"messages": [{"role": "developer", "content": "Rules"},
                           {"role": "user", "content": "Go"}]}]
    path = _write(tmp_path, "c.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    one, two = parse_chat_jsonl(path)
    assert one.answer == "Two" and one.where == f"{path}:1"
    assert two.messages[0]["role"] == "developer" and two.answer is None


@pytest.mark.parametrize("line,field", [
    ('{"prompt": "x"}', "messages: expected a list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "messages[0].role: unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": ["x"]}]}', "messages[0].content"),
    ('{"messages": ["hi"]}', "messages[0]: expected an object"),
    ('{"messages": [', "not JSON"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_chat_lines_name_the_line_and_field(tmp_path: Path, line: str, field: str) -> None:
    good = json.dumps({"messages": [{"role": "user", "content": "fine"}]})
    path = _write(tmp_path, "bad.jsonl", f"{good}\n\n{line}\n")
    with pytest.raises(WorkloadError) as raised:
        parse_chat_jsonl(path)
    assert str(raised.value).startswith(f"{path}:3: ") and field in str(raised.value)


def test_plain_jsonl_with_optional_output_tokens(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.jsonl", '{"q": "a", "output_tokens": 5}\n{"q": "b"}\n')
    assert [(r.text, r.output_tokens) for r in parse_jsonl(path, "q")] == [("a", 5), ("b", None)]
    for line, field in [('{"prompt": "a"}', "q: expected a string (missing)"),
                        ('{"q": 1}', "q: expected a string"),
                        ('{"q": "a", "output_tokens": 0}', "output_tokens: expected a positive"),
                        ('{"q": "a", "output_tokens": true}', "output_tokens")]:
        bad = _write(tmp_path, "bad.jsonl", '{"q": "fine"}\n' + line + "\n")
        with pytest.raises(WorkloadError, match="^" + re.escape(f"{bad}:2: {field}")):
            parse_jsonl(bad, "q")


def test_an_unreadable_or_empty_dataset_is_a_workload_error(
    tmp_path: Path, server: MockOpenAI
) -> None:
    with pytest.raises(WorkloadError, match="cannot read prompts file"):
        _build(server, _workload({"kind": "sharegpt", "path": str(tmp_path / "none.json")}))
    empty = _write(tmp_path, "empty.jsonl", "\n")
    with pytest.raises(WorkloadError, match="no prompts"):
        _build(server, _workload({"kind": "jsonl", "path": str(empty), "output_tokens": 3}))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"prompt": "\xff"}\n')
    with pytest.raises(WorkloadError, match="not UTF-8"):
        parse_jsonl(binary)


# --- datasets: building --------------------------------------------------------------------

def _plain(tmp_path: Path, count: int, words: int = 3, name: str = "p.jsonl") -> Path:
    lines = [json.dumps({"prompt": " ".join([f"w{i}"] * words), "output_tokens": 4 + i % 3})
             for i in range(count)]
    return _write(tmp_path, name, "\n".join(lines) + "\n")


def test_runs_take_disjoint_slices_and_tag_whatever_could_repeat(
    tmp_path: Path, server: MockOpenAI
) -> None:
    path = _plain(tmp_path, 10)
    workload = _workload({"kind": "jsonl", "path": str(path)}, requests=4)
    run0, run1, again = _build(server, workload), _build(server, workload, 1), _build(server,
                                                                                     workload)
    assert [p.body for p in run0] == [p.body for p in again]  # deterministic
    assert all(not p.body.startswith("[") for p in run0)
    assert all(p.body.startswith(f"[1.{j}] ") for j, p in enumerate(run1))
    untagged = {p.body.split("] ", 1)[1] for p in run1}
    assert untagged.isdisjoint({p.body for p in run0})  # run 1 took the next slice
    assert [p.max_tokens for p in run0] == [4 + int(p.body.split()[0][1:]) % 3 for p in run0]
    exhausted = _build(server, _workload({"kind": "jsonl", "path": str(path)}, requests=14))
    bodies = [p.body for p in exhausted]
    assert len(set(bodies)) == 14 and sum(b.startswith("[0.") for b in bodies) == 4


def test_output_lengths_from_a_stated_distribution(tmp_path: Path, server: MockOpenAI) -> None:
    path = _plain(tmp_path, 30)
    spec = {"kind": "jsonl", "path": str(path),
            "output_tokens": {"kind": "uniform", "low": 10, "high": 12}}
    lengths = [p.max_tokens for p in _build(server, _workload(spec, requests=30))]
    assert set(lengths) == {10, 11, 12}
    rng = random.Random(1)
    draws = [NormalLength(mean=50, std=30, min=5, max=80).draw(rng) for _ in range(500)]
    assert min(draws) == 5 and max(draws) == 80
    with pytest.raises(ValidationError, match="empty range"):
        UniformLength(low=5, high=4)


def test_data_lengths_need_the_data(tmp_path: Path, server: MockOpenAI) -> None:
    path = _write(tmp_path, "p.jsonl", '{"prompt": "a b"}\n')
    with pytest.raises(WorkloadError, match=rf"^{path}:1: output_tokens: missing"):
        _build(server, _workload({"kind": "jsonl", "path": str(path)}, requests=1))


def test_too_long_prompts_are_filtered_truncated_or_sent(
    tmp_path: Path, server: MockOpenAI
) -> None:
    lines = [json.dumps({"prompt": "x " * 5000, "output_tokens": 8})] + [
        json.dumps({"prompt": f"short {i}", "output_tokens": 8}) for i in range(5)]
    path = _write(tmp_path, "p.jsonl", "\n".join(lines))  # the mock's max_model_len: 4096
    filtered = _build(server, _workload({"kind": "jsonl", "path": str(path)}, requests=6))
    assert (filtered.filtered, filtered.truncated, len(filtered)) == (1, 0, 6)
    assert all(p.input_tokens < 10 for p in filtered)
    cut = _build(server, _workload({"kind": "jsonl", "path": str(path),
                                    "too_long": "truncate"}, requests=6))
    assert (cut.filtered, cut.truncated) == (0, 1)
    assert sorted(p.input_tokens for p in cut)[-1] == 4096 - 8
    sent = _build(server, _workload({"kind": "jsonl", "path": str(path), "too_long": "send"},
                                    requests=6))
    assert (sent.filtered, sent.truncated) == (0, 0) and sent.counts() == {
        "prompts_filtered": 0.0, "prompts_truncated": 0.0}
    only_long = _write(tmp_path, "long.jsonl", lines[0])
    with pytest.raises(WorkloadError, match="no prompt fits the engine's max_model_len"):
        _build(server, _workload({"kind": "jsonl", "path": str(only_long)}, requests=2))


def test_multi_turn_without_lengths_check_keeps_the_later_turns(
    tmp_path: Path, server: MockOpenAI
) -> None:
    path = _write(tmp_path, "s.json", json.dumps(SHAREGPT[:1]))
    spec = {"kind": "sharegpt", "path": str(path), "output_tokens": 7, "too_long": "send",
            "multi_turn": {"max_turns": 3, "think_time_s": 1.5}}
    (prompt,) = _build(server, _workload(spec, requests=1))
    assert prompt.body is None and prompt.messages[-1] == {"role": "user", "content": "Hi"}
    assert [(t.content, t.max_tokens, t.think_s) for t in prompt.next_turns] == [
        ("Again", 7, 1.5), ("Bye", 7, 1.5)]
    assert prompt.group == f"{path}:1"
    two = _build(server, _workload({**spec, "multi_turn": {"max_turns": 2}}, requests=1))
    assert len(two[0].next_turns) == 1


# --- shared prefixes and random prompts ----------------------------------------------------

def test_shared_prefixes_are_shared_within_a_run_and_new_in_the_next(server: MockOpenAI) -> None:
    workload = _workload({"kind": "shared_prefix", "num_prefixes": 3, "prefix_tokens": 20,
                          "suffix_tokens": 5, "output_tokens": 4}, requests=10)
    run0, run1 = _build(server, workload), _build(server, workload, 1)
    heads = {p.group: tuple(p.body[:20]) for p in run0}
    assert len(heads) == 3 and all(tuple(p.body[:20]) == heads[p.group] for p in run0)
    assert sorted(sum(p.group == g for p in run0) for g in heads) == [3, 3, 4]
    assert len({tuple(p.body[20:]) for p in run0}) == 10
    assert {tuple(p.body[:20]) for p in run1}.isdisjoint(heads.values())
    assert all(len(p.body) == p.input_tokens == 25 for p in run0)
    too_long = _workload({"kind": "shared_prefix", "num_prefixes": 1, "prefix_tokens": 4000,
                          "suffix_tokens": 90, "output_tokens": 10})
    with pytest.raises(WorkloadError, match="exceed the engine's max_model_len 4096"):
        _build(server, too_long)


def test_random_prompts_are_new_for_every_run(server: MockOpenAI) -> None:
    workload = _workload({"kind": "random", "input_tokens": 16, "output_tokens": 4})
    run0, run1, again = (_build(server, workload, i) for i in (0, 1, 0))
    assert [p.body for p in run0] == [p.body for p in again]
    assert {tuple(p.body) for p in run0}.isdisjoint({tuple(p.body) for p in run1})


def test_random_lengths_spread_as_vllms_range_ratio(server: MockOpenAI) -> None:
    # vllm bench serve --random-range-ratio 0.5 around 16 in / 4 out: [8, 24] and [2, 6].
    workload = _workload({"kind": "random", "input_tokens": 16, "output_tokens": 4,
                          "range_ratio": 0.5}, requests=200)
    prompts = _build(server, workload)
    inputs, outputs = {p.input_tokens for p in prompts}, {p.max_tokens for p in prompts}
    assert min(inputs) >= 8 and max(inputs) <= 24 and len(inputs) > 10
    assert min(outputs) >= 2 and max(outputs) <= 6 and len(outputs) == 5
    assert all(len(p.body) == p.input_tokens for p in prompts)
    fixed = _build(server, _workload({"kind": "random", "input_tokens": 16, "output_tokens": 4}))
    assert {(p.input_tokens, p.max_tokens) for p in fixed} == {(16, 4)}
    with pytest.raises(ValidationError, match="range_ratio"):
        _workload({"kind": "random", "input_tokens": 16, "output_tokens": 4, "range_ratio": 1})


# --- traces --------------------------------------------------------------------------------

def test_azure_timestamps_with_seven_fractional_digits(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens,Other\n"
                  "2023-11-16 18:15:47.5000000,10,2,x\n2023-11-16 18:15:46.2500000,30,4,y\n")
    rows = parse_trace(_trace(path, "azure"))
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(30, 4), (10, 2)]
    assert rows[1].time_s - rows[0].time_s == pytest.approx(1.25)
    assert rows[0].where == f"{path}:3"


def test_burstgpt_leaves_failed_requests_out(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.csv", "Timestamp,Model,Request tokens,Response tokens,"
                  "Total tokens,Log Type\n5,ChatGPT,100,0,100,API log\n6.5,GPT-4,50,20,70,"
                  "Conversation log\n")
    (row,) = parse_trace(_trace(path, "burstgpt"))
    assert (row.time_s, row.input_tokens, row.output_tokens) == (6.5, 50, 20)


def test_mooncake_hash_ids_share_blocks(tmp_path: Path, server: MockOpenAI) -> None:
    rows = [{"timestamp": 1000, "input_length": 30, "output_length": 3, "hash_ids": [1, 2]},
            {"timestamp": 1500, "input_length": 14, "output_length": 3, "hash_ids": [1, 3]},
            {"timestamp": 3000, "input_length": 25, "output_length": 3, "hash_ids": [4]}]
    path = _write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in rows))
    spec = {"kind": "trace", "format": "mooncake", "path": str(path), "block_tokens": 10}
    workload = _workload(spec, requests=3, load={"kind": "trace", "time_scale": 2.0})
    first, second, third = _build(server, workload)
    assert [p.arrival_s for p in (first, second, third)] == [0.0, 1.0, 4.0]
    assert [len(p.body) for p in (first, second, third)] == [30, 14, 25]
    assert first.body[:10] == second.body[:10] and first.body[10:14] != second.body[10:14]
    assert first.body[:10] != third.body[:10]
    assert first.group == second.group == "hash-1"
    later = _build(server, workload, 1)
    assert later[0].body[:10] != first.body[:10]  # new blocks in every run


def test_generic_trace_columns_groups_and_wrapping(tmp_path: Path, server: MockOpenAI) -> None:
    path = _write(tmp_path, "g.csv", "t_ms,conv,in,out\n0,a,12,2\n400,b,12,2\n1000,a,15,2\n")
    spec = {"kind": "trace", "format": "generic", "path": str(path), "time_unit": "ms",
            "group_prefix_tokens": 8,
            "columns": {"timestamp": "t_ms", "input_tokens": "in", "output_tokens": "out",
                        "group": "conv"}}
    prompts = _build(server, _workload(spec, requests=5, warmup_requests=1))
    assert [p.group for p in prompts] == ["a", "b", "a", "a", "b", "a"]
    assert prompts[0].body[:8] == prompts[2].body[:8] != prompts[1].body[:8]
    # warm-up and measured requests each start at 0; the trace wraps around, later in time
    assert [p.arrival_s for p in prompts] == pytest.approx([0.0, 0.0, 0.6, 1.1, 1.5, 2.1])
    jsonl = _write(tmp_path, "g.jsonl", '{"ts": 2, "i": 3, "o": 1}\n{"ts": 1, "i": 4, "o": 1}\n')
    rows = parse_trace(_trace(jsonl, "generic", columns={"timestamp": "ts", "input_tokens": "i",
                                                          "output_tokens": "o"}))
    assert [r.input_tokens for r in rows] == [4, 3]


def test_trace_rows_too_long_are_filtered_or_truncated(
    tmp_path: Path, server: MockOpenAI
) -> None:
    path = _write(tmp_path, "t.csv", "timestamp,input_tokens,output_tokens\n0,5000,10\n1,20,4\n"
                  "2,30,4\n")
    spec = {"kind": "trace", "format": "generic", "path": str(path)}
    kept = _build(server, _workload(spec, requests=2))
    assert (kept.filtered, [p.input_tokens for p in kept]) == (1, [20, 30])
    cut = _build(server, _workload({**spec, "too_long": "truncate"}, requests=2))
    assert (cut.truncated, [p.input_tokens for p in cut]) == (1, [4086, 20])


@pytest.mark.parametrize("fmt,text,where,message", [
    ("azure", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", 2, "GeneratedTokens: missing"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,3,4\n", 2,
     "TIMESTAMP: expected a number or a date-time, got 'yesterday'"),
    ("burstgpt", "Timestamp,Request tokens,Response tokens\n1,2.5,3\n", 2,
     "Request tokens: expected a whole number of tokens, got '2.5'"),
    ("mooncake", '{"timestamp": 1, "input_length": 3, "output_length": 1, "hash_ids": "x1"}\n',
     1, "hash_ids: expected a list of integers"),
    ("mooncake", '{"timestamp": 1, "input_length": -3, "output_length": 1, "hash_ids": []}\n',
     1, "input_length: expected a whole number"),
    ("mooncake", '{"timestamp": 1,\n', 1, "not JSON"),
])
def test_bad_trace_rows_name_the_line_and_column(
    tmp_path: Path, fmt: str, text: str, where: int, message: str
) -> None:
    path = _write(tmp_path, "bad.csv" if fmt != "mooncake" else "bad.jsonl", text)
    with pytest.raises(WorkloadError) as raised:
        parse_trace(_trace(path, fmt))
    assert str(raised.value).startswith(f"{path}:{where}: ") and message in str(raised.value)


def test_trace_spec_rules(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="for format generic"):
        _trace(tmp_path / "x.csv", "azure", columns={"timestamp": "t"})
    with pytest.raises(ValidationError, match="needs prompts of kind trace"):
        _workload({"kind": "random", "input_tokens": 4, "output_tokens": 4},
                  load={"kind": "trace"})
    with pytest.raises(WorkloadError, match="cannot read trace file"):
        parse_trace(_trace(tmp_path / "none.csv", "azure"))
    empty = _write(tmp_path, "e.csv", "Timestamp,Request tokens,Response tokens\n1,5,0\n")
    with pytest.raises(WorkloadError, match="no requests"):
        parse_trace(_trace(empty, "burstgpt"))
