"""Labelled-eval grading: does a generated text answer a prompt correctly?

Three rules, chosen per eval file (``quality.scoring``) or per row (``"scoring"``):

- ``exact``: the output equals the answer, ignoring surrounding whitespace and runs of spaces.
- ``contains``: the answer appears in the output (same whitespace normalisation).
- ``numeric``: the first number in the output equals the answer's number (``1,234`` and
  ``1234.0`` are the same; relative tolerance 1e-6).

An answer may be a list: the output is correct when it matches any of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

NUMBER = re.compile(
    r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?"
)
REL_TOL = 1e-6
ABS_TOL = 1e-9


def normalize(text: str) -> str:
    return " ".join(text.split())


def parse_number(text: str) -> float | None:
    """The first number in ``text`` (thousands separators allowed), or None."""
    match = NUMBER.search(text)
    if match is None:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def exact_match(output: str, answer: str) -> bool:
    return normalize(output) == normalize(answer)


def contains(output: str, answer: str) -> bool:
    return normalize(answer) in normalize(output)


def numeric_match(output: str, answer: str | float) -> bool:
    expected = float(answer) if isinstance(answer, (int, float)) else parse_number(answer)
    got = parse_number(output)
    if expected is None or got is None:
        return False
    return math.isclose(got, expected, rel_tol=REL_TOL, abs_tol=ABS_TOL)


GRADERS = {"exact": exact_match, "contains": contains, "numeric": numeric_match}


def grade(output: str, answer: str | float | Sequence[str | float], scoring: str) -> bool:
    """Whether ``output`` is correct under ``scoring`` for ``answer`` (or any of a list)."""
    grader = GRADERS[scoring]
    answers = answer if isinstance(answer, (list, tuple)) else [answer]
    if scoring != "numeric":
        return any(grader(output, str(a)) for a in answers)
    return any(grader(output, a) for a in answers)
