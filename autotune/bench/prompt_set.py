"""What a prompt builder hands the load driver: the requests of one run (a leaf module)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Turn:
    """A later user turn of a conversation: sent ``think_s`` seconds after the model answered
    the turn before, with the whole history."""

    content: str
    max_tokens: int
    think_s: float = 0.0


@dataclass(frozen=True)
class Prompt:
    """One request of a workload.

    ``body`` (token ids or text) goes to ``/v1/completions``; when ``messages`` is set instead
    (OpenAI chat messages) the request goes to ``/v1/chat/completions`` and the server's chat
    template applies. ``arrival_s`` (trace replay) is the send time as an offset from the
    run's start; ``next_turns`` are a conversation's later user turns, each sent with the
    whole history (including the model's own answers) after the workload's think time;
    ``group`` names the conversation or shared prefix the request belongs to.
    """

    body: list[int] | str | None
    max_tokens: int
    input_tokens: int | None = None
    messages: tuple[dict[str, str], ...] | None = None
    arrival_s: float | None = None
    next_turns: tuple[Turn, ...] = ()
    group: str | None = None


class PromptSet(list[Prompt]):
    """The prompts of one run (warm-up first), and how the builder fitted them to the engine:
    ``filtered`` prompts (or rows of a trace) left out as longer than its max_model_len,
    ``truncated`` ones cut to fit. ``counts()`` is what the run's metrics carry."""

    def __init__(self, prompts: Iterable[Prompt] = (), filtered: int = 0, truncated: int = 0):
        super().__init__(prompts)
        self.filtered = filtered
        self.truncated = truncated

    def counts(self) -> dict[str, float]:
        return {"prompts_filtered": float(self.filtered),
                "prompts_truncated": float(self.truncated)}


class WorkloadError(Exception):
    """The workload cannot be built: a bad prompts file (its message names file:line and the
    field), or an engine that cannot tokenize."""
