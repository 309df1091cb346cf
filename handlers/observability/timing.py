"""What the handler learned about one request of a batch, for its access line, its spans and its
prediction log record: times in ``time.time_ns()`` (spans need wall-clock times), rows, status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)  # one per request on the request path: slots make it cheaper to build
class RequestRecord:
    request_id: str
    torchserve_id: object  # the frontend's UUID of the request (its x-request-id answer header), unchecked
    traceparent: str | None
    tracestate: str | None
    started_ns: int
    decoded_ns: int = 0
    scored: tuple[int, int] | None = None  # the batch's forward pass (or explanation) this request shared
    encoded_ns: int = 0
    rows: int = 0
    status: int = 200
    error_type: str | None = None
    explained: bool = False

    def latency_ms(self) -> dict[str, float]:
        """The request's time split the way an operator reads it (queue time is TorchServe's,
        not known here: its frontend metrics have it)."""
        split = {"preprocess_ms": self.decoded_ns - self.started_ns}
        if self.scored is not None:
            split["inference_ms"] = self.scored[1] - self.scored[0]
            split["postprocess_ms"] = self.encoded_ns - self.scored[1]
        split["handler_ms"] = self.encoded_ns - self.started_ns
        return {k: round(v / 1e6, 3) for k, v in split.items()}
