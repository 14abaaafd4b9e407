"""Prompts from datasets: ShareGPT JSON, OpenAI chat JSONL and plain JSONL.

Chats go to /v1/chat/completions under the server's chat template: the messages up to the
first user turn (system messages included), its reference answer being the assistant message
that follows; with ``multi_turn`` the later user turns follow as ``Prompt.next_turns``. Plain
JSONL prompts go to /v1/completions as text.

Each run takes its own slice of the (seeded) shuffled records: run ``k`` of ``count`` prompts
starts at record ``k * count``. Every prompt that could repeat one sent before on the same
server (any prompt of a run after the first, whose slices may overlap when runs differ in
size, and any record taken again once the data is exhausted) starts with a short tag unique
to its run and position (``[k.j] ``, in the first user message of a chat, so a system prompt
the data shares stays shared): no request repeats an earlier one.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from autotune.bench.data_files import jsonl_objects, read_text
from autotune.bench.engine_tokenizer import EngineTokenizer
from autotune.bench.prompt_set import Prompt, PromptSet, Turn, WorkloadError
from autotune.bench.traces import parse_trace, replay_problem
from autotune.space import (
    ChatJsonlPrompts,
    JsonlPrompts,
    MultiTurn,
    SharegptPrompts,
    TraceLoad,
    TracePrompts,
    WorkloadSpec,
)

DatasetSpec = JsonlPrompts | SharegptPrompts | ChatJsonlPrompts

_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
    "assistant": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
    "system": "system",
}
_CHAT_ROLES = {"system", "user", "assistant", "developer"}


@dataclass(frozen=True)
class LaterTurn:
    content: str
    answer: str | None


@dataclass(frozen=True)
class Record:
    """One prompt of a dataset. ``where`` is ``file:line``; a chat has ``messages`` (through
    its first user message), a plain prompt ``text``; ``answer`` is the reference answer."""

    where: str
    text: str | None = None
    messages: tuple[dict[str, str], ...] = ()
    answer: str | None = None
    output_tokens: int | None = None
    later: tuple[LaterTurn, ...] = ()


def _read(path: Path) -> str:
    return read_text(path, "prompts file")


def _jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return jsonl_objects(path, _read(path))


def _json_list(path: Path) -> Iterator[tuple[int, Any]]:
    """(line where it starts, element) for every element of a file holding one JSON list."""
    text = _read(path)
    decoder = json.JSONDecoder()
    counted = [0, 1]  # a position already counted to, and its line: one pass, not n² counts

    def line_of(pos: int) -> int:
        start, line = counted if pos >= counted[0] else (0, 1)
        line += text.count("\n", start, pos)
        counted[:] = [pos, line]
        return line

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip(1 if text.startswith("\ufeff") else 0)
    if not text.startswith("[", pos):
        raise WorkloadError(f"{path}:{line_of(pos)}: expected a JSON list of conversations")
    pos = skip(pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
        yield line_of(pos), element
        pos = skip(end)
        if text.startswith("]", pos):
            if skip(pos + 1) != len(text):
                raise WorkloadError(f"{path}:{line_of(skip(pos + 1))}: text after the list")
            return
        if not text.startswith(",", pos):
            raise WorkloadError(f"{path}:{line_of(pos)}: expected ',' or ']' after an element")
        pos = skip(pos + 1)


def _conversation(where: str, turns: list[tuple[str, str]], field: str) -> Record:
    """A Record from (role, content) messages: system messages first, then the first user
    message and its answer, then the later (user, answer) pairs."""
    index = 0
    head: list[dict[str, str]] = []
    while index < len(turns) and turns[index][0] in ("system", "developer"):
        head.append({"role": turns[index][0], "content": turns[index][1]})
        index += 1
    if index >= len(turns) or turns[index][0] != "user":
        raise WorkloadError(f"{where}: {field}: no user message (after any system messages)")
    head.append({"role": "user", "content": turns[index][1]})
    index += 1
    pairs: list[LaterTurn] = []
    first_answer: str | None = None
    if index < len(turns) and turns[index][0] == "assistant":
        first_answer = turns[index][1]
        index += 1
    while index < len(turns):
        role, content = turns[index]
        index += 1
        if role != "user":
            continue  # an assistant or system message without a user turn before it
        answer = None
        if index < len(turns) and turns[index][0] == "assistant":
            answer = turns[index][1]
            index += 1
        pairs.append(LaterTurn(content, answer))
    return Record(where, messages=tuple(head), answer=first_answer, later=tuple(pairs))


def parse_sharegpt(path: Path) -> list[Record]:
    """ShareGPT JSON: a list of ``{"conversations": [{"from": ROLE, "value": TEXT}, ...]}``
    (other keys, such as ``id``, are ignored)."""
    records = []
    for number, entry in _json_list(path):
        where = f"{path}:{number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
            raise WorkloadError(f"{where}: conversations: expected an object with a "
                                "'conversations' list")
        turns = _turns(where, entry["conversations"], "conversations", ("from", "value"),
                       _SHAREGPT_ROLES)
        records.append(_conversation(where, turns, "conversations"))
    return records


def _turns(where: str, messages: list[Any], name: str, keys: tuple[str, str],
           roles: Mapping[str, str]) -> list[tuple[str, str]]:
    """(role, text) of each message of a conversation, whose role is under ``keys[0]`` (one of
    ``roles``, mapped to the chat role) and text under ``keys[1]``; a bad message names its
    place, e.g. ``FILE:3: messages[1].role: unknown role``."""
    role_key, text_key = keys
    turns = []
    for i, message in enumerate(messages):
        field = f"{name}[{i}]"
        if not isinstance(message, dict):
            raise WorkloadError(f"{where}: {field}: expected an object with {role_key} and "
                                f"{text_key}")
        role = message.get(role_key)
        if role not in roles:
            raise WorkloadError(f"{where}: {field}.{role_key}: unknown role {role!r} (expected "
                                f"one of {', '.join(sorted(roles))})")
        text = message.get(text_key)
        if not isinstance(text, str):
            raise WorkloadError(f"{where}: {field}.{text_key}: expected a string")
        turns.append((roles[role], text))
    return turns


def parse_chat_jsonl(path: Path) -> list[Record]:
    """OpenAI chat JSONL: ``{"messages": [{"role": ROLE, "content": TEXT}, ...]}`` a line."""
    records = []
    for number, entry in _jsonl_objects(path):
        where = f"{path}:{number}"
        messages = entry.get("messages")
        if not isinstance(messages, list):
            raise WorkloadError(f"{where}: messages: expected a list of chat messages")
        turns = _turns(where, messages, "messages", ("role", "content"),
                       {role: role for role in _CHAT_ROLES})
        records.append(_conversation(where, turns, "messages"))
    return records


def parse_jsonl(path: Path, field: str = "prompt") -> list[Record]:
    """Plain JSONL: ``{FIELD: TEXT, "output_tokens": N (optional)}`` a line."""
    records = []
    for number, entry in _jsonl_objects(path):
        where = f"{path}:{number}"
        text = entry.get(field)
        if not isinstance(text, str):
            raise WorkloadError(f"{where}: {field}: expected a string"
                                + ("" if field in entry else " (missing)"))
        out = entry.get("output_tokens")
        if out is not None and (isinstance(out, bool) or not isinstance(out, int) or out <= 0):
            raise WorkloadError(f"{where}: output_tokens: expected a positive integer, "
                                f"got {out!r}")
        records.append(Record(where, text=text, output_tokens=out))
    return records


@lru_cache(maxsize=8)
def _parsed(path: str, kind: str, field: str, stamp: tuple[int, int]) -> tuple[Record, ...]:
    file = Path(path)
    if kind == "sharegpt":
        records = parse_sharegpt(file)
    elif kind == "chat":
        records = parse_chat_jsonl(file)
    else:
        records = parse_jsonl(file, field)
    if not records:
        raise WorkloadError(f"{file}: no prompts")
    return tuple(records)


def load_records(spec: DatasetSpec) -> tuple[Record, ...]:
    """The file's records (parsed once per file version)."""
    path = Path(spec.path).expanduser()
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise WorkloadError(f"cannot read prompts file {path}: {exc.strerror or exc}") from exc
    field = spec.field if isinstance(spec, JsonlPrompts) else ""
    return _parsed(str(path), spec.kind, field, (stat.st_mtime_ns, stat.st_size))


