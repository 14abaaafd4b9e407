"""The demo model's tasks and its shipped, held-out eval set (no engine, no training)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from autotune import demo_model
from autotune.quality.grading import grade

ROOT = Path(__file__).resolve().parents[2]
EVAL_SET = ROOT / "evals" / "demo-tasks.jsonl"


def _shipped() -> list[dict]:
    return [json.loads(line) for line in EVAL_SET.read_text().splitlines() if line.strip()]


def test_shipped_eval_set_is_the_generated_one() -> None:
    # Regenerate with: python -m autotune.demo_model --write-eval evals/demo-tasks.jsonl
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
