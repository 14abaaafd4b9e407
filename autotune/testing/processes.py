"""Which vLLM servers this test session started, for checks that none is left behind.

Importing this module marks the session: every process started afterwards inherits
``AUTOTUNE_TEST_SESSION`` (tests/conftest.py imports it first thing), so the checks see only
our engines, not those of another session or benchmark running on the same host.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ENGINE_MODULE = "vllm.entrypoints.openai.api_server"
SESSION_MARKER = f"AUTOTUNE_TEST_SESSION={uuid.uuid4().hex}"
os.environ["AUTOTUNE_TEST_SESSION"] = SESSION_MARKER.split("=", 1)[1]


def engine_processes() -> list[int]:
    """Live vLLM server processes started by this test session."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and ENGINE_MODULE.encode() in cmdline:
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if SESSION_MARKER.encode() in environ:
                found.append(int(entry))
    return found
