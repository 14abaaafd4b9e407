"""Token counts and ids from the served model's own tokenizer (vLLM's /tokenize and
/detokenize), so prompt lengths are the engine's without a local tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from autotune.bench.prompt_set import WorkloadError

# Tokenized once per run for ``token_pool``: ordinary English, code and numbers.
SEED_TEXT = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the annual "
    "budget report, and engineers measure latency, throughput and memory on every server "
    "in the cluster before the release. A small river runs through the old town; children "
    "play near the bridge, merchants sell bread, apples, cheese and coffee, and the clock "
    "in the square strikes noon. Modern systems schedule requests in batches, cache keys "
    "and values, and stream tokens back to users who expect answers within a second. "
    "def compute(values): return sum(v * v for v in values) / max(len(values), 1)\n"
    "Numbers like 3.14159, 2718, 42 and 1000000 appear in tables, logs and invoices. "
)


# How long one /tokenize or /detokenize may take (a request the engine never answers in that
# time is lost: ``EngineUnreachable``).
TIMEOUT_S = 30.0


class EngineUnreachable(WorkloadError):
    """A /tokenize or /detokenize request the engine never answered (refused, reset, timed
    out): a fault of the engine of the moment (dead, hung), not of the workload; the measuring
    step asks the engine why (``bench.http_step.lost``)."""


class EngineTokenizer:
    """Tokenizes with the engine at ``base_url``; ``max_model_len`` comes with every answer."""

    def __init__(self, base_url: str, model: str, timeout_s: float | None = None) -> None:
        self.base_url = base_url
        self.model = model
        self.max_model_len: int | None = None
        self._client = httpx.Client(timeout=TIMEOUT_S if timeout_s is None else timeout_s)

    def __enter__(self) -> EngineTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        try:
            response = self._client.post(f"{self.base_url}{path}",
                                         json={"model": self.model, **body})
        except httpx.TransportError as exc:
            verb = path.strip("/")
            raise EngineUnreachable(
                f"cannot {verb} with the engine's {path}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            response.raise_for_status()
            answer = response.json()
            if not isinstance(answer, dict):
                raise ValueError(f"not a JSON object: {str(answer)[:100]}")
        except (httpx.HTTPError, ValueError) as exc:
            verb = path.strip("/")
            raise WorkloadError(f"cannot {verb} with the engine's {path}: {exc}") from exc
        if "max_model_len" in answer:
            self.max_model_len = int(answer["max_model_len"])  # type: ignore[arg-type]
        return answer

    def ids(self, text: str, special: bool = False) -> list[int]:
        """``text``'s token ids, with the special tokens (BOS) /v1/completions adds to a text
        prompt when ``special``, else without."""
        answer = self._post("/tokenize", {"prompt": text, "add_special_tokens": special})
        try:
            return [int(t) for t in answer["tokens"]]  # type: ignore[union-attr]
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadError(f"the engine's /tokenize answered without tokens: {exc}") from exc

    def chat_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt ``messages`` make under the server's chat template (with the
        assistant's generation prompt), as /v1/chat/completions builds it."""
        answer = self._post("/tokenize", {"messages": list(messages),
                                          "add_generation_prompt": True})
        try:
            return [int(t) for t in answer["tokens"]]  # type: ignore[union-attr]
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadError(f"the engine's /tokenize answered without tokens: {exc}") from exc

    def text(self, ids: Sequence[int]) -> str:
        answer = self._post("/detokenize", {"tokens": list(ids)})
        prompt = answer.get("prompt")
        if not isinstance(prompt, str):
            raise WorkloadError("the engine's /detokenize answered without a prompt")
        return prompt

    def limit(self) -> int:
        """The engine's max_model_len (asked for when no answer carried it yet)."""
        if self.max_model_len is None:
            self.ids("a")
        if self.max_model_len is None:
            raise WorkloadError("the engine's /tokenize did not say its max_model_len")
        return self.max_model_len

    def pool(self) -> list[int]:
        """Ordinary token ids of the served model (no special tokens), sorted."""
        pool = sorted(set(self.ids(SEED_TEXT)))
        if not pool:
            raise WorkloadError("the engine's /tokenize returned no tokens")
        return pool


def token_pool(base_url: str, model: str, timeout_s: float | None = None) -> list[int]:
    """Ordinary token ids of the served model, from its /tokenize endpoint."""
    with EngineTokenizer(base_url, model, timeout_s) as tokenizer:
        return tokenizer.pool()
