"""The Open Inference Protocol's binary tensor data extension (Triton's and KServe's), both ways.

A request with an ``Inference-Header-Content-Length`` header has a body of two parts: a JSON
header of that many bytes (the v2 request, each binary input with
``parameters.binary_data_size`` in place of ``data``), then each binary input's raw bytes, in
input order: little-endian, row major, no padding. That is what ``tritonclient.http`` sends
for ``InferInput.set_data_from_numpy(..., binary_data=True)``. The rows go through the same
checks as the JSON form's (``handlers.contract.v2``, ``validation``): the same shape rules,
the same refusal of NaN, infinities and values far outside the training range, named by row
and feature, so either form gets the same answer or the same 4xx for the same rows.

An answer carries outputs as binary when the request asks (``parameters.binary_data`` per
requested output, or ``binary_data_output`` on the request, which tritonclient sets when it
names no outputs): the body is the JSON answer, each binary output with
``parameters.binary_data_size`` and no ``data``, then those outputs' bytes in output order;
the ``Inference-Header-Content-Length`` response header says where the JSON ends. BYTES
outputs (the labels) are each a 4-byte little-endian length, then the UTF-8 text.

Encoded with numpy, not tritonclient: its utilities pull gevent, aiohttp, python-rapidjson and
ml_dtypes (~50 MB) into the serving image for a ``frombuffer`` and a ``tobytes``; the tests
check both directions against the real tritonclient.

Errors here add ``error`` to the usual body: tritonclient reads only that key of a failed
answer (its message is otherwise "an exception occurred in the client while decoding").
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np
import orjson
import torch

from handlers.contract.v2 import V2Parsed, input_tensor, parse_v2, v2_parsed
from handlers.contract.validation import RequestError, Schema, _checked, _kind

HEADER = "Inference-Header-Content-Length"
BINARY = "application/octet-stream"
# the float datatypes binary rows may come in (the model's FP32, and numpy's default float);
# integer bytes for continuous features are a client's dtype slip more often than data
_ROW_TYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_OUTPUT_TYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}
_DIGITS = re.compile(r"[0-9]{1,12}")


class BinaryRequestError(RequestError):
    """A refused binary-form request: the service's error body plus Triton's ``error`` key."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "error": self.message}


def refused(type_: str, message: str, status: int = 400) -> BinaryRequestError:
    return BinaryRequestError(status, type_, message)


def parse_binary(body: Any, header_length: str, schema: Schema) -> V2Parsed:
    """A binary-form v2 request to the validated rows, or a BinaryRequestError (a 4xx)."""
    try:
        return _parse_binary(body, header_length, schema)
    except BinaryRequestError:
        raise
    except RequestError as exc:  # the shared checks' errors, in this form's body
        raise refused(exc.type, exc.message, exc.status) from None


def _parse_binary(body: Any, header_length: str, schema: Schema) -> V2Parsed:
    raw = body if isinstance(body, (bytes, bytearray, memoryview)) else None
    if raw is None:  # TorchServe decoded it (Content-Type: application/json, nothing after the JSON)
        if not isinstance(body, (dict, str)):
            raise refused("invalid_request", f"body: expected raw bytes, got {_kind(body)}")
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        header_length = str(len(raw))
    raw = memoryview(raw)
    size = _header_size(header_length, len(raw))
    try:
        doc = orjson.loads(raw[:size])
    except orjson.JSONDecodeError as exc:
        where = f"the JSON header (the body's first {size} bytes, {HEADER})"
        raise refused("invalid_json", f"{where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        where = f"the JSON header (the body's first {size} bytes)"
        raise refused("missing_field", f"{where}: expected an object with 'inputs', got {_kind(doc)}")
    tensors = doc["inputs"]
    sizes = [_binary_size(t, i) for i, t in enumerate(tensors)] if isinstance(tensors, list) else []
    given = sum(s for s in sizes if s is not None)
    if given != len(raw) - size:
        raise refused(
            "wrong_size",
            f"body: the inputs' parameters.binary_data_size add up to {given} bytes, but the body holds "
            f"{len(raw) - size} after its {size}-byte JSON header ({HEADER}); they must agree",
        )
    if not sizes or sizes[0] is None:  # the one input sent as JSON data: the JSON form's parser
        return parse_v2(doc, schema, suspect=True)
    tensor, datatype, n = input_tensor(doc, schema, ("name", "shape", "datatype"))
    return v2_parsed(_rows(raw[size : size + given], datatype, n, sizes[0], schema), doc)


def _header_size(value: str, body_size: int) -> int:
    """The JSON header's length from the request header: a byte count within the body."""
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise refused("invalid_header", f"{HEADER}: {value[:40]!r} is not a byte count; expected a whole number")
    size = int(text)
    if size == 0:
        raise refused("invalid_header", f"{HEADER}: 0; the body must start with a JSON header of that many bytes")
    if size > body_size:
        raise refused("invalid_header", f"{HEADER}: {size} bytes of JSON header, but the body has only {body_size}")
    return size


def _binary_size(tensor: Any, i: int) -> int | None:
    """An input's ``parameters.binary_data_size`` (``None``: it came as JSON data)."""
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    value = parameters["binary_data_size"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise refused(
            "invalid_request", f"inputs[{i}].parameters.binary_data_size: expected a byte count, got {value!r}"
        )
    return value


def _rows(data: memoryview, datatype: str, n: int, size: int, schema: Schema) -> torch.Tensor:
    """The input's bytes as float32 [n, F], after the same value checks as JSON rows."""
    dtype = _ROW_TYPES.get(datatype)
    if dtype is None:
        raise refused(
            "invalid_request",
            f"inputs[0].datatype: {datatype} is not accepted as binary data; this model takes "
            f"FP32 [rows, {schema.n_features}] ({', '.join(_ROW_TYPES)} accepted)",
        )
    f = schema.n_features
    if size != n * f * dtype.itemsize:
        raise refused(
            "wrong_size",
            f"inputs[0].parameters.binary_data_size: {size} bytes, but shape [{n}, {f}] of {datatype} "
            f"is {n * f * dtype.itemsize} bytes ({dtype.itemsize} per value)",
        )
    values = np.frombuffer(data, dtype=dtype).reshape(n, f)

    def where(i: int, j: int) -> str:
        return f"inputs[0] binary data, value {i * f + j} (row {i}, {schema.feature_names[j]})"

    return _checked(values, schema, where)


def tensor_bytes(data: Any, datatype: str) -> bytes:
    """An output's data in the extension's binary form: numbers little-endian, BYTES each a
    4-byte little-endian length and its UTF-8 text."""
    if datatype == "BYTES":
        encoded = [str(item).encode() for item in data]
        return b"".join([struct.pack("<I", len(text)) + text for text in encoded])
    return bytes(np.ascontiguousarray(data, dtype=_OUTPUT_TYPES[datatype]).data)
