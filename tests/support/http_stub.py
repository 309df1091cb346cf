"""A stub HTTP server on a loopback port for the tests: the stdlib's ``ThreadingHTTPServer`` with a
request handler that answers with one call (``send_body``) and logs nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StubHandler(BaseHTTPRequestHandler):
    """Subclass it and write ``do_POST``/``do_GET`` with ``read_body`` and ``send_body``."""

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def send_body(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """The status line, Content-Type and Content-Length, then the body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def stub_server(handler: type[BaseHTTPRequestHandler], port: int = 0) -> Iterator[ThreadingHTTPServer]:
    """``handler`` served on 127.0.0.1:``port`` (0: a free one) in a daemon thread, shut down after."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
