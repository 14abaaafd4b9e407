"""The quality eval set and the study's reference outputs: reading the prompts, identifying
what a reference was recorded for, and scoring outputs against it. No HTTP here (the probe in
``probe.py`` talks to the server).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError
from autotune.quality.grading import GRADERS, grade, parse_number
from autotune.space import QualitySpec

REFERENCE_FORMAT = 1


class QualityError(AutotuneError):
    """The probe could not run: an unreadable eval file or a server that refused a request."""


class QualityRequestLost(QualityError):
    """A probe request the server never answered (refused, reset, timed out): a fault of the
    engine of the moment (dead, hung), which fails the start transiently, never a trial
    measured without its quality."""


@dataclass(frozen=True)
class EvalRow:
    prompt: str
    answer: Any = None  # str, number or a list of them; None = unlabelled
    scoring: str = "exact"


@dataclass
class Generation:
    prompt_ids: list[int]
    output_ids: list[int]
    text: str


@dataclass
class Forced:
    """Teacher-forced scores of one reference output: per output position."""

    argmax: list[int]
    logprobs: list[float]


@dataclass
class ReferenceItem:
    """The reference's greedy output for one prompt and its teacher-forced scores."""

    output_ids: list[int]
    argmax: list[int]
    logprobs: list[float]


@dataclass
class Reference:
    """The reference configuration's outputs, stored once per study."""

    fingerprint: str
    items: list[ReferenceItem]
    accuracy: float | None = None
    trial: int | None = None
    format: int = REFERENCE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for item in data["items"]:
            item["logprobs"] = [round(x, 6) for x in item["logprobs"]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        items = [ReferenceItem(**item) for item in data["items"]]
        return cls(
            fingerprint=data["fingerprint"],
            items=items,
            accuracy=data.get("accuracy"),
            trial=data.get("trial"),
            format=data.get("format", REFERENCE_FORMAT),
        )


# () → (the study's stored reference or None, whether its default trial is still to finish)
ReferenceSource = Callable[[], "tuple[Reference | None, bool]"]


def resolve_path(path: str) -> Path:
    """``path`` as given (``~`` expanded), or else relative to autotune's source tree, where
    the bundled eval sets live (``evals/``)."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    bundled = Path(__file__).resolve().parents[2] / given
    return bundled if bundled.exists() else given


def load_rows(spec: QualitySpec) -> list[EvalRow]:
    """The first ``num_prompts`` rows of the eval file; raises QualityError naming the line."""
    path = resolve_path(spec.prompts)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise QualityError(
            f"cannot read the quality prompts file {path}: {exc.strerror or exc} "
            "(quality.prompts is relative to the working directory or to autotune's source tree)"
        ) from exc
    rows: list[EvalRow] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QualityError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise QualityError(f"{where}: expected an object with a 'prompt' string")
        scoring = record.get("scoring", spec.scoring)
        if scoring not in GRADERS:
            raise QualityError(f"{where}: scoring {scoring!r}; use {', '.join(GRADERS)}")
        answer = record.get("answer")
        if scoring == "numeric" and answer is not None:
            answers = answer if isinstance(answer, list) else [answer]
            for a in answers:
                if not isinstance(a, (int, float)) and parse_number(str(a)) is None:
                    raise QualityError(f"{where}: numeric scoring needs a numeric answer")
        rows.append(EvalRow(record["prompt"], answer, scoring))
        if spec.num_prompts is not None and len(rows) == spec.num_prompts:
            break
    if not rows:
        raise QualityError(f"{path}: no prompts")
    return rows


def fingerprint(spec: QualitySpec, rows: Sequence[EvalRow]) -> str:
    """Identifies what a reference was recorded for: prompts and generation settings."""
    blob = json.dumps(
        {"prompts": [r.prompt for r in rows], "max_tokens": spec.max_tokens, "stop": spec.stop},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def accuracy(rows: Sequence[EvalRow], texts: Sequence[str]) -> float | None:
    """Share of the labelled rows answered correctly (None when no row has an answer)."""
    graded = [
        grade(text, row.answer, row.scoring)
        for row, text in zip(rows, texts, strict=True)
        if row.answer is not None
    ]
    return sum(graded) / len(graded) if graded else None


def agreement(
    reference: Reference, generations: Sequence[Generation], forced: Sequence[Forced]
) -> dict[str, float]:
    """Sequence match, teacher-forced top-1 agreement and logprob drift against ``reference``."""
    items = reference.items
    seq = sum(g.output_ids == r.output_ids for g, r in zip(generations, items, strict=True))
    positions = agree = 0
    drift = 0.0
    for f, r in zip(forced, items, strict=True):
        pairs = zip(f.argmax, r.argmax, f.logprobs, r.logprobs, strict=True)
        for mine, theirs, lp, ref_lp in pairs:
            positions += 1
            agree += mine == theirs
            drift += abs(lp - ref_lp)
    return {
        "quality_seq_match": seq / len(items) if items else math.nan,
        "quality_top1_agreement": agree / positions if positions else 1.0,
        "quality_logprob_drift": drift / positions if positions else 0.0,
    }
