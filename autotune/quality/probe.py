"""The quality probe: labelled accuracy and agreement with the study's reference outputs.

Run against a trial's live server after its load benchmark, over HTTP only (the controller
never imports vLLM). Two passes over a fixed prompt set:

1. **Greedy generation** (``temperature: 0``): each output's token ids and text. The text is
   graded against the row's answer (labelled accuracy); the token ids are compared with the
   reference's (``quality_seq_match``).
2. **Teacher forcing**: the prompt followed by the *reference's* output is sent as a prompt with
   ``prompt_logprobs``, so every position is scored in the reference's own context. The argmax
   at each output position is compared with the reference's (``quality_top1_agreement``) and
   the log-probability of the reference token with the reference's (``quality_logprob_drift``,
   the mean absolute difference in nats).

Comparing teacher-forced passes with teacher-forced passes keeps the measure fair: both sides
go through the same prefill path, and after a first differing token the comparison does not
drift into unrelated contexts. The reference is recorded once per study, on its first trial
(the vLLM-default configuration); that trial agrees with itself by definition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from autotune.quality.reference import (
    EvalRow,
    Forced,
    Generation,
    QualityError,
    QualityRequestLost,
    Reference,
    ReferenceItem,
    ReferenceSource,
    accuracy,
    agreement,
    fingerprint,
    load_rows,
)
from autotune.space import QualitySpec

POLL_S = 1.0


@dataclass
class QualityResult:
    metrics: dict[str, float] = field(default_factory=dict)
    recorded: Reference | None = None  # set when this run recorded the study's reference
    notes: list[str] = field(default_factory=list)


class QualityProbe:
    """Runs the probe of ``spec`` against live servers; holds the study's reference.

    One probe serves every trial slot of a study (thread-safe). ``source`` reads the reference
    another worker may have stored; a trial that finds none while the default trial is still
    running waits for it (up to ``spec.reference_wait_s``) with its server up.

    Just over 200 lines: the two passes (generation, teacher forcing) share its HTTP batching
    and the reference lock; the pure scoring is in ``quality.reference``.
    """

    def __init__(
        self,
        spec: QualitySpec,
        reference: Reference | None = None,
        source: ReferenceSource | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.spec = spec
        self.reference = reference
        self.source = source
        self.transport = transport  # tests hand in a fake server
        # The reference this probe recorded itself, until the study has it: a default trial
        # whose start failed after recording it records it again on its next start.
        self._recorded: Reference | None = None
        self._rows: list[EvalRow] | None = None
        self._lock = threading.Lock()

    @property
    def rows(self) -> list[EvalRow]:
        with self._lock:
            if self._rows is None:
                self._rows = load_rows(self.spec)
            return self._rows

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.spec, self.rows)

    def run(
        self, base_url: str, served_name: str, *, may_record: bool, trial: int | None = None
    ) -> QualityResult:
        """Measure one live server. With ``may_record`` (the study's default trial) and no
        reference yet, this server's outputs become the reference."""
        started = time.monotonic()
        result = QualityResult()
        try:
            self._run(base_url, served_name, may_record, trial, result)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise QualityError(f"quality probe: unexpected server response ({exc!r})") from exc
        finally:
            result.metrics["quality_s"] = time.monotonic() - started
        return result

    def _run(
        self,
        base_url: str,
        served_name: str,
        may_record: bool,
        trial: int | None,
        result: QualityResult,
    ) -> None:
        rows = self.rows
        with httpx.Client(timeout=self.spec.timeout_s, transport=self.transport) as client:
            generations = self._generate(client, base_url, served_name, rows)
            acc = accuracy(rows, [g.text for g in generations])
            if acc is not None:
                result.metrics["quality_accuracy"] = acc
            result.metrics["quality_prompts"] = float(len(rows))
            result.metrics["quality_labelled"] = float(sum(r.answer is not None for r in rows))
            if self.spec.reference == "none":
                return
            reference = self._reference(may_record)
            if reference is None and not may_record:
                result.notes.append(
                    "quality: no reference outputs (the study's default trial records them); "
                    "agreement not measured"
                )
                return
            if reference is not None and reference.fingerprint != self.fingerprint:
                result.notes.append(
                    "quality: the study's reference was recorded for other prompts or "
                    "generation settings; agreement not measured"
                )
                return
            if reference is None:
                own = [(g.prompt_ids, g.output_ids) for g in generations]
                forced = self._force(client, base_url, served_name, own)
                reference = Reference(
                    fingerprint=self.fingerprint,
                    items=[
                        ReferenceItem(g.output_ids, f.argmax, f.logprobs)
                        for g, f in zip(generations, forced, strict=True)
                    ],
                    accuracy=acc,
                    trial=trial,
                )
                with self._lock:
                    self.reference = self._recorded = reference
                result.recorded = reference
            else:
                forced = self._force(
                    client,
                    base_url,
                    served_name,
                    [
                        (g.prompt_ids, r.output_ids)
                        for g, r in zip(generations, reference.items, strict=True)
                    ],
                )
        result.metrics.update(agreement(reference, generations, forced))
        if acc is not None and reference.accuracy is not None:
            result.metrics["quality_accuracy_delta"] = acc - reference.accuracy

    def _reference(self, may_record: bool) -> Reference | None:
        deadline = time.monotonic() + self.spec.reference_wait_s
        while True:
            with self._lock:
                # The default trial (``may_record``) does not compare with what it recorded
                # itself on an earlier start: it records again, and its outcome carries it.
                if self.reference is not None and not (
                    may_record and self.reference is self._recorded
                ):
                    return self.reference
            if may_record or self.source is None:
                return None
            try:
                found, pending = self.source()
            except Exception as exc:  # noqa: BLE001 - a storage error must not end the trial
                raise QualityError(
                    f"quality probe: cannot read the study's reference: {exc}"
                ) from exc
            if found is not None:
                with self._lock:
                    self.reference = found
                return found
            if not pending or time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)

    def _post(self, client: httpx.Client, base_url: str, payload: dict[str, Any]) -> list[dict]:
        try:
            response = client.post(f"{base_url}/v1/completions", json=payload)
        except httpx.TransportError as exc:
            raise QualityRequestLost(f"quality probe request failed: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise QualityError(f"quality probe request failed: {exc!r}") from exc
        if response.status_code != 200:
            raise QualityError(
                f"quality probe request refused: HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            choices = response.json()["choices"]
        except (ValueError, KeyError) as exc:
            raise QualityError(
                f"quality probe: unexpected response {response.text[:300]}"
            ) from exc
        return sorted(choices, key=lambda c: c["index"])

    def _batches(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        size = self.spec.batch_size
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _generate(
        self, client: httpx.Client, base_url: str, served_name: str, rows: Sequence[EvalRow]
    ) -> list[Generation]:
        out: list[Generation] = []
        for batch in self._batches(rows):
            payload: dict[str, Any] = {
                "model": served_name,
                "prompt": [r.prompt for r in batch],
                "max_tokens": self.spec.max_tokens,
                "temperature": 0.0,
                "return_token_ids": True,
            }
            if self.spec.stop:
                payload["stop"] = self.spec.stop
            choices = self._post(client, base_url, payload)
            if len(choices) != len(batch):
                raise QualityError(
                    f"quality probe: {len(batch)} prompts sent, {len(choices)} choices back"
                )
            for choice in choices:
                if choice.get("token_ids") is None or choice.get("prompt_token_ids") is None:
                    raise QualityError(
                        "quality probe: the server returned no token ids (it needs vLLM's "
                        "`return_token_ids`)"
                    )
                out.append(
                    Generation(
                        [int(t) for t in choice["prompt_token_ids"]],
                        [int(t) for t in choice["token_ids"]],
                        choice.get("text") or "",
                    )
                )
        return out

    def _force(
        self,
        client: httpx.Client,
        base_url: str,
        served_name: str,
        sequences: Sequence[tuple[list[int], list[int]]],
    ) -> list[Forced]:
        """Teacher-forced scores of each (prompt ids, continuation ids)."""
        out: list[Forced] = []
        for batch in self._batches(sequences):
            payload = {
                "model": served_name,
                "prompt": [prompt + continuation for prompt, continuation in batch],
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": self.spec.top_logprobs,
            }
            choices = self._post(client, base_url, payload)
            if len(choices) != len(batch):
                raise QualityError(
                    f"quality probe: {len(batch)} prompts sent, {len(choices)} choices back"
                )
            for (prompt, continuation), choice in zip(batch, choices, strict=True):
                out.append(forced_scores(len(prompt), continuation, choice.get("prompt_logprobs")))
        return out


def forced_scores(
    n_prompt: int, continuation: Sequence[int], per_position: list[dict | None] | None
) -> Forced:
    """Argmax and the continuation token's logprob at each continuation position, from a
    completions choice's ``prompt_logprobs`` (``{token_id: {logprob, rank, ...}}`` per
    position)."""
    if per_position is None or len(per_position) != n_prompt + len(continuation):
        raise QualityError("quality probe: the server returned no prompt_logprobs")
    argmax: list[int] = []
    logprobs: list[float] = []
    for offset, token in enumerate(continuation):
        entries = per_position[n_prompt + offset] or {}
        if not entries:
            raise QualityError("quality probe: empty prompt_logprobs at a scored position")
        best = max(entries.items(), key=lambda kv: (kv[1]["logprob"], -int(kv[0])))
        argmax.append(int(best[0]))
        mine = entries.get(str(token))
        if mine is None:  # vLLM always includes the prompt's own token
            raise QualityError("quality probe: prompt_logprobs lack the scored token")
        logprobs.append(float(mine["logprob"]))
    return Forced(argmax, logprobs)