def data_problem(workload: WorkloadSpec) -> str | None:
    """Why the dataset or trace file of ``workload`` cannot be used as a run uses it (the file,
    line and field; for a trace replayed by a trace load, a first run longer than a run may
    take), or None (also for prompts that read no file). Reads the whole file, no engine
    needed: ``space.check_data_files(..., read=data_problem)`` refuses a study's bad data
    before any engine starts."""
    spec = workload.prompts
    try:
        if isinstance(spec, TracePrompts):
            parse_trace(spec)
            if isinstance(workload.load, TraceLoad):
                return replay_problem(spec, workload.warmup_requests + workload.num_requests,
                                      workload.warmup_requests, workload.load.time_scale)
        elif isinstance(spec, JsonlPrompts | SharegptPrompts | ChatJsonlPrompts):
            load_records(spec)
    except WorkloadError as exc:
        return str(exc)
    return None


class _Fitter:
    """Output lengths and the fit to the engine's max_model_len for one run's records."""

    def __init__(self, spec: DatasetSpec, tokenizer: EngineTokenizer, rng: random.Random):
        self.spec = spec
        self.tokenizer = tokenizer
        self.rng = rng
        self.truncated = 0

    def output_tokens(self, record: Record, answer: str | None) -> int:
        wanted = self.spec.output_tokens
        if isinstance(wanted, int):
            return wanted
        if wanted != "data":
            return wanted.draw(self.rng)
        if record.text is not None:
            if record.output_tokens is None:
                raise WorkloadError(f"{record.where}: output_tokens: missing (set the "
                                    "workload's output_tokens, or give every line one)")
            return record.output_tokens
        if answer is None:
            raise WorkloadError(f"{record.where}: no assistant answer after the user message "
                                "to take the output length from (set output_tokens)")
        return max(1, len(self.tokenizer.ids(answer)))

    def plain(self, record: Record, text: str) -> Prompt | None:
        out = self.output_tokens(record, None)
        if self.spec.too_long == "send":
            return Prompt(text, out)
        limit = self.tokenizer.limit()
        special = self.tokenizer.ids(text, special=True)
        if len(special) + out <= limit:
            return Prompt(text, out, len(special))
        keep = limit - out
        if self.spec.too_long == "filter" or keep < 1:
            return None
        self.truncated += 1
        ids = self.tokenizer.ids(text)[:keep]  # sent as ids: no BOS added
        return Prompt(ids, out, len(ids))

    def chat(self, record: Record, messages: list[dict[str, str]]) -> Prompt | None:
        out = self.output_tokens(record, record.answer)
        if self.spec.too_long == "send":
            return Prompt(None, out, messages=tuple(messages))
        limit = self.tokenizer.limit()
        length = len(self.tokenizer.chat_ids(messages))
        if length + out > limit:
            if self.spec.too_long == "filter":
                return None
            cut = self._cut_last(messages, length, limit - out)
            if cut is None:
                return None
            messages, length = cut
            self.truncated += 1
        return Prompt(None, out, length, messages=tuple(messages))

    def _cut_last(
        self, messages: list[dict[str, str]], length: int, room: int
    ) -> tuple[list[dict[str, str]], int] | None:
        """The last message's content cut so the whole prompt takes at most ``room`` tokens
        (re-tokenizing a cut text can add a token or two: cut again, three tries)."""
        ids = self.tokenizer.ids(messages[-1]["content"])
        for _ in range(3):
            keep = len(ids) - (length - room)
            if keep < 1:
                return None
            ids = ids[:keep]
            cut = [*messages[:-1], {**messages[-1], "content": self.tokenizer.text(ids)}]
            length = len(self.tokenizer.chat_ids(cut))
            if length <= room:
                return cut, length
        return None

    def turns(self, record: Record, first: Prompt, multi: MultiTurn) -> Prompt:
        """``first`` with the record's later turns that fit, as ``next_turns``. The model's
        own answers (max_tokens each, as the driver asks for) are counted in the history."""
        later = record.later[: multi.max_turns - 1]
        if self.spec.output_tokens == "data":
            usable = []
            for turn in later:
                if turn.answer is None:
                    break
                usable.append(turn)
            later = tuple(usable)
        chosen: list[Turn] = []
        history = list(first.messages or ())
        answer, previous_out = record.answer or "", first.max_tokens
        references = answers = 0  # tokens of the reference answers / of the model's answers
        for turn in later:
            out = self.output_tokens(record, turn.answer)
            if self.spec.too_long != "send":
                history = [*history, {"role": "assistant", "content": answer},
                           {"role": "user", "content": turn.content}]
                references += len(self.tokenizer.ids(answer)) if answer else 0
                answers += previous_out
                length = len(self.tokenizer.chat_ids(history)) - references + answers
                if length + out > self.tokenizer.limit():
                    self.truncated += 1  # the conversation ends before this turn
                    break
            chosen.append(Turn(turn.content, out, multi.think_time_s))
            answer, previous_out = turn.answer or "", out
        return replace(first, next_turns=tuple(chosen))


