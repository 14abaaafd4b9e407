"""Bad input, tried as a new user would, through the real CLI: each is refused with exit code 2
and a message naming the file, the field and the line, before anything is written (no database,
no study, no log folder) and before any engine could start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotune.errors import SpaceError
from autotune.space.model import Space, check_model_path, load_space

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "quickstart-cpu.yaml"
# Should a check regress, the "engine" exits at once instead of starting vLLM.
NO_ENGINE = ["{python}", "-c", "raise SystemExit(3)"]


def _start(work: Path, space: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "HF_HUB_CACHE": str(work.parent / "empty-hub-cache"),
        "COLUMNS": "200"}
    env.pop("AUTOTUNE_STORAGE", None)
    run = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "study", "start", "--space", str(space),
         "--storage", f"sqlite:///{work / 'study.db'}", "--trials", "1", *extra],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in work.iterdir()) == [space.name]  # nothing written
    assert not (work.parent / "empty-hub-cache").exists()
    return run


def _quickstart_lines() -> list[str]:
    text = QUICKSTART.read_text(encoding="utf-8")
    command = next(line for line in text.splitlines() if line.startswith("  command:"))
    return text.replace(command, f"  command: {json.dumps(NO_ENGINE)}").splitlines(keepends=True)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def test_space_file_that_is_not_utf8(work: Path) -> None:
    lines = _quickstart_lines()
    lines.insert(3, "# réglages du café\n")  # saved by an editor in Latin-1
    space = work / "latin1.yaml"
    space.write_bytes("".join(lines).encode("latin-1"))
    err = _start(work, space).stderr
    assert f"{space}: invalid search space" in err
    assert "line 4, column 4" in err and "not UTF-8 text" in err


def test_key_written_twice(work: Path) -> None:
    lines = _quickstart_lines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  max_model_len:"))
    lines.insert(at + 1, "  max_model_len: 4096\n")
    space = work / "twice.yaml"
    space.write_text("".join(lines), encoding="utf-8")
    err = _start(work, space).stderr
    assert str(space) in err
    assert f"model.max_model_len (line {at + 2})" in err
    assert f"written twice, on lines {at + 1} and {at + 2}" in err


def _missing_model(work: Path, model: str) -> tuple[Path, int]:
    data = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    data["model"].update(path=model, build_demo=False)
    data["engine"]["command"] = NO_ENGINE
    space = work / "missing-model.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    line = next(i for i, text in enumerate(space.read_text().splitlines(), 1)
                if text.strip().startswith("path:"))
    return space, line


def test_model_path_that_does_not_exist(work: Path) -> None:
    space, line = _missing_model(work, "/nonexistent/models/llama-typo")
    err = _start(work, space).stderr
    assert str(space) in err
    assert f"model.path (line {line})" in err
    assert "'/nonexistent/models/llama-typo' does not exist" in err


def test_offline_hub_id_that_is_not_cached(work: Path) -> None:
    # The quickstart's engine runs with HF_HUB_OFFLINE=1: a bare name is a hub id it can't fetch.
    space, line = _missing_model(work, "demo-lama")
    err = _start(work, space).stderr
    assert f"model.path (line {line})" in err and "HF_HUB_OFFLINE" in err


def _space(tmp_path: Path, **model: object) -> tuple[Space, Path]:
    data = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    data["model"].update(model)
    data["engine"]["env"] = {}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_space(path), path


def test_model_path_check_accepts_what_an_engine_can_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for model in ({"path": str(tmp_path / "to-build"), "build_demo": True},  # built on first use
                  {"path": str(tmp_path), "build_demo": False},
                  {"path": "meta-llama/Llama-3.1-8B-Instruct", "build_demo": False}):
        check_model_path(*_space(tmp_path, **model))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpaceError, match="HF_HUB_OFFLINE"):
        check_model_path(*_space(tmp_path, path="meta-llama/Llama-3.1-8B-Instruct",
                                 build_demo=False))


def test_dataset_file_that_does_not_exist(work: Path) -> None:
    # A typo in a dataset's name: every trial would start an engine, then fail on the file.
    data = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    data["workload"]["prompts"] = {"kind": "chat", "path": "workloads/chat-sampel.jsonl"}
    data["engine"]["command"] = NO_ENGINE
    space = work / "missing-dataset.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    line = next(i for i, text in enumerate(space.read_text().splitlines(), 1)
                if "chat-sampel.jsonl" in text)
    err = " ".join(_start(work, space).stderr.split())
    assert f"workload.prompts.path (line {line})" in err
    assert f"'workloads/chat-sampel.jsonl' does not exist (relative paths are read from {work})" \
        in err


def test_an_slo_that_is_not_a_number(work: Path) -> None:
    # `.nan` passed (nan <= 0 is false) and every trial then "met" the SLO.
    lines = _quickstart_lines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  ttft_p95_ms:"))
    lines[at] = "  ttft_p95_ms: .nan\n"
    space = work / "nan-slo.yaml"
    space.write_text("".join(lines), encoding="utf-8")
    err = _start(work, space).stderr
    assert str(space) in err
    assert f"slos.ttft_p95_ms (line {at + 1}): must be a finite number, got nan" in err


@pytest.mark.parametrize("prompts,field,message", [
    ({"kind": "random", "input_tokens": 64, "output_tokens": 100000}, "output_tokens",
     "input_tokens + output_tokens (64 + 100000) exceed model.max_model_len 512"),
    ({"kind": "shared_prefix", "num_prefixes": 2, "prefix_tokens": 600, "suffix_tokens": 16,
      "output_tokens": 8}, "prefix_tokens",
     "prefix_tokens + suffix_tokens + output_tokens (600 + 16 + 8) exceed model.max_model_len "
     "512"),
    ({"kind": "chat", "path": "../chat.jsonl", "output_tokens": 512}, "output_tokens",
     "output_tokens 512 leaves no room for a prompt in model.max_model_len 512"),
])
def test_synthetic_prompts_longer_than_the_context(
    work: Path, prompts: dict[str, object], field: str, message: str
) -> None:
    # Every request would be refused by the engine: found by running it, each started an engine.
    data = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    data["workload"]["prompts"] = prompts
    data["engine"]["command"] = NO_ENGINE
    space = work / "too-long.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (work.parent / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    text = space.read_text().splitlines()
    prompts_line = next(i for i, line in enumerate(text, 1) if line.strip() == "prompts:")
    line = next(i for i, line in enumerate(text, 1)
                if i > prompts_line and line.strip().startswith(f"{field}:"))
    err = " ".join(_start(work, space).stderr.split())
    assert f"workload.prompts.{field} (line {line}): {message}" in err, err


# A dataset line that is not JSON, a trace without its columns: (prompts, file, text, problem).
BAD_DATA_FILES = [
    ({"kind": "chat"}, "chat.jsonl",
     '{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [\n', ":2: not JSON"),
    ({"kind": "trace", "format": "azure"}, "azure.csv",
     "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", ":2: GeneratedTokens: missing"),
]


@pytest.mark.parametrize("prompts,name,text,problem", BAD_DATA_FILES)
def test_data_files_are_read_whole_before_any_engine(
    tmp_path: Path, prompts: dict[str, object], name: str, text: str, problem: str
) -> None:
    # A dataset line that is not JSON, a trace without its columns: found by running it, each
    # started an engine and failed a trial. Read as a run reads them (no engine needed).
    from autotune.bench.datasets import data_problem
    from autotune.space.model import check_data_files

    data = tmp_path / name
    data.write_text(text)
    path = _space(tmp_path)[1]
    raw = yaml.safe_load(path.read_text())
    raw["workload"]["prompts"] = {**prompts, "path": str(data)}
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    space = load_space(path)
    check_data_files(space, path)  # the files are there
    with pytest.raises(SpaceError) as raised:
        check_data_files(space, path, read=data_problem)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1)
                if str(data) in text)
    ((loc, message),) = raised.value.problems
    assert loc == f"workload.prompts.path (line {line})"
    assert message.startswith(f"{data}{problem}"), message


@pytest.mark.parametrize("prompts,name,text,problem", BAD_DATA_FILES)
def test_study_start_reads_the_data_files_whole_and_exits_2(
    work: Path, prompts: dict[str, object], name: str, text: str, problem: str
) -> None:
    # The same two files through `autotune study start`: refused before any engine, exit 2,
    # file and line named, nothing written.
    data = work.parent / name
    data.write_text(text)
    raw = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    raw["workload"]["prompts"] = {**prompts, "path": str(data)}
    raw["engine"]["command"] = NO_ENGINE
    space = work / "bad-data.yaml"
    space.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    err = " ".join(_start(work, space).stderr.split())
    assert f"{data}{problem}" in err, err
