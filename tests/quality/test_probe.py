"""The probe against a fake OpenAI completions server: reference, agreement, accuracy."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from autotune.quality.probe import QualityProbe, forced_scores
from autotune.quality.reference import (
    Forced,
    Generation,
    QualityError,
    Reference,
    ReferenceItem,
    agreement,
    load_rows,
)
from autotune.space.quality import QualitySpec

EOS = 10  # tokens 0-9 are the digits, 10 ends a sequence
Model = Callable[[list[int]], dict[int, float]]


def base_model(context: list[int]) -> dict[int, float]:
    """Next-token log-probabilities: echo the prompt's digits in reverse order, then EOS."""
    prompt = context[: context.index(EOS)] if EOS in context else context
    out = context[len(prompt) + 1 :] if EOS in context else []
    nxt = prompt[::-1][len(out)] if len(out) < len(prompt) else EOS
    return {t: (-0.01 if t == nxt else -5.0 - t / 100) for t in range(EOS + 1)}


def noisy_model(context: list[int]) -> dict[int, float]:
    """The base model with its logprobs shifted, and a wrong digit wherever a 7 comes next."""
    dist = {t: lp - 0.02 for t, lp in base_model(context).items()}
    best = max(dist, key=dist.__getitem__)
    if best == 7:
        dist[7], dist[8] = dist[8], dist[7]
    return dist


