"""The CPU quickstart's demo model: a tiny Llama that answers digit-string tasks exactly.

No model can be downloaded on an offline machine, so autotune ships one. A random-weight model
has no accuracy to lose, so this one was *trained* (:mod:`autotune.model.demo_training`, about 6
CPU-minutes) on three small synthetic tasks whose answers can be checked exactly::

    copy 48213 =      →  48213
    reverse 48213 =   →  31284
    add 57+68 =       →  125

Its files (a 2-layer Llama, hidden 128, vocab 2048, float16: 1.4 MB) are in
``autotune/demo_files/``; :func:`build_demo_model` copies them to the target directory and
checks every file's SHA-256, so every machine serves the same bits, in well under a second and
without torch. Prompts whose CRC-32 falls in the held-out split were never trained on;
``evals/demo-tasks.jsonl`` (from :func:`eval_rows`) is drawn only from that split.
``autotune-demo.json`` in the target names the recipe version, so a changed recipe replaces
an old build; the controller never imports this module unless a space file asks for
``model.build_demo``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError

# Bump whenever the shipped files change: cached builds of other recipes are replaced (the
# version is stored in RECIPE_FILE). "+shipped": the digit-tasks-1 training's files, copied.
# "+chat": with a chat template in tokenizer_config.json.
RECIPE_VERSION = "digit-tasks-1+shipped+chat"
RECIPE_FILE = "autotune-demo.json"
SHIPPED = Path(__file__).resolve().parents[1] / "demo_files"
TRAINING_RECORD = "training.json"  # how the shipped weights were trained (steps, accuracy)
# The files a build copies and their SHA-256 (``python -m autotune.model.demo_training`` prints
# them for a retrained model).
SHIPPED_SHA256 = {
    "config.json": "9d4f970c079f6384d6ee56942388f330a379f7062b031afbcb3cbe38cf161d42",
    "generation_config.json": "314c8926625bdca49c577a67d56c671f955fa96e24d1bb009fd0752b277bfdb2",
    "model.safetensors": "b7db3634ae2f71b7175b22643cb1ddd10d4c246eca4980a41bb4b6eff770c4b1",
    "tokenizer.json": "62b34ae3eb2f916de756d8725e4043c2ffa38055d38efa52a528c6925981c0ed",
    "tokenizer_config.json": "04c2f437d99810baa459acfdacbaaff46c19181fc488c77e8406dcec8da82960",
}

# The chat template in the shipped tokenizer_config.json (chat workloads go to
# /v1/chat/completions, which needs one): each message as "<|role|>\ncontent</s>\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

TASKS = ("copy", "reverse", "add")
MIN_DIGITS, MAX_DIGITS = 3, 8  # copy / reverse operand length
MAX_ADDEND = 99
HELD_OUT_BUCKETS = 8  # 1 prompt in 8 is held out from training
MAX_POSITIONS = 4096


class DemoModelError(AutotuneError):
    """The shipped demo model files are missing or not the ones this version ships."""


def task_example(rng: random.Random, task: str | None = None) -> dict[str, str]:
    """One ``{task, prompt, answer}`` example (the answer without the leading space)."""
    task = task or rng.choice(TASKS)
    if task == "add":
        a, b = rng.randint(0, MAX_ADDEND), rng.randint(0, MAX_ADDEND)
        return {"task": task, "prompt": f"add {a}+{b} =", "answer": str(a + b)}
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(MIN_DIGITS, MAX_DIGITS)))
    answer = digits if task == "copy" else digits[::-1]
    return {"task": task, "prompt": f"{task} {digits} =", "answer": answer}


def is_held_out(prompt: str) -> bool:
    """Whether ``prompt`` belongs to the held-out split (never trained on)."""
    return zlib.crc32(prompt.encode()) % HELD_OUT_BUCKETS == 0


def eval_rows(count: int = 300, seed: int = 1234) -> list[dict[str, str]]:
    """The held-out eval set: ``count`` distinct prompts, tasks in turn, JSONL-ready rows."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < count:
        row = task_example(rng, TASKS[len(rows) % len(TASKS)])
        if is_held_out(row["prompt"]) and row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append({"prompt": row["prompt"], "answer": row["answer"], "task": row["task"]})
    return rows


def validation_rows(count: int = 150) -> list[dict[str, str]]:
    """Held-out prompts for the build's own check: never trained on, and not in the eval set."""
    shipped = {row["prompt"] for row in eval_rows()}
    rows = [row for row in eval_rows(count + 60, seed=4321) if row["prompt"] not in shipped]
    return rows[:count]


def recipe(target: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recipe record of a built model (version, eval accuracy), or None."""
    try:
        return json.loads((Path(target) / RECIPE_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_built(target: str | os.PathLike[str]) -> bool:
    path = Path(os.path.expanduser(str(target)))
    found = recipe(path)
    return (
        (path / "config.json").is_file()
        and (path / "tokenizer.json").is_file()
        and any(path.glob("*.safetensors"))
        and found is not None
        and found.get("recipe") == RECIPE_VERSION
    )


def build_demo_model(target: str | os.PathLike[str]) -> Path:
    """Install the demo model at ``target`` unless it is already there; return the directory.

    Raises :class:`DemoModelError` when a shipped file is missing or its hash is not the
    expected one (a damaged checkout: restore ``autotune/demo_files/`` from git)."""
    target = Path(os.path.expanduser(str(target)))
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        if is_built(target):  # another process built it while we waited
            return target
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the model is for every user
        try:
            for name, expected in SHIPPED_SHA256.items():
                _copy_checked(SHIPPED / name, staging / name, expected)
            trained = json.loads((SHIPPED / TRAINING_RECORD).read_text())
            record = {
                "recipe": RECIPE_VERSION,
                "sha256": SHIPPED_SHA256,
                "trained": trained,
                "eval_accuracy": trained.get("eval_accuracy"),
                "build_s": round(time.monotonic() - started, 3),
            }
            (staging / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)  # appears complete or not at all
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _copy_checked(source: Path, destination: Path, expected: str) -> None:
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise DemoModelError(
            f"demo model file {source} is missing ({exc.strerror}): restore autotune/demo_files/"
            " from git (git checkout -- autotune/demo_files)"
        ) from None
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise DemoModelError(
            f"demo model file {source} has SHA-256 {found[:16]}…, not {expected[:16]}…: a"
            " damaged checkout or a Git LFS pointer; restore it with"
            " git checkout -- autotune/demo_files"
        )
    destination.write_bytes(data)
    destination.chmod(0o644)


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_eval_set(path: str | os.PathLike[str]) -> None:
    """Write :func:`eval_rows` as JSONL (how ``evals/demo-tasks.jsonl`` was made)."""
    Path(path).write_text("".join(json.dumps(row) + "\n" for row in eval_rows()))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write-eval"]:
        write_eval_set(sys.argv[2])
    else:
        target = sys.argv[1] if len(sys.argv) > 1 else "~/.cache/autotune/demo-llama"
        print(build_demo_model(target))
