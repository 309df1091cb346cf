"""Open Inference Protocol (KServe v2): one input tensor of shape [rows, features]."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from handlers.contract.validation import Parsed, Schema, _kind, bad, to_tensor

# the values a tensor of each datatype can hold, from numpy's types of the same names
_FLOATS: dict[str, type[np.floating[Any]]] = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_INTEGERS: dict[str, type[np.integer[Any]]] = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
             "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}  # fmt: skip
_RANGES: dict[str, tuple[float, float]] = {
    **{name: (float(np.finfo(t).min), float(np.finfo(t).max)) for name, t in _FLOATS.items()},
    **{name: (float(np.iinfo(t).min), float(np.iinfo(t).max)) for name, t in _INTEGERS.items()},
}
V2_DATATYPES = frozenset(_RANGES)


# the outputs of a v2 answer (handlers.contract.responses writes them), in their order
V2_OUTPUTS = ("probabilities", "label", "class_id")


@dataclass(frozen=True)
class V2Parsed(Parsed):
    """A v2 request, with what it asked of the answer: ``outputs`` the names it requested
    (``None``: all, in V2_OUTPUTS order) and ``binary`` the ones to send as raw bytes (the
    binary tensor data extension: ``parameters.binary_data`` per output, or the request's
    ``binary_data_output``)."""

    outputs: tuple[str, ...] | None = None
    binary: frozenset[str] = frozenset()


def parse_v2(doc: dict[str, Any], schema: Schema, suspect: bool = True) -> V2Parsed:
    tensor, datatype, n = input_tensor(doc, schema, ("name", "shape", "datatype", "data"))
    n_features = schema.n_features
    shape = tensor["shape"]
    data = tensor["data"]
    if not isinstance(data, list):
        raise bad("invalid_request", f"inputs[0].data: expected an array, got {_kind(data)}")
    if data and isinstance(data[0], list):
        rows = data  # nested [n][F], as some clients send it
    else:
        if len(data) != n * n_features:
            raise bad(
                "wrong_shape",
                f"inputs[0].data: shape {shape} needs {n * n_features} values, got {len(data)}",
            )
        rows = [data[i * n_features : (i + 1) * n_features] for i in range(n)]
    if len(rows) != n:
        raise bad("wrong_shape", f"inputs[0].data: shape {shape} needs {n} rows, got {len(rows)}")
    def where(i: int, j: int) -> str:
        return f"inputs[0].data[{i * n_features + j}] (row {i}, {schema.feature_names[j]})"

    x = to_tensor(rows, schema, suspect, where, lambda i: f"inputs[0].data[{i}]")
    _check_range(x, datatype, where)
    if datatype.startswith(("INT", "UINT")) and not bool((x == x.round()).all()):
        raise bad("invalid_value", f"inputs[0].data: datatype {datatype} holds non-integer values")
    return v2_parsed(x, doc)


def input_tensor(doc: dict[str, Any], schema: Schema, required: tuple[str, ...]) -> tuple[dict[str, Any], str, int]:
    """The one input tensor's object, its datatype and its row count, once its fields, its
    datatype (numeric) and its shape ([rows, features], rows within the limit) are right:
    what the JSON form and the binary form (handlers.contract.v2_binary) share."""
    inputs = doc["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise bad("invalid_request", "inputs: expected a non-empty array of input tensors")
    if len(inputs) != 1:
        raise bad("invalid_request", f"inputs: expected exactly one input tensor, got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise bad("invalid_request", f"inputs[0]: expected an object, got {_kind(tensor)}")
    for key in required:
        if key not in tensor:
            raise bad("missing_field", f"inputs[0]: missing field {key!r}")
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:  # a list or object is unhashable
        raise bad(
            "invalid_request",
            f"inputs[0].datatype: {datatype!r} is not a numeric type; use FP32",
        )
    shape = tensor["shape"]
    n_features = schema.n_features
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise bad("wrong_shape", f"inputs[0].shape: expected [rows, {n_features}], got {shape!r}")
    if shape[1] != n_features:
        raise bad("wrong_shape", f"inputs[0].shape: expected {n_features} features, got {shape[1]}")
    schema.check_rows(shape[0], "inputs[0]")
    return tensor, datatype, shape[0]


def v2_parsed(rows: torch.Tensor, doc: dict[str, Any]) -> V2Parsed:
    """The parsed request with its id and what it asked of the answer."""
    request_id = doc.get("id")
    outputs, binary = requested_outputs(doc)
    rid = str(request_id) if request_id is not None else None
    return V2Parsed(rows, "v2", rid, doc, outputs=outputs, binary=binary)


def requested_outputs(doc: dict[str, Any]) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    """The outputs a request names (``None``: all) and those it wants as binary data.

    The request's ``parameters.binary_data_output`` sets the default for every output (what
    tritonclient sends when it names none); an output's own ``parameters.binary_data``
    overrides it. A name this model does not answer is the client's mistake: a 400 naming
    the outputs there are, not an answer without what it asked for."""
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise bad("invalid_request", f"parameters: expected an object, got {_kind(parameters)}")
    default = _flag((parameters or {}).get("binary_data_output", False), "parameters.binary_data_output")
    requested = doc.get("outputs")
    if requested is None:
        return None, frozenset(V2_OUTPUTS) if default else frozenset()
    if not isinstance(requested, list):
        raise bad("invalid_request", f"outputs: expected an array of requested outputs, got {_kind(requested)}")
    names: list[str] = []
    binary: set[str] = set()
    for i, output in enumerate(requested):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str) or name not in V2_OUTPUTS:
            raise bad(
                "unknown_output",
                f"outputs[{i}].name: {name!r} is not an output of this model; it answers {', '.join(V2_OUTPUTS)}",
            )
        if name in names:
            raise bad("invalid_request", f"outputs[{i}].name: {name!r} is requested twice")
        options = output.get("parameters") or {}
        if not isinstance(options, dict):
            raise bad("invalid_request", f"outputs[{i}].parameters: expected an object, got {_kind(options)}")
        names.append(name)
        if _flag(options.get("binary_data", default), f"outputs[{i}].parameters.binary_data"):
            binary.add(name)
    return tuple(names), frozenset(binary)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise bad("invalid_request", f"{where}: expected true or false, got {_kind(value)}")
    return value


def _check_range(x: torch.Tensor, datatype: str, where: Callable[[int, int], str]) -> None:
    """Values the datatype cannot hold (INT8 holding 1e30) are a client's mistake, not data."""
    low, high = _RANGES[datatype]
    values = x.double()
    outside = (values < low) | (values > high)
    if bool(outside.any()):
        i, j = outside.nonzero()[0].tolist()
        value = values[i, j].item()
        raise bad("invalid_value", f"{where(i, j)}: {value:g} is outside the {datatype} range [{low:g}, {high:g}]")
