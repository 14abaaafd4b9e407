from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart-cpu.yaml"
ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (see tests/pg_server.py)."""
    from tests.pg_server import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The quickstart's demo model, built once (cached in ~/.cache/autotune).

    AUTOTUNE_TEST_MODEL=DIR runs the engine tests on another local model directory instead
    (e.g. while the demo model's recipe is being changed)."""
    from autotune.demo_model import build_demo_model

    override = os.environ.get("AUTOTUNE_TEST_MODEL")
    if override:
        return Path(override)
    return build_demo_model(os.path.expanduser("~/.cache/autotune/demo-llama"))


def small_space(tmp_path: Path, model: Path, **overrides) -> dict:
    """The quickstart space with a short workload, for tests with a real engine."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["model"]["path"] = str(model)
    data["model"]["build_demo"] = False  # the demo_model fixture built it already
    data["engine"]["shutdown_grace_s"] = 5
    data["workload"].update(
        {
            "prompts": {"kind": "random", "input_tokens": 64, "output_tokens": 32},
            "num_requests": 24,
            "warmup_requests": 4,
            "load": {"kind": "concurrency", "concurrency": 8},
        }
    )
    data["slos"] = {"ttft_p95_ms": 20000, "e2e_p95_ms": 60000}
    # Measured once: tests of other features must not depend on how busy the host is
    # (tests/integration/test_disturbance.py covers re-measuring).
    data["measurement"] = {"max_repeats": 0}
    data.pop("quality", None)  # tests/quality covers the probe; others need not pay for it
    for key, value in overrides.items():
        data[key] = value
    return data


def write_space(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# Every process this test session starts inherits this marker, so checks for leftover engines
# see only ours (not engines of another session or benchmark running on the same host).
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