class FakeServer:
    """Just enough of vLLM's /v1/completions: text or token-id prompts, greedy, token ids,
    prompt_logprobs. A text prompt "123 =" is tokenized as its digits followed by EOS."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.requests = 0

    def tokenize(self, prompt: str) -> list[int]:
        return [int(c) for c in prompt if c.isdigit()] + [EOS]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        body = json.loads(request.content)
        prompts = body["prompt"]
        choices = []
        for index, prompt in enumerate(prompts):
            ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
            choice: dict = {"index": index}
            if body.get("prompt_logprobs"):
                per_position: list = [None]
                for pos in range(1, len(ids)):
                    dist = self.model(ids[:pos])
                    top = sorted(dist, key=lambda t: -dist[t])[: body["prompt_logprobs"]]
                    entry = {str(t): {"logprob": dist[t], "rank": top.index(t) + 1} for t in top}
                    entry.setdefault(str(ids[pos]), {"logprob": dist[ids[pos]], "rank": 99})
                    per_position.append(entry)
                choice["prompt_logprobs"] = per_position
            out: list[int] = []
            while len(out) < body["max_tokens"]:
                dist = self.model(ids + out)
                token = max(dist, key=lambda t: (dist[t], -t))
                out.append(token)
                if token == EOS:
                    break
            choice["text"] = "".join(str(t) for t in out if t != EOS)
            if body.get("return_token_ids"):
                choice["token_ids"] = out
                choice["prompt_token_ids"] = ids
            choices.append(choice)
        return httpx.Response(200, json={"choices": choices[::-1]})  # any order


def _spec(tmp_path: Path, rows: list[dict], **extra) -> QualitySpec:
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return QualitySpec(prompts=str(path), batch_size=2, **extra)


ROWS = [
    {"prompt": "123 =", "answer": "321"},
    {"prompt": "4567 =", "answer": "7654"},
    {"prompt": "89 =", "answer": "98"},
    {"prompt": "70 =", "answer": "07", "scoring": "exact"},
    {"prompt": "55 ="},  # unlabelled: agreement only
]


def _probe(tmp_path: Path, model: Model, **extra) -> QualityProbe:
    spec = _spec(tmp_path, ROWS, **extra)
    return QualityProbe(spec, transport=httpx.MockTransport(FakeServer(model)))


def test_reference_trial_records_and_agrees_with_itself(tmp_path: Path) -> None:
    probe = _probe(tmp_path, base_model)
    result = probe.run("http://fake", "demo", may_record=True, trial=0)
    assert result.recorded is not None and probe.reference is result.recorded
    m = result.metrics
    assert m["quality_accuracy"] == 1.0
    assert m["quality_labelled"] == 4 and m["quality_prompts"] == 5
    assert m["quality_seq_match"] == 1.0
    assert m["quality_top1_agreement"] == 1.0
    assert m["quality_logprob_drift"] == 0.0
    assert m["quality_accuracy_delta"] == 0.0
    assert m["quality_s"] >= 0
    ref = result.recorded
    assert ref.trial == 0 and ref.accuracy == 1.0
    assert ref.items[0].output_ids == [3, 2, 1, EOS]
    assert ref.items[0].argmax == [3, 2, 1, EOS]
    assert ref.items[0].logprobs == [-0.01] * 4


def test_same_model_agrees_fully(tmp_path: Path) -> None:
    reference = _probe(tmp_path, base_model).run("http://x", "d", may_record=True).recorded
    probe = _probe(tmp_path, base_model)
    probe.reference = Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    result = probe.run("http://x", "d", may_record=False)
    assert result.recorded is None
    assert result.metrics["quality_seq_match"] == 1.0
    assert result.metrics["quality_top1_agreement"] == 1.0
    assert result.metrics["quality_logprob_drift"] == 0.0


def test_a_changed_model_is_measured_against_the_reference(tmp_path: Path) -> None:
    reference = _probe(tmp_path, base_model).run("http://x", "d", may_record=True).recorded
    probe = _probe(tmp_path, noisy_model)
    probe.reference = reference
    m = probe.run("http://x", "d", may_record=True).metrics  # a reference exists: not re-recorded
    assert probe.reference is reference
    # Greedy outputs: "4567 =" → 7654 becomes 8654…, "70 =" → 07 becomes 08…: 2 of 4 labelled
    # rows wrong, 2 of 5 sequences different.
    assert m["quality_accuracy"] == 0.5
    assert m["quality_accuracy_delta"] == -0.5
    assert m["quality_seq_match"] == pytest.approx(3 / 5)
    # Teacher-forced on the reference outputs (4+5+3+3+3 = 18 positions), the argmax differs
    # exactly where the reference's next token is 7: once in "4567" and once in "70".
    assert m["quality_top1_agreement"] == pytest.approx(16 / 18)
    # Every reference token loses 0.02 nats, except the two 7s, whose logprob drops to -5.09.
    expected = (16 * 0.02 + 2 * abs(-5.0 - 0.08 - 0.02 - (-0.01))) / 18
    assert m["quality_logprob_drift"] == pytest.approx(expected)


def test_agreement_math_on_hand_made_outputs() -> None:
    reference = Reference(
        fingerprint="f",
        items=[
            ReferenceItem([5, 6, EOS], [5, 6, EOS], [-0.1, -0.2, -0.3]),
            ReferenceItem([1, EOS], [1, EOS], [-1.0, -0.5]),
        ],
    )
    generations = [Generation([9], [5, 6, EOS], "56"), Generation([9], [2, EOS], "2")]
    forced = [Forced([5, 6, EOS], [-0.1, -0.25, -0.3]), Forced([2, EOS], [-1.5, -0.5])]
    m = agreement(reference, generations, forced)
    assert m["quality_seq_match"] == 0.5
    assert m["quality_top1_agreement"] == pytest.approx(4 / 5)
    assert m["quality_logprob_drift"] == pytest.approx((0.05 + 0.5) / 5)


def test_forced_scores_reads_prompt_logprobs() -> None:
    per_position = [
        None,
        {"4": {"logprob": -0.1, "rank": 1}},
        {"7": {"logprob": -0.3, "rank": 1}, "2": {"logprob": -1.6, "rank": 2}},
        {"3": {"logprob": -0.7, "rank": 1}, "9": {"logprob": -0.7, "rank": 2}},  # a tie
    ]
    forced = forced_scores(2, [2, 9], per_position)
    assert forced.argmax == [7, 3]  # ties go to the lower id, as greedy sampling does
    assert forced.logprobs == [-1.6, -0.7]
    with pytest.raises(QualityError, match="prompt_logprobs"):
        forced_scores(2, [2, 9, 1], per_position)


def test_no_reference_means_no_agreement(tmp_path: Path) -> None:
    result = _probe(tmp_path, base_model).run("http://x", "d", may_record=False)
    assert "quality_accuracy" in result.metrics
    assert "quality_top1_agreement" not in result.metrics
    assert any("no reference" in note for note in result.notes)


def test_reference_none_skips_teacher_forcing(tmp_path: Path) -> None:
    server = FakeServer(base_model)
    spec = _spec(tmp_path, ROWS, reference="none")
    probe = QualityProbe(spec, transport=httpx.MockTransport(server))
    result = probe.run("http://x", "d", may_record=True)
    assert result.recorded is None
    assert server.requests == 3  # 5 prompts in batches of 2, generation only
    assert set(result.metrics) == {
        "quality_accuracy",
        "quality_prompts",
        "quality_labelled",
        "quality_s",
    }


def test_stale_reference_is_not_compared(tmp_path: Path) -> None:
    probe = _probe(tmp_path, base_model)
    probe.reference = Reference(fingerprint="other", items=[])
    result = probe.run("http://x", "d", may_record=False)
    assert "quality_seq_match" not in result.metrics
    assert any("other prompts" in note for note in result.notes)


def test_waits_for_the_default_trial_of_another_worker(tmp_path: Path) -> None:
    reference = _probe(tmp_path, base_model).run("http://x", "d", may_record=True).recorded
    stored: dict[str, Reference] = {}
    calls = []

    def source() -> tuple[Reference | None, bool]:
        calls.append(time.monotonic())
        found = stored.get("ref")
        return found, found is None

    threading.Timer(0.3, lambda: stored.update(ref=reference)).start()
    probe = _probe(tmp_path, base_model)
    probe.source = source
    result = probe.run("http://x", "d", may_record=False)
    assert len(calls) >= 2
    assert result.metrics["quality_top1_agreement"] == 1.0


def test_does_not_wait_when_no_default_trial_is_pending(tmp_path: Path) -> None:
    probe = _probe(tmp_path, base_model)
    probe.source = lambda: (None, False)
    started = time.monotonic()
    result = probe.run("http://x", "d", may_record=False)
    assert time.monotonic() - started < 5
    assert "quality_top1_agreement" not in result.metrics


def test_http_errors_are_quality_errors(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ROWS)
    transport = httpx.MockTransport(lambda r: httpx.Response(400, text="prompt too long"))
    with pytest.raises(QualityError, match="HTTP 400: prompt too long"):
        QualityProbe(spec, transport=transport).run("http://x", "d", may_record=True)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["not json"], "eval.jsonl:1: not JSON"),
        (['{"answer": "1"}'], "eval.jsonl:1: expected an object with a 'prompt' string"),
        (['{"prompt": "a"}', '{"prompt": "b", "scoring": "fuzzy"}'], "eval.jsonl:2: scoring"),
        (['{"prompt": "a", "answer": "many", "scoring": "numeric"}'], "numeric answer"),
        ([""], "no prompts"),
    ],
)
def test_bad_eval_files_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(QualityError, match=message):
        load_rows(QualitySpec(prompts=str(path)))


def test_num_prompts_takes_the_first_rows(tmp_path: Path) -> None:
    rows = load_rows(_spec(tmp_path, ROWS, num_prompts=2))
    assert [r.prompt for r in rows] == ["123 =", "4567 ="]
    assert rows[0].scoring == "exact"


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(QualityError, match="cannot read the quality prompts file"):
        load_rows(QualitySpec(prompts=str(tmp_path / "missing.jsonl")))


def test_bundled_eval_sets_resolve_from_anywhere(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rows = load_rows(QualitySpec(prompts="evals/demo-tasks.jsonl", num_prompts=3))
    assert len(rows) == 3 and all(r.answer for r in rows)


def test_reference_round_trips_through_json() -> None:
    ref = Reference("abc", [ReferenceItem([1, 2], [1, 3], [-0.1234567891, -math.pi])], 0.5, 0)
    back = Reference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert back.items[0].logprobs == [-0.123457, -3.141593]
    assert back.accuracy == 0.5 and back.trial == 0 and back.fingerprint == "abc"


def test_malformed_responses_are_quality_errors(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ROWS)
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, json={"choices": [{"index": 0}, {"index": 1}]})
    )
    with pytest.raises(QualityError, match="no token ids"):
        QualityProbe(spec, transport=transport).run("http://x", "d", may_record=True)
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, json={"choices": [{"text": "1"}, {"text": "2"}]})
    )
    with pytest.raises(QualityError, match="unexpected"):
        QualityProbe(spec, transport=transport).run("http://x", "d", may_record=True)


def test_a_failing_reference_source_is_a_quality_error(tmp_path: Path) -> None:
    def source() -> tuple[Reference | None, bool]:
        raise RuntimeError("database is locked")

    probe = _probe(tmp_path, base_model)
    probe.source = source
    with pytest.raises(QualityError, match="database is locked"):
        probe.run("http://x", "d", may_record=False)
