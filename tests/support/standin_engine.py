"""A stand-in engine process for launcher tests without vLLM: run as a script with vLLM's
``--host H --port P`` (other arguments ignored), it binds the port the way vLLM's API server
does (a taken port ends it with Python's own ``OSError: [Errno 98] Address already in use``)
and answers ``/health`` and ``/version``. ``STANDIN_MODE`` in its environment changes that:
``fail:TEXT`` prints TEXT and exits 1; ``hang:TEXT`` prints TEXT and never binds."""

from __future__ import annotations

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SCRIPT = os.path.abspath(__file__)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"version": "0.0.standin"}' if self.path == "/version" else b""
        self.send_response(200 if self.path in ("/health", "/version") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    mode, _, text = os.environ.get("STANDIN_MODE", "serve").partition(":")
    print("INFO standin engine starting", flush=True)
    if mode == "fail":
        print(text, flush=True)
        return 1
    if mode == "hang":
        print(text, flush=True)
        while True:
            time.sleep(1)
    port = int(argv[argv.index("--port") + 1])
    server = HTTPServer(("127.0.0.1", port), _Handler)
    print(f"INFO standin engine serving on port {port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
