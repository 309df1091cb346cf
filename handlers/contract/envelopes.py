"""Requests and answers under TorchServe's KServe service envelopes.

KServe's ``kserve-torchserve`` runtime sets ``TS_SERVICE_ENVELOPE`` to ``kserve``
(protocol v1) or ``kservev2`` (protocol v2); with ``enable_envvars_config=true``
TorchServe then wraps the handler in ``ts.torch_handler.request_envelope.kserve`` or
``.kservev2``, which decode the body before the handler runs and wrap its outputs:

- ``kserve`` hands over the first request's ``instances`` (``None`` when absent) and
  answers ``{"predictions": <the handler's list>}``: one prediction per instance.
- ``kservev2`` hands over the first request's ``inputs`` (each tensor's ``data``
  reshaped to its ``shape`` by numpy) and answers one output per input tensor, named
  after it, flattened to one dimension, its datatype taken from the numpy dtype.

Both read only the first request of a batch and return one answer, so a batch of more
than one request gets TorchServe's 503 "number of batch response mismatched" for every
request in it: under an envelope the model must run with ``batchSize: 1``.

Errors: whatever the handler returns is wrapped as predictions or outputs, so a refusal is
raised as ``PredictionException`` (TorchServe answers ``{"code", "type":
"InternalServerException", "message"}`` with that status). TorchServe's frontend rewrites
a raised 413 to 507 (RestJob.sendError), so a request over the row limit gets 400 here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from handlers.contract.instances import rows_from_instances
from handlers.contract.responses import Responder
from handlers.contract.v2 import parse_v2
from handlers.contract.validation import Parsed, RequestError, Schema, bad

ENV = "TS_SERVICE_ENVELOPE"
KSERVE_V1 = "kserve"
KSERVE_V2 = "kservev2"
SUPPORTED = (KSERVE_V1, KSERVE_V2)


def service_envelope(environ: dict[str, str] | None = None) -> str | None:
    """The envelope TorchServe wraps this handler in (``None``: none), from the variable
    KServe's runtime sets; any other envelope is refused, since its answers would be 5xx."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in SUPPORTED:
        raise ValueError(
            f"{ENV}={value!r}: this handler answers under no envelope or under KServe's "
            f"{' / '.join(SUPPORTED)}; unset it or pick one of those"
        )
    return value


def parse_enveloped(data: Any, envelope: str, schema: Schema) -> Parsed:
    """What the envelope handed over (already decoded JSON) to rows, or a RequestError."""
    if envelope == KSERVE_V1:
        if data is None:
            raise bad(
                "missing_field",
                "body: no 'instances' field; this model serves KServe's v1 protocol "
                '({"instances": [...]}, rows or named features)',
            )
        return Parsed(rows_from_instances(data, schema, suspect=True))
    return parse_v2({"inputs": data}, schema, suspect=True)


def enveloped_error(error: RequestError) -> RequestError:
    """The error as sent under an envelope: the same type and message, 400 for a 413 (which
    TorchServe would turn into a 507, a server error)."""
    if error.status == 413:
        return RequestError(400, error.type, error.message)
    return error


def enveloped_output(envelope: str, probabilities: torch.Tensor, responder: Responder) -> list[Any]:
    """The handler's outputs for one request, in the form the envelope wraps.

    v1: one prediction object per instance, as in this server's own answer. v2: one output
    for the one input tensor, the probabilities [rows, classes] as float32 (the envelope
    flattens it, row after row, and labels it FP32).
    """
    if envelope == KSERVE_V1:
        return responder.predictions(probabilities)
    return [np.ascontiguousarray(probabilities.numpy(), dtype=np.float32)]


def enveloped_explanations(envelope: str, body: dict[str, Any], feature_names: Sequence[str]) -> list[Any]:
    """The explanation answer in the form the envelope wraps. v1 (which answers
    ``{"explanations": [...]}`` on its explain path): one object per row, as the
    /explanations endpoint gives it. v2: one output, the attributions [rows, features] as
    float32 in feature order (the envelope flattens it, as it does the probabilities)."""
    rows = body["explanations"]
    if envelope == KSERVE_V1:
        return list(rows)
    attributions = [[row["attributions"][name] for name in feature_names] for row in rows]
    return [np.asarray(attributions, dtype=np.float32)]


def forget_envelope_state(context: Any) -> None:
    """The v2 envelope keeps the request's id and input names on the worker's context until
    it formats an answer; a raised error skips that, and the next request without an id
    would be answered with this one's. Drop them before raising."""
    for name in ("input_request_id", "input_names"):
        if hasattr(context, name):
            delattr(context, name)
