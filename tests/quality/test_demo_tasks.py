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


def test_validation_prompts_are_held_out_and_not_the_eval_set() -> None:
    shipped = {r["prompt"] for r in _shipped()}
    rows = demo_model.validation_rows()
    assert len(rows) == 150
    assert all(demo_model.is_held_out(r["prompt"]) for r in rows)
    assert not shipped & {r["prompt"] for r in rows}


def test_builder_end_to_end_with_a_few_steps(tmp_path: Path, monkeypatch) -> None:
    # The real recipe trains for minutes (the `demo_model` fixture builds it once); this runs
    # every step of the builder with a handful of training steps, including one extension.
    monkeypatch.setattr(demo_model, "TRAIN_STEPS", 3)
    monkeypatch.setattr(demo_model, "WARMUP_STEPS", 1)
    monkeypatch.setattr(demo_model, "EXTRA_STEPS", 2)
    monkeypatch.setattr(demo_model, "MAX_EXTENSIONS", 1)
    monkeypatch.setattr(demo_model, "eval_rows", lambda count=6, seed=1234: _shipped()[:count])
    target = tmp_path / "demo"
    assert demo_model.build_demo_model(target) == target
    assert demo_model.is_built(target)
    recipe = demo_model.recipe(target)
    assert recipe["recipe"] == demo_model.RECIPE_VERSION
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
