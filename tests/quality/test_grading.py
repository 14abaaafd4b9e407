"""Labelled-eval grading against hand-made cases."""

from __future__ import annotations

import pytest

from autotune.quality.grading import contains, exact_match, grade, numeric_match, parse_number


@pytest.mark.parametrize(
    ("output", "answer", "expected"),
    [
        ("31284", "31284", True),
        ("  31284\n", "31284", True),
        ("Paris  is   nice", "Paris is nice", True),
        ("31284 ", " 31284", True),
        ("3128", "31284", False),
        ("312845", "31284", False),
        ("paris", "Paris", False),  # case matters
        ("", "", True),
        ("", "0", False),
    ],
)
def test_exact_match(output: str, answer: str, expected: bool) -> None:
    assert exact_match(output, answer) is expected


@pytest.mark.parametrize(
    ("output", "answer", "expected"),
    [
        ("The capital is Paris.", "Paris", True),
        ("the answer:\n  42  apples", "42 apples", True),
        ("Pari", "Paris", False),
        ("anything", "", True),
    ],
)
def test_contains(output: str, answer: str, expected: bool) -> None:
    assert contains(output, answer) is expected


@pytest.mark.parametrize(
    ("output", "answer", "expected"),
    [
        ("125", "125", True),
        (" 125</s>", "125", True),
        ("The sum is 125.", "125", True),
        ("125.0", "125", True),
        ("1,234", "1234", True),
        ("1234", "1,234", True),
        ("-7", "-7", True),
        ("+7", "7", True),
        ("0.1", ".1", True),
        ("1e3", "1000", True),
        ("073", "73", True),  # leading zeros: the same number
        ("124", "125", False),
        ("12 5", "125", False),  # the first number is 12
        ("no number", "125", False),
        ("125", 125, True),
        ("3.14159", 3.14159, True),
        ("0.30000000000000004", 0.3, True),  # within the relative tolerance
        ("0.3001", 0.3, False),
    ],
)
def test_numeric_match(output: str, answer: str | float, expected: bool) -> None:
    assert numeric_match(output, answer) is expected


def test_parse_number_takes_the_first() -> None:
    assert parse_number("between 3 and 4") == 3.0
    assert parse_number("x = -2.5e-1;") == -0.25
    assert parse_number("12,34") == 12.0  # not a thousands group: 12 then 34
    assert parse_number("none") is None


def test_grade_lists_and_rules() -> None:
    assert grade("The answer is 4.", ["four", "4"], "contains")
    assert not grade("The answer is 5.", ["four", "4"], "contains")
    assert grade("4", [4, 4.5], "numeric")
    assert grade("54321", "54321", "exact")
    assert not grade("54321", "12345", "exact")
    assert grade("  7 ", 7, "exact")  # a number answer compares as its text
