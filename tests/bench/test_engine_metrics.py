"""Engine metrics from /metrics scrapes.

``tests/fixtures/metrics/vllm_cpu_ngram_{before,after}.txt`` are real captures of vLLM 0.32.0
(CPU build) serving the demo model with ngram speculative decoding and prefix caching, taken
before and after 100 requests.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from autotune.bench.engine_metrics import (
    EngineMetricsDelta,
    Scrape,
    counter_delta,
    engine_metrics,
    histogram_mean_delta,
    parse_prometheus,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
BEFORE = (FIXTURES / "vllm_cpu_ngram_before.txt").read_text()
AFTER = (FIXTURES / "vllm_cpu_ngram_after.txt").read_text()


def _set(text: str, name: str, value: float) -> str:
    """``text`` with every sample of ``name`` (exact name, any labels) set to ``value``."""
    return re.sub(
        rf"^({re.escape(name)}(?:{{[^}}]*}})?) \S+$", rf"\g<1> {value}", text, flags=re.M
    )


def _second_engine(text: str, scale: float) -> str:
    """``text`` plus a copy of every engine-0 vLLM sample as engine 1, values × ``scale``."""
    extra = []
    for line in text.splitlines():
        if line.startswith("vllm:") and 'engine="0"' in line:
            head, value = line.rsplit(" ", 1)
            head = head.replace('engine="0"', 'engine="1"')
            extra.append(f"{head} {float(value) * scale}")
    return text + "\n".join(extra) + "\n"


def test_parser_handles_the_exposition_format() -> None:
    text = (
        "# HELP x_total A counter.\n"
        "# TYPE x_total counter\n"
        'x_total{a="q\\"uote",b="back\\\\slash",c="new\\nline, still c",d=""} 3 1700000000000\n'
        "plain 1.5e+03\n"
        'h_bucket{le="+Inf"} +Inf\n'
        'spaced{ a = "1" , } NaN\n'
        "\n"
        "# EOF\n"
    )
    samples = parse_prometheus(text)
    assert [s.name for s in samples] == ["x_total", "plain", "h_bucket", "spaced"]
    assert samples[0].labels == {
        "a": 'q"uote',
        "b": "back\\slash",
        "c": "new\nline, still c",
        "d": "",
    }
    assert samples[0].value == 3.0
    assert samples[1].labels == {} and samples[1].value == 1500.0
    assert samples[2].labels == {"le": "+Inf"} and samples[2].value == math.inf
    assert samples[3].labels == {"a": "1"} and math.isnan(samples[3].value)


@pytest.mark.parametrize(
    "line", ['x{a="1"', 'x{a="1"} ', "x", "x 1 2 3", "x{a=1} 2", "x one", 'x{a="open} 1']
)
def test_parser_rejects_broken_lines(line: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_prometheus("ok 1\n" + line + "\n")


def test_real_captures_parse() -> None:
    before, after = Scrape.parse(BEFORE), Scrape.parse(AFTER)
    assert after.counter_name("vllm:num_preemptions") == "vllm:num_preemptions_total"
    assert after.series("vllm:kv_cache_usage_perc") == {
        (("engine", "0"), ("model_name", "demo")): 0.0
    }
    info = next(iter(after.series("vllm:cache_config_info")))
    assert ("enable_prefix_caching", "True") in info
    assert counter_delta(before, after, "vllm:generation_tokens") == pytest.approx(6400.0)
    assert counter_delta(before, after, "vllm:no_such_metric") is None
    assert histogram_mean_delta(before, after, "vllm:e2e_request_latency_seconds") == (
        pytest.approx(96.6448745727539 / 100)
    )


def test_deltas_on_the_real_captures() -> None:
    assert engine_metrics(BEFORE, AFTER) == pytest.approx(
        {
            "preemptions": 0.0,
            "kv_cache_usage_peak_pct": 0.0,
            "prefix_cache_hit_rate": 0.0,  # 0 hits out of 12800 queried tokens
            "spec_decode_acceptance_rate": 1.0,  # 4600 accepted of 4600 draft tokens
            "spec_decode_mean_acceptance_length": 1.0 + 4600 / 1600,
            "queue_time_mean_ms": 0.00569759099971634 / 100 * 1000,
            "requests_waiting_peak": 0.0,
            "requests_running_peak": 0.0,
        }
    )


def test_peaks_come_from_the_scrapes_taken_during() -> None:
    during = [
        _set(_set(AFTER, "vllm:kv_cache_usage_perc", 0.42), "vllm:num_requests_waiting", 3),
        _set(_set(AFTER, "vllm:kv_cache_usage_perc", 0.17), "vllm:num_requests_running", 8),
    ]
    delta = EngineMetricsDelta.from_scrapes(BEFORE, AFTER, during)
    assert delta.kv_cache_usage_peak_pct == pytest.approx(42.0)
    assert delta.requests_waiting_peak == 3.0
    assert delta.requests_running_peak == 8.0


def test_engines_are_summed_and_kv_usage_is_the_fullest_engine() -> None:
    before = _second_engine(BEFORE, 1.0)
    during = _second_engine(_set(AFTER, "vllm:kv_cache_usage_perc", 0.5), 1.5)
    after = _second_engine(_set(AFTER, "vllm:num_preemptions_total", 2), 1.0)
    out = engine_metrics(before, after, [during])
    assert out["preemptions"] == 4.0
    assert out["kv_cache_usage_peak_pct"] == pytest.approx(75.0)
    assert out["queue_time_mean_ms"] == pytest.approx(0.00569759099971634 / 100 * 1000)
    assert out["spec_decode_acceptance_rate"] == 1.0


def test_a_reset_counter_counts_from_zero() -> None:
    before = _set(BEFORE, "vllm:num_preemptions_total", 50)
    after = _set(AFTER, "vllm:num_preemptions_total", 5)
    assert engine_metrics(before, after)["preemptions"] == 5.0


def test_absent_or_idle_figures_are_left_out() -> None:
    no_spec = "\n".join(
        line for line in AFTER.splitlines() if not line.startswith("vllm:spec_decode")
    )
    out = engine_metrics(AFTER, no_spec)  # nothing happened in between
    assert "spec_decode_acceptance_rate" not in out
    assert "spec_decode_mean_acceptance_length" not in out
    assert "prefix_cache_hit_rate" not in out  # no tokens queried in between
    assert "queue_time_mean_ms" not in out  # no request scheduled in between
    assert out["preemptions"] == 0.0
    assert engine_metrics("", "") == {}
