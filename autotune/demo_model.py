"""Build the CPU quickstart's demo model offline: a tiny Llama with a locally trained tokenizer.

No model can be downloaded on an offline machine, so autotune makes one: a byte-level BPE
tokenizer trained on the Python standard library's own source files and a 2-layer Llama with
seeded random weights, saved in float16 (bf16 kernels can die with SIGILL on some CPU hosts).
Building takes a few seconds and is cached at the target directory. Needs ``tokenizers``,
``transformers`` and ``torch`` (the ``cpu`` or ``demo`` extra); the controller never imports
this module unless a space file asks for ``model.build_demo``.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

DEMO_VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]


def _training_files(limit: int = 400) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in stdlib.glob("*.py"))
    return files[:limit]


def is_built(target: str | os.PathLike[str]) -> bool:
    path = Path(target)
    return (path / "config.json").is_file() and (path / "tokenizer.json").is_file() and any(
        path.glob("*.safetensors")
    )


def build_demo_model(target: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the demo model at ``target`` unless it is already there; return the directory."""
    target = Path(os.path.expanduser(str(target)))
    if is_built(target):
        return target
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=DEMO_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(_training_files(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=4096,
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float16",
    )
    model = LlamaForCausalLM(config).to(torch.float16)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        fast.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # appears complete or not at all
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


if __name__ == "__main__":
    import sys

    print(build_demo_model(sys.argv[1] if len(sys.argv) > 1 else "~/.cache/autotune/demo-llama"))
