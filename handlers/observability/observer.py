"""The one object the handler reports a batch to: it names each request (request_id), records
its times and status (timing), and after the batch writes the access lines (logs), the spans
(tracing) and the sampled prediction records (prediction_log). Pure: TorchServe's context is
reached only through the two callables the handler passes in."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from handlers.observability import logs, prediction_log, tracing
from handlers.observability.request_id import HEADER, request_id
from handlers.observability.timing import RequestRecord
from handlers.settings import ObservabilitySettings

Header = Callable[[int, str], str | None]


class Observer:
    def __init__(
        self,
        settings: ObservabilitySettings,
        model_name: str,
        model_version: str,
        feature_names: Sequence[str],
        class_names: Sequence[str],
        on_log_error: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.model = {"model_name": model_name, "model_version": model_version}
        self.feature_names = list(feature_names)
        self.class_names = list(class_names)
        logs.use_format(settings.log_format)
        self.tracing = tracing.start(settings, model_name, model_version)
        self.predictions = prediction_log.open_log(settings.prediction_log, on_log_error)

    def batch(self, size: int, header: Header, torchserve_ids: Mapping[int, Any]) -> Batch:
        return Batch(self, size, header, torchserve_ids)

    def log_predictions(self, batch: Batch, requests: Sequence[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        """The sampled (index, rows, probabilities) of a batch's scored requests, one record each."""
        if self.predictions is None:
            return
        for idx, rows, probabilities in requests:
            if self.predictions.sampled():
                self.predictions.write(self._record(batch.records[idx].request_id, rows, probabilities))

    def _record(self, rid: str, rows: torch.Tensor, probabilities: torch.Tensor) -> dict[str, Any]:
        return {
            "time": time.time(), "request_id": rid, **self.model, "features": self.feature_names,
            "rows": rows.tolist(), "probabilities": probabilities.tolist(),
            "labels": [self.class_names[i] for i in probabilities.argmax(dim=1).tolist()],
        }  # fmt: skip


class Batch:
    """One TorchServe batch as the observer sees it: a record per request, by its index."""

    def __init__(self, observer: Observer, size: int, header: Header, torchserve_ids: Mapping[int, Any]) -> None:
        self.observer = observer
        now = time.time_ns()
        ts = [torchserve_ids.get(i) for i in range(size)]
        ids = [request_id(header(i, HEADER), ts[i]) for i in range(size)]
        if observer.tracing is None:  # the trace headers are read only when tracing is on
            self.records = [RequestRecord(rid, t, None, None, now) for rid, t in zip(ids, ts)]
        else:
            self.records = [
                RequestRecord(rid, t, header(i, "traceparent"), header(i, "tracestate"), now)
                for i, (rid, t) in enumerate(zip(ids, ts))
            ]

    def request_id(self, idx: int) -> str:
        return self.records[idx].request_id

    def decoded(self, idx: int, rows: int = 0) -> None:
        record = self.records[idx]
        record.decoded_ns, record.rows = time.time_ns(), rows

    def scored(self, indexes: Sequence[int], started_ns: int, explained: bool = False) -> None:
        """The batch's forward pass (or explanations) from ``started_ns`` to now, shared by ``indexes``."""
        span = (started_ns, time.time_ns())
        for idx in indexes:
            self.records[idx].scored, self.records[idx].explained = span, explained

    def answered(self, idx: int, status: int, error_type: str | None = None) -> None:
        record = self.records[idx]
        record.encoded_ns, record.status, record.error_type = time.time_ns(), status, error_type

    def finish(self, skip: Sequence[int] = ()) -> None:
        """Access lines and spans for every request but ``skip`` (describe calls: not traffic)."""
        records = [r for i, r in enumerate(self.records) if i not in skip]
        observer = self.observer
        if observer.tracing is not None:
            observer.tracing.export(records)
        mode = observer.settings.access_log
        if mode == "off":
            return
        for r in records:
            if mode == "all" or r.status >= 400:
                fields = {"request_id": r.request_id, **observer.model, "rows": r.rows, "status": r.status}
                if r.torchserve_id != r.request_id:  # what the answer's header says, straight from TorchServe
                    fields["torchserve_id"] = request_id(r.torchserve_id)
                if r.error_type:
                    fields["error_type"] = r.error_type
                logs.access_line({**fields, **r.latency_ms()}, observer.settings.log_format)
