"""Build the CPU quickstart's demo model offline: a tiny Llama trained on digit-string tasks.

No model can be downloaded on an offline machine, so autotune makes one. A random-weight model
has no accuracy to lose, so this one is *trained*, deterministically, on three small synthetic
tasks whose answers can be checked exactly::

    copy 48213 =      →  48213
    reverse 48213 =   →  31284
    add 57+68 =       →  125

The tokenizer is a byte-level BPE (vocab 2048) trained on the Python standard library's own
sources, with every digit its own token. The model is a 2-layer Llama (hidden 128), trained in
float32 for a fixed number of seeded steps, then saved in float16 (bf16 kernels can die with
SIGILL on some CPU hosts). Prompts whose CRC-32 falls in the held-out split are never trained
on; ``evals/demo-tasks.jsonl`` (from :func:`eval_rows`) is drawn only from that split.

Building takes about 6 minutes of CPU time (training uses one thread: the same weights at
every build, and no stall when the cores are shared) and is cached at the target directory;
``autotune-demo.json`` there names the recipe version, so a changed recipe is rebuilt. Needs
``tokenizers``, ``transformers`` and ``torch`` (the ``cpu`` or ``demo`` extra); the controller
never imports this module unless a space file asks for ``model.build_demo``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import shutil
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Bump whenever anything below changes what gets built: cached builds of other recipes are
# rebuilt (the version is stored in RECIPE_FILE).
RECIPE_VERSION = "digit-tasks-1"
RECIPE_FILE = "autotune-demo.json"

DEMO_VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]
TASKS = ("copy", "reverse", "add")
MIN_DIGITS, MAX_DIGITS = 3, 8  # copy / reverse operand length
MAX_ADDEND = 99
HELD_OUT_BUCKETS = 8  # 1 prompt in 8 is held out from training
TRAIN_STEPS = 2000  # addition is learnt (suddenly) after ~1200 steps
BATCH_SIZE = 96
LEARNING_RATE = 3e-3
WARMUP_STEPS = 100
TRAIN_THREADS = 1  # the same weights at every build, and no stall on a busy host
# Guard for hosts whose float rounding sends training elsewhere: while the accuracy on held-out
# validation prompts (not the eval set) is below the target, train EXTRA_STEPS more.
TARGET_ACCURACY = 0.98
EXTRA_STEPS = 500
EXTRA_LEARNING_RATE = 1e-3
MAX_EXTENSIONS = 4
MAX_POSITIONS = 4096


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


def _training_files(limit: int = 400) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in stdlib.glob("*.py"))
    return files[:limit]


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


def build_demo_model(target: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the demo model at ``target`` unless it is already there; return the directory."""
    target = Path(os.path.expanduser(str(target)))
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        if is_built(target):  # another process built it while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the model is for every user
        try:
            _build_into(staging, seed)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)  # appears complete or not at all
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_tokenizer() -> Any:
    """The byte-level BPE tokenizer (a ``PreTrainedTokenizerFast``); digits are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=DEMO_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(_training_files(), trainer)
    bos = tokenizer.token_to_id("<s>")
    # Every text prompt starts with <s>, in training and when vLLM tokenizes it.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
    )


def _encode_example(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of ``<s> prompt answer </s>`` and how many of them are the prompt."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids + [tokenizer.eos_token_id], len(prompt_ids)


def _training_batch(tokenizer: Any, rng: random.Random, size: int) -> tuple[Any, Any]:
    import torch

    rows: list[tuple[list[int], int]] = []
    while len(rows) < size:
        example = task_example(rng)
        if not is_held_out(example["prompt"]):
            rows.append(_encode_example(tokenizer, example["prompt"], example["answer"]))
    width = max(len(ids) for ids, _ in rows)
    inputs = torch.full((size, width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((size, width), -100, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        inputs[i, : len(ids)] = torch.tensor(ids)
        # Loss on the answer and </s> only: the prompt is random digits, not something to learn.
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return inputs, labels


def greedy_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 12
) -> list[str]:
    """Greedy completions (decoded, stripped) of ``prompts`` with the in-process model."""
    import torch

    out: dict[int, str] = {}
    by_length: dict[int, list[int]] = {}
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    with torch.no_grad():
        for indices in by_length.values():
            seqs = torch.tensor([encoded[i] for i in indices])
            done = torch.zeros(len(indices), dtype=torch.bool)
            generated: list[list[int]] = [[] for _ in indices]
            for _ in range(max_new_tokens):
                logits = model(input_ids=seqs).logits[:, -1, :]
                next_ids = logits.float().argmax(dim=-1)
                for row, token in enumerate(next_ids.tolist()):
                    if not done[row]:
                        if token == tokenizer.eos_token_id:
                            done[row] = True
                        else:
                            generated[row].append(token)
                if bool(done.all()):
                    break
                seqs = torch.cat([seqs, next_ids[:, None]], dim=1)
            for row, i in enumerate(indices):
                out[i] = tokenizer.decode(generated[row]).strip()
    return [out[i] for i in range(len(prompts))]


def _build_into(directory: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)  # a fixed reduction order: the same weights each build
    try:
        torch.manual_seed(seed)
        tokenizer = make_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(config)
        rng = random.Random(seed)
        _train(model, tokenizer, rng, TRAIN_STEPS, LEARNING_RATE, WARMUP_STEPS)
        validation = validation_rows()
        extensions = 0
        while extensions < MAX_EXTENSIONS and _accuracy(model, tokenizer, validation) < (
            TARGET_ACCURACY
        ):
            _train(model, tokenizer, rng, EXTRA_STEPS, EXTRA_LEARNING_RATE, 0)
            extensions += 1
        model.eval()
        # Score the weights as saved (rounded to float16), computing in float32: CPU float16
        # matmuls are slow, and vLLM's own float16 numbers are measured by the quality probe.
        model = model.to(torch.float16).to(torch.float32)
        rows = eval_rows()
        eval_accuracy = _accuracy(model, tokenizer, rows)
    finally:
        torch.set_num_threads(threads)
    model = model.to(torch.float16)
    model.config.dtype = "float16"
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    (directory / RECIPE_FILE).write_text(
        json.dumps(
            {
                "recipe": RECIPE_VERSION,
                "seed": seed,
                "train_steps": TRAIN_STEPS + extensions * EXTRA_STEPS,
                "extensions": extensions,
                "eval_rows": len(rows),
                "eval_accuracy": eval_accuracy,
                "build_s": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
        + "\n"
    )


def _accuracy(model: Any, tokenizer: Any, rows: Sequence[dict[str, str]]) -> float:
    model.eval()
    answers = greedy_answers(model, tokenizer, [r["prompt"] for r in rows])
    return sum(a == r["answer"] for a, r in zip(answers, rows, strict=True)) / len(rows)


def _train(
    model: Any, tokenizer: Any, rng: random.Random, steps: int, peak_lr: float, warmup: int
) -> None:
    """``steps`` AdamW steps: linear warm-up to ``peak_lr``, then cosine down to 5% of it."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=peak_lr, betas=(0.9, 0.98), weight_decay=0.01
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    for _ in range(steps):
        inputs, labels = _training_batch(tokenizer, rng, BATCH_SIZE)
        # The LM head only where there is a label: a third of the cost of full-sequence logits.
        hidden = model.model(input_ids=inputs).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        scored = targets != -100
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[scored]), targets[scored])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()


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
