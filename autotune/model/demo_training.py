"""The training recipe ("digit-tasks-1") that produced the demo model's shipped weights.

:mod:`autotune.model.demo` installs the files in ``autotune/demo_files/`` (checked by hash); this
module is how they were made, and how to remake them after a change to the tasks or the model:
``python -m autotune.model.demo_training DIR`` trains into DIR and prints the files' SHA-256, which
go into ``demo_model.SHIPPED_SHA256`` once the files are copied into ``demo_files/``.

The tokenizer is a byte-level BPE (vocab 2048) trained on the Python standard library's own
sources (so it depends on the Python version: one reason the files are shipped), with every
digit its own token. The model is a 2-layer Llama (hidden 128), trained in float32 for a fixed
number of seeded steps on one thread (a fixed reduction order), then saved in float16 (bf16
kernels can die with SIGILL on some CPU hosts). Training takes about 6 CPU-minutes; on this
class of host it reproduces the shipped weights bit for bit (``benchmarks/newcomer.py --phase
model`` checks). Needs ``tokenizers``, ``transformers`` and ``torch`` (the ``cpu`` or ``demo``
extra).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotune.model.demo import (
    CHAT_TEMPLATE,
    MAX_POSITIONS,
    RECIPE_FILE,
    TRAINING_RECORD,
    eval_rows,
    is_held_out,
    task_example,
    validation_rows,
)

TRAINING_RECIPE = "digit-tasks-1"
DEMO_VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]
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


def _training_files(limit: int = 400) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in stdlib.glob("*.py"))
    return files[:limit]


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


def train_demo_model(directory: str | os.PathLike[str], seed: int = 0) -> Path:
    """Train the demo model into ``directory`` (created); return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
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
    _add_chat_template(directory / "tokenizer_config.json")
    (directory / TRAINING_RECORD).write_text(
        json.dumps(
            {
                "recipe": TRAINING_RECIPE,
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
    return directory


def _add_chat_template(tokenizer_config: Path) -> None:
    """The chat template inside tokenizer_config.json, as the shipped files carry it (newer
    transformers would write a chat_template.jinja of its own)."""
    config = json.loads(tokenizer_config.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    tokenizer_config.write_text(json.dumps(config, indent=2) + "\n")


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


def file_hashes(directory: str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of every file of a demo model (its build and training records aside)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(directory).iterdir())
        if path.is_file() and path.name not in (TRAINING_RECORD, RECIPE_FILE)
    }


if __name__ == "__main__":
    import sys

    trained = train_demo_model(sys.argv[1] if len(sys.argv) > 1 else "demo-llama-trained")
    print(json.dumps(file_hashes(trained), indent=4))
