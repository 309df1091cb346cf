"""The one request pipeline: decode, choose (predict or explain), score, encode.

Every request of a TorchServe batch goes through the same four steps, and this module is the
one place where their time is taken (the observer's per-request record, the telemetry's batch
histograms), where an error becomes a request's answer, and where the metrics are counted:

- decode: the request's rows by the contract (``handlers.contract``), through the transport
  (``handlers.transports``: TorchServe's own frames or a KServe envelope);
- choose: the request's kind, once, from TorchServe's ``explain`` header: a prediction stays
  ``Parsed``, an explanation becomes an ``ExplanationRequest`` with its options;
- score: all predictions in one forward pass, all explanations in one attribution call;
- encode: each request's answer in the format it asked for (or its 4xx), by the transport.

A bad request is a ``RequestError`` value from then on, so it never costs its neighbours their
answers; a bug (any other exception) while decoding, scoring or encoding one request is logged
and answered 500 ``internal_error`` for that request alone (a failed batched forward pass is
retried request by request), so the worker never dies of one request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from common.model_card import ModelCard
from handlers import runtimes
from handlers.contract import Parsed, RequestError
from handlers.describe import DESCRIBED, Described
from handlers.explain import Explainer, ExplanationRequest, is_explanation, no_explanations
from handlers.observability.observer import Batch, Observer
from handlers.telemetry import Telemetry

logger = logging.getLogger(__name__)
Item = Parsed | ExplanationRequest | RequestError | Described
Forward = Callable[[torch.Tensor], torch.Tensor]
READ_ERROR = RequestError(500, "internal_error", "the server failed to read this request; see its model log")
SCORE_ERROR = RequestError(500, "internal_error", "the server failed to score this request; see its model log")
ENCODE_ERROR = RequestError(500, "internal_error", "the server failed to answer this request; see its model log")


class Transport(Protocol):
    """How requests arrive and answers leave (``handlers.transports``): the pipeline's two ends."""

    def size(self, data: Any) -> int: ...

    def decode(self, data: Any, idx: int, context: Any) -> Parsed | Described: ...

    def prediction(self, idx: int, parsed: Parsed, probabilities: torch.Tensor, context: Any) -> Any: ...

    def explanation(self, idx: int, body: dict[str, Any], context: Any) -> Any: ...

    def describe(self, idx: int, context: Any) -> Any: ...

    def refused(self, error: RequestError) -> RequestError: ...

    def refusal(self, idx: int, error: RequestError, request_id: str, context: Any) -> Any: ...

    def deliver(self, answers: list[Any], context: Any) -> list[Any]: ...


