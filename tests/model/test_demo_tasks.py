"""The demo model's tasks, its shipped files and held-out eval set (no engine, no training)."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest

from autotune.model import demo as demo_model
from autotune.model import demo_training
from autotune.quality.grading import grade

ROOT = Path(__file__).resolve().parents[2]
EVAL_SET = ROOT / "evals" / "demo-tasks.jsonl"


def _shipped() -> list[dict]:
    return [json.loads(line) for line in EVAL_SET.read_text().splitlines() if line.strip()]


def test_shipped_eval_set_is_the_generated_one() -> None:
    # Regenerate with: python -m autotune.model.demo --write-eval evals/demo-tasks.jsonl
    assert _shipped() == demo_model.eval_rows()


def test_eval_set_is_held_out_and_correct() -> None:
    rows = _shipped()
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert {r["task"] for r in rows} == set(demo_model.TASKS)
    for row in rows:
        assert demo_model.is_held_out(row["prompt"])
        task, operand, _ = row["prompt"].split(" ")
        if task == "add":
            a, b = operand.split("+")
            expected = str(int(a) + int(b))
        else:
            expected = operand if task == "copy" else operand[::-1]
        assert row["answer"] == expected
        assert grade(expected, row["answer"], "exact")


def test_training_never_sees_a_held_out_prompt() -> None:
    rng = random.Random(0)
    held_out = {r["prompt"] for r in _shipped()}
    for _ in range(20000):
        example = demo_model.task_example(rng)
        if not demo_model.is_held_out(example["prompt"]):
            assert example["prompt"] not in held_out


def test_a_build_of_another_recipe_is_not_reused(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (tmp_path / name).write_text("{}")
    assert not demo_model.is_built(tmp_path)  # an old random-weight build: no recipe file
    (tmp_path / demo_model.RECIPE_FILE).write_text(json.dumps({"recipe": "older"}))
    assert not demo_model.is_built(tmp_path)
    (tmp_path / demo_model.RECIPE_FILE).write_text(
        json.dumps({"recipe": demo_model.RECIPE_VERSION})
    )
    assert demo_model.is_built(tmp_path)


def test_validation_prompts_are_held_out_and_not_the_eval_set() -> None:
    shipped = {r["prompt"] for r in _shipped()}
    rows = demo_model.validation_rows()
    assert len(rows) == 150
    assert all(demo_model.is_held_out(r["prompt"]) for r in rows)
    assert not shipped & {r["prompt"] for r in rows}


def test_training_end_to_end_with_a_few_steps(tmp_path: Path, monkeypatch) -> None:
    # The real recipe trains for minutes (it made the shipped files); this runs every step of
    # the training with a handful of steps, including one extension.
    monkeypatch.setattr(demo_training, "TRAIN_STEPS", 3)
    monkeypatch.setattr(demo_training, "WARMUP_STEPS", 1)
    monkeypatch.setattr(demo_training, "EXTRA_STEPS", 2)
    monkeypatch.setattr(demo_training, "MAX_EXTENSIONS", 1)
    monkeypatch.setattr(demo_training, "eval_rows", lambda count=6, seed=1234: _shipped()[:count])
    target = tmp_path / "demo"
    assert demo_training.train_demo_model(target) == target
    recipe = json.loads((target / demo_model.TRAINING_RECORD).read_text())
    assert recipe["recipe"] == demo_training.TRAINING_RECIPE
    assert set(demo_training.file_hashes(target)) == set(demo_model.SHIPPED_SHA256)
    assert recipe["extensions"] == 1 and recipe["train_steps"] == 5
    assert 0.0 <= recipe["eval_accuracy"] <= 1.0
    config = json.loads((target / "config.json").read_text())
    assert config["vocab_size"] == 2048 and config["max_position_embeddings"] >= 512
    assert config["dtype"] == "float16"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target)
    ids = tokenizer("reverse 48213 =")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.convert_ids_to_tokens(ids)[-6:-1] == ["4", "8", "2", "1", "3"]
    assert tokenizer.decode(tokenizer(" 31284", add_special_tokens=False)["input_ids"]) == " 31284"


def test_build_installs_the_shipped_model_in_well_under_a_second(tmp_path: Path) -> None:
    # Issue #14: the build trained for ~6 CPU-minutes on a newcomer's first run. It now copies
    # the shipped files (the digit-tasks-1 training's output) and checks them by hash.
    targets = [tmp_path / "a" / "demo", tmp_path / "b" / "demo"]
    for target in targets:
        started = time.monotonic()
        assert demo_model.build_demo_model(target) == target
        assert time.monotonic() - started < 2.0
        assert demo_model.is_built(target)
    hashes = [demo_training.file_hashes(target) for target in targets]
    assert hashes[0] == hashes[1] == demo_model.SHIPPED_SHA256  # the same bits every build
    recipe = demo_model.recipe(targets[0])
    assert recipe["recipe"] == demo_model.RECIPE_VERSION
    assert recipe["trained"]["recipe"] == demo_training.TRAINING_RECIPE
    assert recipe["eval_accuracy"] == 1.0
    config = json.loads((targets[0] / "config.json").read_text())
    assert config["vocab_size"] == 2048 and config["dtype"] == "float16"
    assert (targets[0] / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_an_old_build_is_replaced_by_the_shipped_files(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    target.mkdir()
    (target / "model.safetensors").write_text("trained elsewhere")
    (target / demo_model.RECIPE_FILE).write_text(json.dumps({"recipe": "digit-tasks-1"}))
    demo_model.build_demo_model(target)
    assert demo_training.file_hashes(target) == demo_model.SHIPPED_SHA256


def test_a_damaged_shipped_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    original, shipped = demo_model.SHIPPED, tmp_path / "shipped"
    shutil.copytree(original, shipped)
    # What a checkout without Git LFS would hold instead of the weights.
    (shipped / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    monkeypatch.setattr(demo_model, "SHIPPED", shipped)
    with pytest.raises(demo_model.DemoModelError, match="git checkout -- autotune/demo_files"):
        demo_model.build_demo_model(tmp_path / "demo")
    assert not (tmp_path / "demo").exists()
    shutil.copy(original / "model.safetensors", shipped / "model.safetensors")
    (shipped / "tokenizer.json").unlink()
    with pytest.raises(demo_model.DemoModelError, match="tokenizer.json is missing"):
        demo_model.build_demo_model(tmp_path / "demo")


def test_the_shipped_model_answers_its_held_out_tasks(tmp_path: Path) -> None:
    # Greedy, in-process (transformers, float32 compute on the float16 weights): what the
    # engine tests rely on, without an engine. The training measured 300/300.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = demo_model.build_demo_model(tmp_path / "demo")
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    rows = _shipped()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only wait on each other when busy
    try:
        answers = demo_training.greedy_answers(model, tokenizer, [r["prompt"] for r in rows])
    finally:
        torch.set_num_threads(threads)
    pairs = list(zip(answers, rows, strict=True))
    for task in demo_model.TASKS:
        scored = [a == r["answer"] for a, r in pairs if r["task"] == task]
        assert sum(scored) / len(scored) >= 0.98, task


def test_build_demo_model_command_reports_a_damaged_file(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from autotune import cli

    shipped = tmp_path / "shipped"
    shutil.copytree(demo_model.SHIPPED, shipped)
    (shipped / "config.json").write_text("{}")
    monkeypatch.setattr(demo_model, "SHIPPED", shipped)
    result = CliRunner().invoke(cli.app, ["build-demo-model", str(tmp_path / "demo")])
    assert result.exit_code == 1
    assert "config.json has SHA-256" in result.output and "Traceback" not in result.output
