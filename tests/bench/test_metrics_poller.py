"""MetricsPoller against a local /metrics endpoint: before, during and after a run."""

from __future__ import annotations

import threading
import time
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
    assert len(poller.during) >= 3
    assert poller.during[0] == "vllm:scrape_total 2\n"
    assert poller.after == f"vllm:scrape_total {len(scrapes)}\n"
    assert len(scrapes) == len(poller.during) + 2


def test_an_unreachable_engine_gives_no_delta() -> None:
    with MetricsPoller("http://127.0.0.1:9", interval_s=0.05) as poller:
        time.sleep(0.15)
    assert poller.before == poller.after == "" and poller.during == []
    assert poller.delta() == {}
