"""OpenTelemetry spans of each request, exported over OTLP/HTTP to
``handler.observability.otlp_endpoint`` (empty: off). The SDK is imported only when an endpoint
is set, so tracing costs nothing when off. A request's W3C ``traceparent`` is read with the
SDK's propagator (which refuses a malformed one: the span then starts a new trace); the spans
are made after the batch from the times the handler recorded (decode, score or explain, encode),
and the SDK's BatchSpanProcessor exports them from its own thread through a bounded queue, so a
receiver that is slow or down costs a prediction no wait: spans past the queue are dropped."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from handlers.observability.timing import RequestRecord
from handlers.settings import ObservabilitySettings

# the SDK's BatchSpanProcessor sends at most this often; spans wait in its queue until then
EXPORT_DELAY_MS = 500
# The SDK's queue warns once per span it drops (a receiver down, a full queue): a log record
# made per span (~30 µs each, measured) on the request's thread. Its ERROR lines (one per failed
# export, from the exporter's thread) still say that the receiver is unreachable.
QUIET_LOGGERS = ("opentelemetry.sdk._shared_internal",)


class Tracing:
    """The tracer of one model version (SDK objects are Any: imported lazily, here only)."""

    def __init__(self, settings: ObservabilitySettings, model_name: str, model_version: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create({"service.name": "torchserve", "service.version": model_version})
        self.provider: Any = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=settings.otlp_timeout_s)
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter, max_queue_size=settings.otlp_queue_size, schedule_delay_millis=EXPORT_DELAY_MS,
                export_timeout_millis=int(settings.otlp_timeout_s * 1000),
            )
        )  # fmt: skip
        self.tracer: Any = self.provider.get_tracer("handlers.observability")
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        self.propagator: Any = TraceContextTextMapPropagator()
        self.server_kind: Any = SpanKind.SERVER
        self.in_context: Any = set_span_in_context
        self.model = {"model.name": model_name, "model.version": model_version}

    def export(self, records: Sequence[RequestRecord]) -> None:
        """One trace fragment per request: a server span and its steps as children."""
        for record in records:
            self._request_spans(record)

    def _request_spans(self, r: RequestRecord) -> None:
        carrier = {"traceparent": r.traceparent or "", "tracestate": r.tracestate or ""}
        parent = self.propagator.extract(carrier)
        attributes = {**self.model, "request.id": r.request_id, "request.rows": r.rows,
                      "http.response.status_code": r.status}  # fmt: skip
        if r.error_type:
            attributes["error.type"] = r.error_type
        root = self.tracer.start_span(
            "explain" if r.explained else "predict", context=parent, kind=self.server_kind,
            start_time=r.started_ns, attributes=attributes,
        )  # fmt: skip
        inside = self.in_context(root)
        steps = [("decode", r.started_ns, r.decoded_ns)]
        if r.scored is not None:
            steps.append(("explain" if r.explained else "score", *r.scored))
            steps.append(("encode", r.scored[1], r.encoded_ns))
        for name, start, end in steps:
            # the steps carry no attributes of their own: the root has them
            self.tracer.start_span(name, context=inside, start_time=start).end(end_time=end)
        root.end(end_time=r.encoded_ns)

    def shutdown(self) -> None:
        """Flush what is queued (tests, benchmark); a worker that stops just drops it."""
        self.provider.shutdown()


def start(settings: ObservabilitySettings, model_name: str, model_version: str) -> Tracing | None:
    """The tracer, or None when no endpoint is set (the SDK is then never imported)."""
    return Tracing(settings, model_name, model_version) if settings.otlp_endpoint else None