class Pipeline:
    """The steps for one model version; built once per worker by the handler."""

    def __init__(
        self,
        transport: Transport,
        model: Forward,
        card: ModelCard,
        explainer: Explainer | None,
        telemetry: Telemetry,
        observer: Observer,
    ) -> None:
        self.transport = transport
        self.model = model
        self.card = card
        self.explainer = explainer
        self.telemetry = telemetry
        self.observer = observer

    def run(self, data: Any, context: Any) -> list[Any]:
        """One TorchServe batch in, one answer per request out (in order)."""
        started = time.perf_counter()
        n = self.transport.size(data)
        batch = self.observer.batch(n, lambda i, name: header(context, i, name), context.request_ids or {})
        explaining: set[int] = set()
        items = [self.decode(data, i, context, batch, explaining) for i in range(n)]
        parsed_at = time.perf_counter()
        outcomes = self.score(items, batch)
        answers = [self.encode(i, items, outcomes[i], context, batch) for i in range(n)]
        self.record(items, explaining, batch, started, parsed_at)
        return self.transport.deliver(answers, context)

    # ------------------------------------------------------------ decode and choose

    def decode(self, data: Any, idx: int, context: Any, batch: Batch, explaining: set[int]) -> Item:
        item: Item
        explain = is_explanation(context, idx)  # the choice, made once: a refusal counts as its kind's
        if explain:
            explaining.add(idx)
        try:
            item = self.transport.decode(data, idx, context)
            if explain and isinstance(item, Parsed):
                item = self.explanation_request(item, context.get_all_request_header(idx))
        except RequestError as exc:
            item = exc.detached()
        except Exception:  # a bug, not the client's fault: this request alone fails
            logger.exception("unexpected error reading request %d of the batch (%s)", idx, batch.request_id(idx))
            item = READ_ERROR
        batch.decoded(idx, rows_of(item))
        return item

    def explanation_request(self, parsed: Parsed, headers: dict[str, Any]) -> ExplanationRequest:
        """The request's explanation options checked, or the 400 of a variant without autograd."""
        if self.explainer is None:
            no_explanations(self.card)
        return self.explainer.request(parsed, headers)

    # ------------------------------------------------------------ score

    def score(self, items: Sequence[Item], batch: Batch) -> list[Any]:
        """Per request: its probabilities, its explanation body, a RequestError, or None."""
        outcomes: list[Any] = [None] * len(items)
        valid = [(i, item) for i, item in enumerate(items) if isinstance(item, Parsed)]
        if valid:
            predictions = [i for i, _ in valid]
            started = time.time_ns()
            scored = self.each_or_alone(self.forward, [p for _, p in valid])
            batch.scored(predictions, started)
            sampled = [(i, p.rows, out) for (i, p), out in zip(valid, scored) if isinstance(out, torch.Tensor)]
            self.observer.log_predictions(batch, sampled)
            for i, out in zip(predictions, scored):
                outcomes[i] = out
        explanations = [i for i, item in enumerate(items) if isinstance(item, ExplanationRequest)]
        if explanations and self.explainer is not None:
            started = time.time_ns()
            answered = self.each_or_alone(self.explainer.explain, [items[i] for i in explanations])
            batch.scored(explanations, started, explained=True)
            for i, out in zip(explanations, answered):
                outcomes[i] = out
        return outcomes

    def each_or_alone(self, step: Callable[[list[Any]], Sequence[Any]], requests: list[Any]) -> list[Any]:
        """``step`` over all the requests at once; if it fails (a bug or a model error), over
        each alone, so only the request that fails gets the 500."""
        try:
            return list(step(requests))
        except Exception:
            logger.exception("scoring a batch of %d requests failed; scoring them one by one", len(requests))
        answers: list[Any] = []
        for request in requests:
            try:
                answers.extend(step([request]))
            except Exception:
                logger.exception("scoring one request failed")
                answers.append(SCORE_ERROR)
        return answers

    def forward(self, valid: list[Parsed]) -> tuple[torch.Tensor, ...]:
        """One forward pass over the rows of every valid request; probabilities per request."""
        with torch.inference_mode():
            x = torch.cat([p.rows for p in valid]) if len(valid) > 1 else valid[0].rows
            probabilities = runtimes.probabilities(self.model(x))
        self.telemetry.scored(x, probabilities)
        return tuple(probabilities.split([p.rows.shape[0] for p in valid]))

    # ------------------------------------------------------------ encode

    def encode(self, idx: int, items: list[Item], outcome: Any, context: Any, batch: Batch) -> Any:
        """Request ``idx``'s answer; a refusal replaces its item, so it is counted as refused."""
        item = items[idx]
        error = outcome if isinstance(outcome, RequestError) else item if isinstance(item, RequestError) else None
        if error is None:
            try:
                answer = self.answer(idx, item, outcome, context)
                batch.answered(idx, 200)
                return answer
            except Exception:
                logger.exception("unexpected error answering request %d of the batch", idx)
                error = ENCODE_ERROR
        error = items[idx] = self.transport.refused(error)
        batch.answered(idx, error.status, error.type)
        return self.transport.refusal(idx, error, batch.request_id(idx), context)

    def answer(self, idx: int, item: Item, outcome: Any, context: Any) -> Any:
        if item is DESCRIBED:
            return self.transport.describe(idx, context)
        if isinstance(item, ExplanationRequest):
            return self.transport.explanation(idx, outcome, context)
        assert isinstance(item, Parsed)
        return self.transport.prediction(idx, item, outcome, context)

    # ------------------------------------------------------------ record

    def record(self, items: list[Item], explaining: set[int], batch: Batch, started: float, parsed_at: float) -> None:
        """The batch's spans, access lines and metrics, once per request; TorchServe's describe
        calls are management, not traffic: neither logged nor counted."""
        described = [i for i, item in enumerate(items) if item is DESCRIBED]
        batch.finish(skip=described)
        if described:
            kept = [i for i, item in enumerate(items) if item is not DESCRIBED]
            items, explaining = [items[i] for i in kept], {n for n, i in enumerate(kept) if i in explaining}
        self.telemetry.batch(items, started, parsed_at, explanations=explaining)


def rows_of(item: Item) -> int:
    """The rows a request carries, for its access line, span and prediction record (0 when refused)."""
    if isinstance(item, ExplanationRequest):
        item = item.parsed
    return int(item.rows.shape[0]) if isinstance(item, Parsed) else 0


def header(context: Any, idx: int, name: str) -> str | None:
    """A request header as the client spelled it or in lower case (TorchServe keeps the
    client's spelling; HTTP/2 proxies and some clients send lower case)."""
    value = context.get_request_header(idx, name) or context.get_request_header(idx, name.lower())
    return value if isinstance(value, str) else None