def _tagged(record: Record, tag: str) -> tuple[str | None, list[dict[str, str]]]:
    if record.text is not None:
        return tag + record.text, []
    messages = [dict(m) for m in record.messages]
    messages[-1]["content"] = tag + messages[-1]["content"]  # the first user message
    return None, messages


def dataset_prompts(
    spec: DatasetSpec, count: int, seed: int, run_index: int, tokenizer: EngineTokenizer
) -> PromptSet:
    """``count`` prompts of run ``run_index`` (see the module docstring); prompts too long
    for the engine are left out (the next record taken) or cut, as ``spec.too_long`` says."""
    records = list(load_records(spec))
    random.Random(seed).shuffle(records)
    fitter = _Fitter(spec, tokenizer, random.Random(f"{seed}:{run_index}:output"))
    multi = spec.multi_turn if not isinstance(spec, JsonlPrompts) else None
    prompts: list[Prompt] = []
    filtered = misses = 0
    position = 0
    start = run_index * count
    while len(prompts) < count:
        record = records[(start + position) % len(records)]
        fresh = run_index == 0 and position < min(count, len(records))
        tag = "" if fresh else f"[{run_index}.{position}] "
        position += 1
        text, messages = _tagged(record, tag)
        prompt = fitter.plain(record, text) if text is not None else fitter.chat(record, messages)
        if prompt is None:
            filtered += 1
            misses += 1
            if misses >= len(records):
                raise WorkloadError(
                    f"{spec.path}: no prompt fits the engine's max_model_len with its output "
                    f"(too_long: {spec.too_long}; {filtered} left out)")
            continue
        misses = 0
        if multi is not None:
            prompt = fitter.turns(record, prompt, multi)
        group = record.where if multi is not None else None
        prompts.append(replace(prompt, group=group))
    return PromptSet(prompts, filtered=filtered, truncated=fitter.truncated)
