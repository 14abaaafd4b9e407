"""``VllmBenchDriver``'s conversions, without an engine: the workload to ``vllm bench serve``'s
arguments (parsed by vLLM's own parser), its result to our metric names and records, and the
driver a space chooses."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.bench.driver import Endpoint, HttpLoadDriver
from autotune.bench.metrics import RequestRecord, summarize, to_vllm_bench_keys
from autotune.bench.prompt_set import WorkloadError
from autotune.bench.vllm_bench import (
    VllmBenchDriver,
    bench_argv,
    bench_result,
    from_vllm_bench_keys,
    load_driver,
    prompt_count,
    records_of,
    run_seed,
)
from autotune.space import WorkloadSpec
from autotune.space.model import Space
from autotune.testing.spaces import small_space

ENDPOINT = Endpoint("http://127.0.0.1:8000", "demo")


def _workload(**changes: object) -> WorkloadSpec:
    data: dict[str, object] = {
        "prompts": {"kind": "random", "input_tokens": 128, "output_tokens": 64,
                    "range_ratio": 0.5},
        "num_requests": 24, "warmup_requests": 4,
        "load": {"kind": "concurrency", "concurrency": 4}, "seed": 7}
    return WorkloadSpec.model_validate(data | changes)


def _parsed(argv: list[str]) -> object:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return parser.parse_args(argv)


def test_a_closed_loop_of_random_prompts() -> None:
    args = _parsed(bench_argv(ENDPOINT, "/models/demo", _workload(),
                              {"ttft_p50_ms": 300, "ttft_p99_ms": 900, "e2e_p95_ms": 5000}, 3))
    assert (args.dataset_name, args.random_input_len, args.random_output_len) == \
        ("random", 128, 64)
    assert args.random_range_ratio == "0.5"  # vLLM parses it later
    assert (args.max_concurrency, args.request_rate) == (4, float("inf"))
    assert args.num_prompts == prompt_count(_workload()) == 32  # 8x the concurrency
    assert args.num_warmups == 4
    assert (args.temperature, args.ignore_eos, args.save_detailed) == (0.0, True, True)
    assert (args.base_url, args.model, args.tokenizer, args.backend) == \
        (ENDPOINT.base_url, "demo", "/models/demo", "vllm")
    assert args.seed == run_seed(_workload(), 3)
    assert sorted(args.goodput) == ["e2el:5000", "ttft:900"]  # the tail SLO bounds a request
    assert args.metric_percentiles == "50,90,95,99"


def test_a_run_is_a_steady_state_length() -> None:
    assert prompt_count(_workload(num_requests=100)) == 108  # ramp + 100 + drain
    poisson = {"kind": "poisson", "rate": 3.0}
    # an open loop: 24 window requests (3 req/s x 5 s is fewer), ramp and drain 8 each
    assert prompt_count(_workload(load=poisson)) == 8 + 24 + 8
    assert prompt_count(_workload(load=poisson, steady_state=None)) == 24
    assert prompt_count(_workload(load=poisson | {"max_concurrency": 16})) == 128


def test_every_run_has_its_own_seed() -> None:
    seeds = {run_seed(_workload(seed=s), i) for s in range(5) for i in range(50)}
    assert len(seeds) == 250


def test_poisson_shared_prefix_and_datasets() -> None:
    load = {"kind": "poisson", "rate": 2.5, "max_concurrency": 8}
    prefix = {"kind": "shared_prefix", "num_prefixes": 3, "prefix_tokens": 256,
              "suffix_tokens": 32, "output_tokens": 16}
    args = _parsed(bench_argv(ENDPOINT, "tok", _workload(load=load, prompts=prefix), {}, 0))
    assert (args.request_rate, args.max_concurrency, args.goodput) == (2.5, 8, None)
    assert (args.dataset_name, args.prefix_repetition_prefix_len,
            args.prefix_repetition_suffix_len, args.prefix_repetition_num_prefixes,
            args.prefix_repetition_output_len) == ("prefix_repetition", 256, 32, 3, 16)
    sharegpt = {"kind": "sharegpt", "path": "s.json", "output_tokens": 12}
    args = _parsed(bench_argv(ENDPOINT, "tok", _workload(prompts=sharegpt), {}, 1,
                              Path("/tmp/run.json")))
    assert (args.dataset_name, args.dataset_path, args.backend, args.endpoint) == \
        ("sharegpt", "/tmp/run.json", "openai-chat", "/v1/chat/completions")
    assert (args.disable_shuffle, args.no_oversample, args.sharegpt_output_len) == \
        (True, True, 12)
    jsonl = {"kind": "jsonl", "path": "p.jsonl", "output_tokens": 5}
    args = _parsed(bench_argv(ENDPOINT, "tok", _workload(prompts=jsonl), {}, 1,
                              Path("/tmp/run.json")))
    assert (args.dataset_name, args.backend, args.endpoint, args.sharegpt_output_len) == \
        ("sharegpt", "vllm", "/v1/completions", 5)
    with pytest.raises(WorkloadError, match="prompts file"):
        bench_argv(ENDPOINT, "tok", _workload(prompts=sharegpt), {}, 1)


def test_it_refuses_what_it_cannot_run() -> None:
    chat = _workload(prompts={"kind": "chat", "path": "c.jsonl"})
    with pytest.raises(WorkloadError, match="no chat JSONL dataset"):
        VllmBenchDriver().run(ENDPOINT, chat, {}, 0)


def _records() -> list[RequestRecord]:
    return [
        RequestRecord(ok=True, prompt_tokens=100 + i, output_tokens=10, ttft=0.1 + i / 100,
                      e2e=0.5 + i / 50, itls=[(0.4 + i / 50 - i / 100) / 9] * 9,
                      sent_at=1000.0 + i / 10, done_at=1000.5 + i / 10 + i / 50,
                      queued_s=i / 1000)
        for i in range(6)
    ] + [RequestRecord(ok=False, prompt_tokens=100, error="Bad Request", sent_at=1000.7,
                       done_at=1000.7)]


def _vllm_result(records: list[RequestRecord], duration: float) -> dict[str, object]:
    """What vllm bench serve --save-detailed returns for these requests."""
    result: dict[str, object] = dict(to_vllm_bench_keys(summarize(records, duration, {})))
    result["request_goodput"] = None  # no --goodput
    result |= {
        "start_times": [r.sent_at for r in records],
        "ttfts": [r.ttft or 0.0 for r in records],
        "itls": [r.itls for r in records],
        "latencies": [r.e2e or 0.0 for r in records],
        "input_lens": [r.prompt_tokens for r in records],
        "output_lens": [r.output_tokens for r in records],
        "queue_times": [r.queued_s for r in records],
        "errors": [r.error for r in records],
        "generated_texts": ["" for _ in records],
    }
    return result


def test_its_result_in_our_names_and_records() -> None:
    records = _records()
    ours = summarize(records, 2.0, {})
    back = from_vllm_bench_keys(to_vllm_bench_keys(ours))
    for key in ("completed", "failed", "duration_s", "output_throughput", "request_throughput",
                "total_token_throughput", "ttft_p50_ms", "ttft_p99_ms", "tpot_mean_ms",
                "itl_p95_ms", "e2e_p90_ms", "e2e_mean_ms"):
        assert back[key] == pytest.approx(ours[key]), key
    assert records_of(_vllm_result(records, 2.0)) == records
    found = bench_result(_vllm_result(records, 2.0), {}, wall_s=5.0)
    assert found.records == records
    assert found.metrics["error_rate"] == pytest.approx(1 / 7)
    assert found.metrics["request_goodput"] == pytest.approx(ours["request_goodput"])
    for key, value in ours.items():
        assert found.metrics[key] == pytest.approx(value, nan_ok=True), key
    assert (found.benchmark_s, found.warmup_s, found.started_at) == (2.0, 3.0, 1000.0)


def test_the_space_chooses_the_driver(tmp_path: Path) -> None:
    data = small_space(tmp_path, tmp_path / "model")
    assert isinstance(load_driver(Space.model_validate(data)), HttpLoadDriver)
    data["measurement"]["driver"] = "vllm_bench"
    assert isinstance(load_driver(Space.model_validate(data)), VllmBenchDriver)
