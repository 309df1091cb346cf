"""The pipeline's two ends (``handlers.pipeline.Transport``): how a request's body arrives and
how its answer leaves, for TorchServe's own frames (``Direct``) and for KServe's service
envelopes (``Enveloped``). Nothing here times, counts or catches: the pipeline does.

Direct: every request of the batch brings its body and headers; each answer is its own bytes,
content type and status. Enveloped (``handlers.contract.envelopes``): TorchServe's ``kserve`` or
``kservev2`` envelope decoded the batch's first request before the handler runs and wraps what
it returns, so a refusal is raised as ``PredictionException`` with its 4xx, the one way an
envelope lets a handler set a status.
"""

from __future__ import annotations

from typing import Any

import torch

from handlers.contract import JSON, Parsed, RequestError, Responder, Schema, answer_format, encode, unsupported
from handlers.contract.dispatch import parse_request
from handlers.contract.envelopes import (
    enveloped_error,
    enveloped_explanations,
    enveloped_output,
    forget_envelope_state,
    parse_enveloped,
)
from handlers.describe import DESCRIBED, Described, is_describe
from handlers.pipeline import header

VERSION_HEADER = "X-Model-Version"


class Direct:
    """TorchServe's own request frames: one answer per request, each with its own status."""

    def __init__(self, schema: Schema, responder: Responder, describe: Any) -> None:
        self.schema = schema
        self.responder = responder
        self.card_body = describe  # () -> the model card's answer to a describe request

    def size(self, data: Any) -> int:
        return len(data)

    def decode(self, data: Any, idx: int, context: Any) -> Parsed | Described:
        request = data[idx]
        if is_describe(context, idx, request):
            return DESCRIBED
        body, content_type = request_body(request, context, idx)
        return parse_request(body, content_type, self.schema, lambda name: header(context, idx, name))

    def prediction(self, idx: int, parsed: Parsed, probabilities: torch.Tensor, context: Any) -> bytes:
        body, content_type, headers = self.responder.answer(
            parsed, probabilities, answer_format(header(context, idx, "Accept"))
        )
        self._sent(context, idx, content_type)
        for name, value in headers.items():
            context.set_response_header(idx, name, value)
        return body

    def explanation(self, idx: int, body: dict[str, Any], context: Any) -> bytes:
        self._sent(context, idx, JSON)
        return encode(body)

    def describe(self, idx: int, context: Any) -> str:
        context.set_response_header(idx, VERSION_HEADER, self.responder.model_version)
        answer: str = self.card_body()
        return answer

    def refused(self, error: RequestError) -> RequestError:
        return error

    def refusal(self, idx: int, error: RequestError, request_id: str, context: Any) -> bytes:
        """A 4xx (or 500) answer: the error's body with the request's ID, the one an operator
        greps the logs for."""
        self._sent(context, idx, JSON)
        context.set_response_status(error.status, error.type, idx)
        return encode({**error.to_dict(), "request_id": request_id})

    def deliver(self, answers: list[Any], context: Any) -> list[Any]:
        return answers

    def _sent(self, context: Any, idx: int, content_type: str) -> None:
        context.set_response_header(idx, VERSION_HEADER, self.responder.model_version)
        context.set_response_content_type(idx, content_type)


class Enveloped:
    """Under KServe's envelope: one request (what the envelope decoded), the outputs it wraps."""

    def __init__(self, envelope: str, schema: Schema, responder: Responder, feature_names: tuple[str, ...]) -> None:
        self.envelope = envelope
        self.schema = schema
        self.responder = responder
        self.feature_names = feature_names

    def size(self, data: Any) -> int:
        return 1

    def decode(self, data: Any, idx: int, context: Any) -> Parsed:
        # the envelope kept only the rows: explanation options come from the X-Explain-* headers
        return parse_enveloped(data, self.envelope, self.schema)

    def prediction(self, idx: int, parsed: Parsed, probabilities: torch.Tensor, context: Any) -> list[Any]:
        self._sent(context)
        return enveloped_output(self.envelope, probabilities, self.responder)

    def explanation(self, idx: int, body: dict[str, Any], context: Any) -> list[Any]:
        self._sent(context)
        return enveloped_explanations(self.envelope, body, self.feature_names)

    def describe(self, idx: int, context: Any) -> Any:
        raise AssertionError("an envelope never hands over a describe request")

    def refused(self, error: RequestError) -> RequestError:
        return enveloped_error(error)

    def refusal(self, idx: int, error: RequestError, request_id: str, context: Any) -> RequestError:
        return error  # raised by deliver, once the pipeline has counted it

    def deliver(self, answers: list[Any], context: Any) -> list[Any]:
        (answer,) = answers
        if isinstance(answer, RequestError):
            from ts.utils.util import PredictionException  # TorchServe's, only on this path

            forget_envelope_state(context)
            raise PredictionException(f"{answer.type}: {answer.message}", answer.status)
        outputs: list[Any] = answer
        return outputs

    def _sent(self, context: Any) -> None:
        context.set_response_content_type(0, JSON)
        context.set_response_header(0, VERSION_HEADER, self.responder.model_version)


def request_body(request: dict[str, Any], context: Any, idx: int) -> tuple[Any, str | None]:
    """The payload and its content type from one TorchServe request.

    A raw body arrives as parameter "body"; a multipart upload as its field (use "data").
    Anything else is form data TorchServe split into fields: refused with a 415.
    """
    content_type = header(context, idx, "Content-Type")
    name = "body" if "body" in request else ("data" if "data" in request else None)
    if name is None:
        raise unsupported(content_type)
    param_headers = context.get_request_header(idx, name)
    part_type = param_headers.get("content-type") if isinstance(param_headers, dict) else None
    return request[name], part_type or content_type
