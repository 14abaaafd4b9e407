from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autotune import metrics as catalogue
from autotune.bench.metrics import (
    RequestRecord,
    goodput_limits,
    meets_slos,
    percentile,
    summarize,
    to_vllm_bench_keys,
)
from autotune.space.ladder import LADDER_METRICS
from autotune.space.quality import QUALITY_METRICS
from autotune.space.workload_mix import ATTAINMENT_WEIGHTED, ATTAINMENT_WORST, MIX_METRICS


def test_percentile_matches_hand_computed_and_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    # position (5-1)*0.9 = 3.6 → 4 + 0.6*(10-4) = 7.6
    assert percentile(values, 90) == pytest.approx(7.6)
    assert percentile(values, 50) == 3.0
    data = list(np.random.default_rng(0).exponential(size=101))
    for q in (50, 90, 95, 99):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)))
    assert math.isnan(percentile([], 50))


def _rec(ttft: float, e2e: float, out: int, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        ok=ok,
        prompt_tokens=10,
        output_tokens=out,
        ttft=ttft,
        e2e=e2e,
        itls=[(e2e - ttft) / (out - 1)] * (out - 1) if ok else [],
    )


def test_tpot_definition() -> None:
    # (1.1 - 0.1) / (11 - 1) = 0.1 s
    assert _rec(0.1, 1.1, 11).tpot == pytest.approx(0.1)
    assert RequestRecord(ok=True, output_tokens=1, ttft=0.1, e2e=0.1).tpot is None


def test_summary_throughput_goodput_errors() -> None:
    records = [
        _rec(0.1, 1.1, 11),  # ttft 100 ms, tpot 100 ms, e2e 1100 ms: meets both SLOs
        _rec(0.5, 1.5, 11),  # ttft 500 ms: misses ttft SLO
        _rec(0.2, 3.2, 11),  # tpot 300 ms: misses tpot SLO
        RequestRecord(ok=False, error="HTTP 500"),
    ]
    slos = {"ttft_p95_ms": 300.0, "tpot_p99_ms": 150.0}
    m = summarize(records, duration_s=2.0, slos=slos)
    assert m["completed"] == 3 and m["failed"] == 1
    assert m["error_rate"] == pytest.approx(0.25)
    assert m["output_throughput"] == pytest.approx(33 / 2.0)
    assert m["request_throughput"] == pytest.approx(1.5)
    assert m["total_token_throughput"] == pytest.approx((33 + 30) / 2.0)
    assert m["request_goodput"] == pytest.approx(0.5)  # one good request in 2 s
    assert m["goodput_fraction"] == pytest.approx(0.25)
    assert m["ttft_p50_ms"] == pytest.approx(200.0)
    assert m["ttft_mean_ms"] == pytest.approx(800 / 3)
    assert m["e2e_p90_ms"] == pytest.approx(1500 + 0.8 * 1700)  # pos 1.8 of [1100,1500,3200]


def test_failed_request_never_meets_slos() -> None:
    assert not meets_slos(RequestRecord(ok=False), {"ttft_p95_ms": 1e9})


def test_vllm_bench_key_names() -> None:
    keys = to_vllm_bench_keys(
        {
            "ttft_p50_ms": 1.0,
            "e2e_p99_ms": 2.0,
            "tpot_mean_ms": 3.0,
            "output_throughput": 4.0,
            "completed": 5.0,
        }
    )
    assert keys["median_ttft_ms"] == 1.0
    assert keys["p99_e2el_ms"] == 2.0
    assert keys["mean_tpot_ms"] == 3.0
    assert keys["output_throughput"] == 4.0
    assert keys["completed"] == 5


def test_goodput_takes_one_limit_per_latency_type_as_vllm_bench_goodput() -> None:
    """``--goodput ttft:X tpot:Y e2el:Z``: one limit per latency type. From percentile SLOs the
    limit is the SLO on the highest percentile (the bound nearly every request must meet),
    not the strictest of them; ITL is not a goodput type in vLLM."""
    slos = {"ttft_p50_ms": 100.0, "ttft_p99_ms": 500.0, "itl_p99_ms": 1.0, "e2e_mean_ms": 9e3,
            "tpot_p90_ms": 150.0}
    assert goodput_limits(slos) == {"ttft": 500.0, "tpot": 150.0, "e2el": 9e3}
    records = [_rec(0.3, 1.3, 11), _rec(0.6, 1.6, 11), _rec(0.1, 3.1, 11)]
    # 300 ms TTFT is good (the p99 bound is 500 ms); ITL 100 ms does not count against it.
    assert [meets_slos(r, slos) for r in records] == [True, False, False]
    assert summarize(records, 1.0, slos)["request_goodput"] == pytest.approx(1.0)


def test_a_single_token_answer_has_no_tpot_and_meets_any_tpot_limit() -> None:
    """vLLM leaves one-token answers out of TPOT and counts their TPOT as 0 for goodput."""
    one = RequestRecord(ok=True, output_tokens=1, ttft=0.1, e2e=0.1)
    assert one.tpot is None and meets_slos(one, {"tpot_p99_ms": 0.001})
    assert math.isnan(summarize([one], 1.0, {})["tpot_mean_ms"])


