"""Reading a workload's data files (datasets, traces): UTF-8 text and JSONL objects, every
problem a WorkloadError that names the file (and the line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autotune.bench.prompt_set import WorkloadError


def read_text(path: Path, what: str) -> str:
    """The file's text (a byte-order mark is allowed); ``what`` names the file in errors."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise WorkloadError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def jsonl_objects(
    path: Path, text: str, error: type[Exception] = WorkloadError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of ``text``, a JSONL file's; a line that
    is not a JSON object raises ``error`` naming the file and line."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise error(f"{path}:{number}: expected a JSON object")
        yield number, record
