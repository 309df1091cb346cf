"""A real OTLP/HTTP trace receiver for the tests and benchmarks/tracing.py: the stdlib's HTTP server on a free
loopback port decoding each POST to /v1/traces with the opentelemetry-proto messages, as a collector
would, and answering the protobuf ExportTraceServiceResponse. (No collector binary installs
from the package registries here; the protocol is these two messages over HTTP.)"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.http_stub import StubHandler

PATH = "/v1/traces"


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class Receiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(StubHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.read_body()
                if self.path != PATH:
                    self.send_error(404)
                    return
                receiver.add(ExportTraceServiceRequest.FromString(body))
                self.send_body(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"

    def add(self, request: Any) -> None:
        with self.lock:
            for rs in request.resource_spans:
                resource = _attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    self.spans.extend(
                        ReceivedSpan(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                     _attributes(s.attributes), resource, s.start_time_unix_nano, s.end_time_unix_nano)
                        for s in ss.spans
                    )

    def trace(self, trace_id: str, n: int, timeout: float = 15) -> list[ReceivedSpan]:
        """The spans of ``trace_id`` once ``n`` have arrived (the exporter sends every 0.5 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [s for s in self.spans if s.trace_id == trace_id]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(got)} of {n} spans of trace {trace_id} arrived in {timeout} s")

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> int:
    """Serve until stdin closes, in a process of its own (benchmarks/tracing.py: a collector is
    not in the worker's process, so its decoding must not share the worker's GIL); print the
    endpoint first and the number of spans received last."""
    import sys

    with Receiver() as receiver:
        print(receiver.endpoint, flush=True)
        sys.stdin.read()
        print(len(receiver.spans), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
