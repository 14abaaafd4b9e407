"""The engine parameters autotune knows how to sweep, and the vLLM flags they map to.

A parameter that is not listed here can still be *fixed* in a space file (``engine.flags``);
only listed parameters can be *swept*, because autotune must know their type, their vLLM default
(the enqueued default trial) and the rules that make some combinations invalid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ValueKind = Literal["int", "float", "bool", "str"]


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    kind: ValueKind
    # Nominal vLLM default, recorded as the default trial's value (the default trial itself
    # passes no flag for it, so the engine really runs on its own defaults).
    default: Any
    # "flag": --name-with-dashes VALUE; "bool": --x / --no-x; "special": handled by the builder.
    style: Literal["flag", "bool", "special"] = "flag"
    doc: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


KNOWN_PARAMETERS: dict[str, ParameterInfo] = {
    p.name: p
    for p in [
        ParameterInfo(
            "quantization",
            "str",
            "none",
            "special",
            "name of a model.quantization_variants entry ('none' = the base checkpoint)",
        ),
        ParameterInfo("gpu_memory_utilization", "float", 0.9, doc="fraction of device memory"),
        ParameterInfo("max_num_batched_tokens", "int", 2048, doc="token budget per step"),
        ParameterInfo("max_num_seqs", "int", 256, doc="sequences per step"),
        ParameterInfo("enable_chunked_prefill", "bool", True, "bool"),
        ParameterInfo("enable_prefix_caching", "bool", True, "bool"),
        ParameterInfo("kv_cache_dtype", "str", "auto"),
        ParameterInfo("tensor_parallel_size", "int", 1),
        ParameterInfo("pipeline_parallel_size", "int", 1),
        ParameterInfo("block_size", "int", 16),
        ParameterInfo("dtype", "str", "auto"),
        ParameterInfo(
            "speculative_method",
            "str",
            "none",
            "special",
            "name of a model.speculative_variants entry ('none' = no speculative decoding)",
        ),
        ParameterInfo(
            "num_speculative_tokens",
            "int",
            3,
            "special",
            "draft length; sample it only `when` a speculative method is chosen",
        ),
    ]
}

NONE_CHOICE = "none"
