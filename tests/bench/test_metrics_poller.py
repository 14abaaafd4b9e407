"""MetricsPoller against a local /metrics endpoint: before, during and after a run."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autotune.bench.measurement import MetricsPoller


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    scrapes: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            scrapes.append(len(scrapes))
            body = f"vllm:scrape_total {len(scrapes)}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", scrapes
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_scrapes_before_during_and_after(server: tuple[str, list[int]]) -> None:
    url, scrapes = server
    with MetricsPoller(url, interval_s=0.05) as poller:
        assert poller.before == "vllm:scrape_total 1\n"
        time.sleep(0.4)
    assert poller.during.scrapes >= 3
    assert poller.after == f"vllm:scrape_total {len(scrapes)}\n"
    assert len(scrapes) == poller.during.scrapes + 2


def test_an_unreachable_engine_gives_no_delta() -> None:
    with MetricsPoller("http://127.0.0.1:9", interval_s=0.05) as poller:
        time.sleep(0.15)
    assert poller.before == poller.after == "" and poller.during.scrapes == 0
    assert poller.delta() == {}


@pytest.fixture
def big_server() -> Iterator[tuple[str, list[float]]]:
    """A /metrics as large as a busy vLLM's (~300 KB: many histogram buckets), whose KV-cache
    usage and running requests change with every scrape."""
    served: list[float] = []
    padding = "".join(
        f'vllm:e2e_request_latency_seconds_bucket{{le="{i}",model_name="m"}} {i}\n'
        for i in range(2000)
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            usage = (len(served) * 7 % 10) / 10
            served.append(usage)
            body = (f"vllm:kv_cache_usage_perc{{engine=\"0\"}} {usage}\n"
                    f"vllm:num_requests_running{{engine=\"0\"}} {len(served)}\n"
                    + padding).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_long_run_keeps_peaks_not_every_scrape(big_server) -> None:
    """Issue 24 item 13: the poller kept every full /metrics text of a run (a scrape a second
    for an hour of a busy engine: gigabytes). It keeps the scrapes before and after, and the
    running peaks of the scrapes between."""
    url, served = big_server
    with MetricsPoller(url, interval_s=0.01):  # imports and connection pools: not the point
        time.sleep(0.2)
    served.clear()
    gc.collect()
    tracemalloc.start()
    try:
        with MetricsPoller(url, interval_s=0.01) as poller:
            time.sleep(3)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = len(served) - 2  # scrapes during the run
    assert size >= 5
    body = 2000 * 50
    # The texts before and after (two bodies), not one per scrape.
    assert held < 3 * body, f"{held / 1e6:.1f} MB held after {size} scrapes of {body / 1e6} MB"
    delta = poller.delta()
    assert delta["kv_cache_usage_peak_pct"] == pytest.approx(max(served) * 100)
    assert delta["requests_running_peak"] == len(served)
