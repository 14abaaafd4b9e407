from __future__ import annotations

from autotune.space.rules import RuleContext, check


def _ctx(devices: int = 1, heads: int | None = 4, **values) -> RuleContext:
    return RuleContext(
        values=values,
        max_model_len=512,
        devices_present=devices,
        model_config={"num_attention_heads": heads} if heads else {},
    )


def test_chunked_prefill_off_needs_budget_of_max_model_len() -> None:
    reason = check(_ctx(enable_chunked_prefill=False, max_num_batched_tokens=256))
    assert reason and "max_model_len (512)" in reason
    assert check(_ctx(enable_chunked_prefill=True, max_num_batched_tokens=256)) is None
    assert check(_ctx(enable_chunked_prefill=False, max_num_batched_tokens=512)) is None


def test_budget_below_max_num_seqs() -> None:
    reason = check(_ctx(max_num_batched_tokens=64, max_num_seqs=128))
    assert reason and "max_num_seqs (128)" in reason
    assert check(_ctx(max_num_batched_tokens=128, max_num_seqs=128)) is None


def test_tp_larger_than_devices() -> None:
    reason = check(_ctx(devices=2, tensor_parallel_size=4))
    assert reason and "2 device(s)" in reason
    assert check(_ctx(devices=4, tensor_parallel_size=4)) is None


def test_tp_must_divide_heads() -> None:
    reason = check(_ctx(devices=8, heads=6, tensor_parallel_size=4))
    assert reason and "num_attention_heads (6)" in reason
    assert check(_ctx(devices=8, heads=8, tensor_parallel_size=4)) is None