def test_client_queue_time_is_added_for_what_a_user_waits() -> None:
    record = RequestRecord(ok=True, output_tokens=11, ttft=0.1, e2e=1.1, itls=[0.1] * 10,
                           sent_at=5.0, done_at=6.1, queued_s=2.0)
    waited = record.including_client_queue()
    assert waited.ttft == pytest.approx(2.1) and waited.e2e == pytest.approx(3.1)
    assert waited.tpot == pytest.approx(record.tpot) and waited.itls == record.itls
    assert waited.sent_at == pytest.approx(3.0) and waited.queued_s == 0.0
    assert record.ttft == 0.1  # the original is kept as measured


def _turn(conversation: int, turn: int, ttft: float, e2e: float, ok: bool = True) -> RequestRecord:
    record = _rec(ttft, e2e, 11, ok)
    record.conversation, record.turn = conversation, turn
    return record


def test_turns_are_requests_and_conversations_are_summed_without_think_time() -> None:
    records = [
        _turn(0, 0, 0.4, 1.4), _turn(0, 1, 0.1, 1.1), _turn(0, 2, 0.2, 1.2),
        _turn(1, 0, 0.6, 1.6), _turn(1, 1, 0.3, 1.3, ok=False),
    ]
    m = summarize(records, duration_s=10.0, slos={"ttft_p95_ms": 500.0})
    assert m["completed"] == 4 and m["failed"] == 1
    assert m["request_goodput"] == pytest.approx(0.3)  # every turn is a request: 3 ≤ 500 ms
    assert m["first_turn_ttft_p50_ms"] == pytest.approx(500.0)  # 400 and 600
    assert m["later_turn_ttft_mean_ms"] == pytest.approx(150.0)  # 100 and 200; failed left out
    assert m["later_turn_e2e_p99_ms"] == pytest.approx(1000 * percentile([1.1, 1.2], 99))
    # Only conversation 0 completed: 1.4 + 1.1 + 1.2 s of answers.
    assert m["conversation_duration_p50_ms"] == pytest.approx(3700.0)
    assert m["conversations_completed"] == 1 and m["conversations_failed"] == 1
    single = summarize([_rec(0.1, 1.1, 11)], duration_s=1.0, slos={})
    assert not any(k.startswith(("conversation", "first_turn", "later_turn")) for k in single)


# ---- the metric catalogue (autotune.metrics) ---------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
UNITS = {"ms", "s", "tok/s", "req/s", "%", "fraction", "pt", "tokens", "requests", "prompts",
         "B", "MiB", "GiB", "$", ""}


def test_the_docs_table_is_the_catalogues() -> None:
    text = DOCS.read_text()
    start = "<!-- metric table: generated from autotune/metrics.py -->\n"
    table = text[text.index(start) + len(start):text.index("<!-- end of metric table -->")]
    assert table == catalogue.markdown_table(), (
        "docs/metrics.md and autotune/metrics.py disagree: paste the output of "
        "`.venv/bin/python -m autotune.metrics` between the table's markers")


def test_one_entry_per_metric_with_every_fact() -> None:
    names = [m.name for m in catalogue.CATALOGUE]
    assert len(names) == len(set(names))
    for m in catalogue.CATALOGUE:
        assert m.direction in ("maximize", "minimize"), m
        assert m.unit in UNITS and m.group in catalogue.GROUPS[:-1] and m.description, m
    assert set(catalogue.ALIASES.values()) <= set(names)
    assert not set(catalogue.ALIASES) & set(names)


def test_what_the_load_driver_records_is_catalogued() -> None:
    records = [_turn(0, 0, 0.4, 1.4), _turn(0, 1, 0.1, 1.1), _turn(1, 0, 0.6, 1.6, ok=False)]
    measured = summarize(records, duration_s=10.0, slos={"ttft_p95_ms": 500.0})
    assert [k for k in measured if catalogue.lookup(k) is None] == []


def test_the_schemas_views_are_the_catalogues() -> None:
    assert LADDER_METRICS[catalogue.CAPACITY_METRIC] == "maximize"
    assert set(MIX_METRICS) == {ATTAINMENT_WORST, ATTAINMENT_WEIGHTED}
    assert QUALITY_METRICS["quality_logprob_drift"] == "minimize"
    assert set(LADDER_METRICS) | set(QUALITY_METRICS) <= set(catalogue.known_metric_names())
    assert not set(MIX_METRICS) & set(catalogue.known_metric_names())  # a mix's own


def test_an_old_name_reads_as_the_new_one() -> None:
    assert catalogue.canonical_name("capacity_request_rate") == "capacity_rps"
    assert catalogue.natural_direction("capacity_request_rate") == "maximize"
    assert catalogue.short_name("capacity_request_rate") == "capacity req/s"
    assert "capacity_request_rate" in catalogue.wide_columns()


def test_short_names_and_directions() -> None:
    assert catalogue.short_name("e2e_p95_ms") == "e2e p95 ms"
    assert catalogue.short_name("output_throughput") == "tok/s"
    assert catalogue.short_name("first_turn_ttft_p95_ms") == "first_turn_ttft_p95_ms"
    assert catalogue.short_name("chat.ttft_p95_ms") == "chat.ttft_p95_ms"
    assert catalogue.natural_direction("some_plugin_gauge") == "minimize"
    assert catalogue.natural_direction("request_goodput") == "maximize"
