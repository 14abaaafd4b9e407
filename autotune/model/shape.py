"""A model's shape for the memory fit: what its config.json says about layers, heads and widths.

``model_shape`` reads a config.json's fields (``text_config`` for multimodal models) into a
``ModelShape``; ``memory_fit.estimate`` does the arithmetic on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# A quantized checkpoint or method we do not know counts as 4-bit: leaning towards "fits".
UNKNOWN_QUANT_BITS = 4
NO_GROUPS = 1 << 20  # a "group size" for per-channel / per-tensor scales

DTYPE_BYTES = {
    "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "fp8_ds_mla": 1, "int8": 1,
}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a config.json (``text_config`` for multimodal models)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    dtype_bytes: int
    experts: int = 0  # routed experts of an MoE layer (0: dense)
    expert_intermediate: int = 0
    experts_per_token: int = 0
    shared_intermediate: int = 0
    dense_layers: int = 0  # leading dense layers of an MoE model (DeepSeek first_k_dense)
    mla_kv_dim: int = 0  # kv_lora_rank + qk_rope_head_dim (multi-head latent attention)
    weight_bits: float | None = None  # the checkpoint is quantized to this many bits
    group_size: int = 128

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape | None:
        """None when the config is missing fields or is not a plain full-attention decoder."""
        text = config.get("text_config") or config
        if not isinstance(text, Mapping):
            return None
        layer_types = text.get("layer_types")
        if layer_types and any(t != "full_attention" for t in layer_types):
            return None
        if text.get("sliding_window") and text.get("use_sliding_window", True):
            return None
        if any(key in text for key in ("mamba_d_state", "ssm_cfg", "linear_attn_config")):
            return None
        try:
            layers = int(text["num_hidden_layers"])
            hidden = int(text["hidden_size"])
            heads = int(text["num_attention_heads"])
            vocab = int(text["vocab_size"])
        except (KeyError, TypeError, ValueError):
            return None
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or hidden // heads)
        experts = int(
            text.get("num_local_experts") or text.get("num_experts")
            or text.get("n_routed_experts") or 0
        )
        intermediate = int(text.get("intermediate_size") or 4 * hidden)
        mla = int(text.get("kv_lora_rank") or 0)
        dtype = str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype")
                    or "bfloat16")
        quant = config.get("quantization_config") or text.get("quantization_config")
        bits: float | None = None
        group = 128
        if isinstance(quant, Mapping):
            method = str(quant.get("quant_method", "")).lower()
            bits = float(quant.get("bits") or quant.get("w_bit") or 0) or None
            group = int(quant.get("group_size") or quant.get("q_group_size") or 128)
            weights = _compressed_weights(quant)
            if bits is None and weights is not None:
                bits = float(weights["num_bits"])
                # per-channel or per-tensor scales (no groups): negligible beside the weights
                group = int(weights.get("group_size") or NO_GROUPS)
            if bits is None:
                bits = 8.0 if "fp8" in method or "int8" in method else float(UNKNOWN_QUANT_BITS)
        return cls(
            layers=layers, hidden=hidden, intermediate=intermediate, heads=heads,
            kv_heads=kv_heads, head_dim=head_dim, vocab=vocab,
            tied_embeddings=bool(text.get("tie_word_embeddings",
                                          config.get("tie_word_embeddings", False))),
            # vLLM's "auto" dtype downcasts a float32 checkpoint to 16 bits.
            dtype_bytes=min(dtype_size(dtype, default=2), 2),
            experts=experts,
            expert_intermediate=int(text.get("moe_intermediate_size") or intermediate)
            if experts else 0,
            experts_per_token=int(text.get("num_experts_per_tok") or 2) if experts else 0,
            shared_intermediate=int(text.get("shared_expert_intermediate_size") or 0)
            or int(text.get("n_shared_experts") or 0) * int(text.get("moe_intermediate_size")
                                                            or 0),
            dense_layers=int(text.get("first_k_dense_replace") or 0) if experts else 0,
            mla_kv_dim=mla + int(text.get("qk_rope_head_dim") or 0) if mla else 0,
            weight_bits=bits, group_size=group,
        )

    def layer_linear_params(self, moe: bool) -> int:
        """Parameters of one decoder layer's linear layers (attention + MLP or experts)."""
        attention = 2 * self.hidden * self.heads * self.head_dim
        attention += 2 * self.hidden * self.kv_heads * self.head_dim
        if not moe:
            return attention + 3 * self.hidden * self.intermediate
        experts = 3 * self.hidden * self.expert_intermediate * self.experts
        shared = 3 * self.hidden * self.shared_intermediate
        return attention + experts + shared + self.hidden * self.experts

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden


def _compressed_weights(quant: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A compressed-tensors checkpoint's weight scheme (``config_groups.*.weights``) when
    every group quantizes weights to the same number of bits; None otherwise."""
    groups = quant.get("config_groups")
    if not isinstance(groups, Mapping):
        return None
    schemes: list[Mapping[str, Any]] = []
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if not isinstance(weights, Mapping) or not isinstance(weights.get("num_bits"), int):
            return None
        schemes.append(weights)
    return schemes[0] if schemes and len({w["num_bits"] for w in schemes}) == 1 else None


def dtype_size(name: str, *, default: int) -> int:
    """Bytes per element of a vLLM/torch dtype name; ``default`` for "auto" or unknown."""
    name = name.lower().removeprefix("torch.")
    if name in ("auto", ""):
        return default
    return DTYPE_BYTES.get(name, default)


def model_shape(
    config: Mapping[str, Any], *, quantized_checkpoint: bool = False
) -> ModelShape | None:
    """The shape of a checkpoint; ``quantized_checkpoint`` marks a quantization variant whose
    own config.json is not here (the base model's is used, its weights counted as 4-bit)."""
    shape = ModelShape.from_config(config)
    if shape is not None and quantized_checkpoint and shape.weight_bits is None:
        shape = replace(shape, weight_bits=float(UNKNOWN_QUANT_BITS))
    return shape
