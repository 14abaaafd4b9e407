"""Write the small sample workload files shipped in workloads/ (deterministic: the same bytes
on every run; tests/bench/test_workload_sources.py checks the committed files against it).

No public data set can be downloaded on the hosts autotune is tested on, so these stand in
for them, in their published formats: ShareGPT JSON, OpenAI chat JSONL, plain JSONL, and the
Azure LLM inference, BurstGPT and Mooncake traces, plus a generic trace with a group column.
Sized for the demo model (max_model_len 512): a few prompts are longer, to be filtered or
truncated.

    python scripts/make_sample_workloads.py [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from datetime import datetime, timedelta
from pathlib import Path

WORDS = (
    "the a of to and in is that for it on with as was at by an be this from or which have "
    "are not but had they you were their one all we can her has there been if more when will "
    "would who so no time people year way day man thing woman life child world school state "
    "family student group country problem hand part place case week company system program "
    "question work government number night point home water room mother area money story fact "
    "month lot right study book eye job word business issue side kind head house service "
    "friend father power hour game line end member law car city community name president team "
    "minute idea kid body information back parent face others level office door health person "
    "art war history party result change morning reason research girl guy moment air teacher "
    "force education cache token server latency batch prefix queue memory model request"
).split()
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a concise assistant for a travel company. Answer in one paragraph.",
    "You are a code reviewer. Point out bugs first, then style.",
)
ASSISTANT_NAMES = ("gpt", "chatgpt", "bard")


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def paragraph(rng: random.Random, words: int) -> str:
    parts, left = [], words
    while left > 0:
        n = min(left, rng.randint(6, 16))
        parts.append(sentence(rng, n))
        left -= n
    return " ".join(parts)


def conversation(rng: random.Random, index: int) -> list[tuple[str, str]]:
    """(role, text) messages: sometimes a system prompt, 1-4 user turns with answers; every
    tenth conversation opens with a question too long for a 512-token model."""
    messages = []
    if rng.random() < 0.4:
        messages.append(("system", rng.choice(SYSTEM_PROMPTS)))
    for turn in range(rng.randint(1, 4)):
        long = index % 10 == 9 and turn == 0
        messages.append(("user", paragraph(rng, rng.randint(500, 700) if long
                                           else rng.randint(8, 60))))
        messages.append(("assistant", paragraph(rng, rng.randint(5, 60))))
    return messages


def sharegpt(rng: random.Random) -> str:
    entries = []
    for index in range(40):
        convo = [{"from": {"user": "human", "system": "system"}.get(role, rng.choice(
            ASSISTANT_NAMES)), "value": text} for role, text in conversation(rng, index)]
        entries.append({"id": f"sample-{index}", "conversations": convo})
    return json.dumps(entries, indent=1) + "\n"


def chat_jsonl(rng: random.Random) -> str:
    lines = []
    for index in range(40):
        messages = [{"role": role, "content": text} for role, text in conversation(rng, index)]
        lines.append(json.dumps({"messages": messages}))
    return "\n".join(lines) + "\n"


def plain_jsonl(rng: random.Random) -> str:
    lines = []
    for index in range(40):
        words = rng.randint(500, 700) if index % 10 == 9 else rng.randint(8, 80)
        record: dict[str, object] = {"prompt": paragraph(rng, words)}
        if index % 4 != 3:
            record["output_tokens"] = rng.randint(8, 96)
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def arrivals(rng: random.Random, count: int, rate: float) -> list[float]:
    """Bursty arrivals: Poisson at ``rate`` with a burst at 4x the rate in the middle."""
    times, now = [], 0.0
    for i in range(count):
        burst = count // 3 <= i < count // 2
        now += rng.expovariate(rate * (4 if burst else 1))
        times.append(round(now, 3))
    return times


def lengths(rng: random.Random, index: int) -> tuple[int, int]:
    if index % 25 == 24:
        return rng.randint(520, 900), rng.randint(16, 64)  # too long for max_model_len 512
    return rng.randint(32, 320), rng.randint(8, 120)


def table(header: list[str], rows: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def azure(rng: random.Random) -> str:
    start = datetime(2023, 11, 16, 18, 15, 46)
    rows = []
    for index, t in enumerate(arrivals(rng, 120, 4.0)):
        stamp = start + timedelta(seconds=t)
        context, generated = lengths(rng, index)
        rows.append([stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond:06d}0",
                     context, generated])
    return table(["TIMESTAMP", "ContextTokens", "GeneratedTokens"], rows)


def burstgpt(rng: random.Random) -> str:
    rows = []
    for index, t in enumerate(arrivals(rng, 120, 3.0)):
        request, response = lengths(rng, index)
        if index % 30 == 17:
            response = 0  # a failed request, as the log records it
        model = rng.choice(("ChatGPT", "GPT-4"))
        log = rng.choice(("Conversation log", "API log"))
        rows.append([t, model, request, response, request + response, log])
    return table(["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens",
                  "Log Type"], rows)


def mooncake(rng: random.Random) -> str:
    """Requests in a few families sharing their first blocks (hash ids), as Mooncake's
    conversation trace does; blocks of 512 tokens, so lengths here stay under one or two."""
    lines, next_hash = [], 100
    families = [[i] for i in range(8)]
    for index, t in enumerate(arrivals(rng, 120, 4.0)):
        family = rng.choice(families)
        input_length, output_length = lengths(rng, index)
        blocks = -(-input_length // 512)
        hash_ids = family[:blocks] + list(range(next_hash, next_hash + blocks - len(family)))
        next_hash += max(0, blocks - len(family))
        lines.append(json.dumps({"timestamp": int(t * 1000), "input_length": input_length,
                                 "output_length": output_length, "hash_ids": hash_ids}))
    return "\n".join(lines) + "\n"


def generic(rng: random.Random) -> str:
    rows = []
    for index, t in enumerate(arrivals(rng, 120, 4.0)):
        prompt, output = lengths(rng, index)
        rows.append([int(t * 1000), f"session-{rng.randint(0, 9)}", prompt, output])
    return table(["arrival_ms", "session", "prompt_tokens", "completion_tokens"], rows)


FILES = {
    "sharegpt-sample.json": sharegpt,
    "chat-sample.jsonl": chat_jsonl,
    "prompts-sample.jsonl": plain_jsonl,
    "azure-trace-sample.csv": azure,
    "burstgpt-sample.csv": burstgpt,
    "mooncake-trace-sample.jsonl": mooncake,
    "generic-trace-sample.csv": generic,
}


def write_samples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seed, (name, make) in enumerate(FILES.items()):
        path = out / name
        path.write_bytes(make(random.Random(f"sample-workloads:{seed}")).encode())
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "workloads")
    for path in write_samples(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
